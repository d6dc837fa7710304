"""What a worker process loads when it starts: every crash restart or demotion pays for it."""

from __future__ import annotations

import json
import subprocess
import sys

import gomaster

#: The machinery a worker never runs; loading it cost a cold worker start over 100 ms of CPU.
SUPERVISOR_ONLY = (
    "gomaster.core.election",
    "gomaster.runtime.elector",
    "gomaster.runtime.supervisor",
    "gomaster.runtime.master",
    "gomaster.backends",
)


def _modules_after(statement: str) -> set[str]:
    probe = f"{statement}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    command = [sys.executable, "-c", probe]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(done.stdout))


def test_a_worker_and_the_demo_work_load_none_of_the_supervisor_machinery() -> None:
    loaded = _modules_after("import gomaster.runtime.worker, gomaster.demo")
    assert "gomaster.runtime.worker" in loaded
    assert not loaded & set(SUPERVISOR_ONLY), sorted(loaded & set(SUPERVISOR_ONLY))


def test_every_public_name_is_still_there_on_first_use() -> None:
    for name in gomaster.__all__:
        assert getattr(gomaster, name) is not None, name
    assert set(gomaster.__all__) <= set(dir(gomaster))
    loaded = _modules_after("import gomaster; gomaster.supervise")
    assert "gomaster.runtime.supervisor" in loaded
