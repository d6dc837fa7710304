"""The wheel a user installs works on its own: built from the sdist, installed into a fresh venv.

``python -m build`` builds the sdist and then the wheel from the unpacked sdist, so a file missing
from either shows up here. The wheel goes into a new virtual environment with every backend
extra (dependencies from PyPI; pip's cache keeps reruns fast), and its ``gomaster demo`` must
elect, fail over and never let two masters work at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import gomaster

ROOT = Path(__file__).resolve().parent.parent
#: Building and installing use pip's cache; a cold cache on a slow link may take a while.
STEP_TIMEOUT = 240
DEMO_SECONDS = 5

pytestmark = pytest.mark.timeout(3 * STEP_TIMEOUT)

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, gomaster
for module in pkgutil.walk_packages(gomaster.__path__, "gomaster."):
    importlib.import_module(module.name)
"""


def _run(command: list[str], *, cwd: Path, timeout: float = STEP_TIMEOUT) -> str:
    """Run ``command``; on failure, fail the test with everything it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOMASTER_", "PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {done.returncode}:\n{output}")
    return output


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel, built the way ``make dist`` builds them."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=ROOT)
    (sdist,) = out.glob("gomaster-*.tar.gz")
    (wheel,) = out.glob("gomaster-*.whl")
    return sdist, wheel


def test_wheel_carries_version_metadata_and_type_information(built: tuple[Path, Path]) -> None:
    sdist, wheel = built
    version = gomaster.__version__
    assert wheel.name == f"gomaster-{version}-py3-none-any.whl", wheel.name
    assert sdist.name == f"gomaster-{version}.tar.gz", sdist.name
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"gomaster-{version}.dist-info/METADATA").decode()
    assert "gomaster/py.typed" in names, "py.typed is missing from the wheel"
    assert f"Version: {version}\n" in metadata
    assert "Requires-Python: >=3.11\n" in metadata
    assert "Classifier: Typing :: Typed\n" in metadata
    for extra in ("mysql", "mongodb", "postgresql", "redis", "all"):
        assert f"Provides-Extra: {extra}\n" in metadata, f"extra {extra} is not declared"


def test_wheel_installs_into_a_fresh_venv_and_its_demo_never_overlaps(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    _, wheel = built
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"gomaster[all] @ {wheel.as_uri()}",
        ],
        cwd=tmp_path,
    )

    where = _run(
        [str(python), "-c", "import gomaster, pathlib; print(pathlib.Path(gomaster.__file__).parent)"],
        cwd=tmp_path,
    ).strip()
    installed = Path(where)
    assert installed.is_relative_to(venv), f"gomaster imported from {installed}, not the new venv"
    assert (installed / "py.typed").is_file(), "py.typed was not installed"
    _run([str(python), "-m", "pip", "check"], cwd=tmp_path)
    # Every backend module imports its driver at import time, so this proves [all] pulled them in.
    _run([str(python), "-c", IMPORT_EVERY_MODULE], cwd=tmp_path)

    demo = _run(
        [str(venv / "bin" / "gomaster"), "demo", "--duration", str(DEMO_SECONDS)],
        cwd=tmp_path,
        timeout=DEMO_SECONDS + 60,
    )
    assert "overlapping tenures seen: 0" in demo, demo
    assert "is master (token 1)" in demo, demo
