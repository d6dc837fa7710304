"""The wheel a user installs works on its own: built from the sdist, installed into a fresh venv.

``python -m build`` builds the sdist and then the wheel from the unpacked sdist, so a file missing
from either shows up here. The metadata is what PyPI shows: project links, keywords, a
description written for pip users, only user-facing extras, and classifiers that claim exactly
the Pythons the test run covers. The sdist carries the library, not the repository's tests. The
wheel goes into a new virtual environment with every backend extra (dependencies from PyPI;
pip's cache keeps reruns fast), and its ``gomaster demo`` must elect, fail over and never let
two masters work at once; without extras it must import and name the extra a backend needs.
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import gomaster

ROOT = Path(__file__).resolve().parent.parent
#: Building and installing use pip's cache; a cold cache on a slow link may take a while.
STEP_TIMEOUT = 240
DEMO_SECONDS = 5

pytestmark = pytest.mark.timeout(3 * STEP_TIMEOUT)

#: The extras a user may ask for; development tools live in dependency groups, never here.
PUBLIC_EXTRAS = {"mysql", "mongodb", "postgresql", "redis", "metrics", "all"}
PROJECT_LINKS = {"Homepage", "Documentation", "Source", "Changelog", "Issues"}
#: The only top-level entries of the sdist besides the package (PKG-INFO and setup.cfg are build's).
SDIST_FILES = {
    "CHANGELOG.md",
    "LICENSE",
    "MANIFEST.in",
    "PKG-INFO",
    "PYPI.md",
    "README.md",
    "pyproject.toml",
    "setup.cfg",
}
BENCH_IMPORT = re.compile(r"^\s*(?:from|import)\s+bench\b", re.MULTILINE)
#: A Markdown link or image whose target is not an absolute URL: PyPI cannot resolve those.
RELATIVE_LINK = re.compile(r"\]\((?!https?://)[^)]*\)")
PYTHON_CLASSIFIER = re.compile(r"^Programming Language :: Python :: (3\.\d+)$")

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


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"gomaster-{gomaster.__version__}.dist-info/METADATA").decode()
    return email.message_from_string(text)


def _tested_pythons() -> set[str]:
    """This interpreter's version (the whole suite) and the Makefile's OTHER_PYTHONS (``make pythons``)."""
    makefile = (ROOT / "Makefile").read_text()
    found = re.search(r"^OTHER_PYTHONS := (.+)$", makefile, re.MULTILINE)
    assert found is not None, "the Makefile no longer sets OTHER_PYTHONS"
    return {f"{sys.version_info.major}.{sys.version_info.minor}", *found.group(1).split()}


def test_wheel_carries_version_metadata_and_type_information(built: tuple[Path, Path]) -> None:
    sdist, wheel = built
    version = gomaster.__version__
    assert wheel.name == f"gomaster-{version}-py3-none-any.whl", wheel.name
    assert sdist.name == f"gomaster-{version}.tar.gz", sdist.name
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    metadata = _metadata(wheel)
    assert "gomaster/py.typed" in names, "py.typed is missing from the wheel"
    assert metadata["Version"] == version
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])


def test_extras_are_the_backends_and_metrics_only(built: tuple[Path, Path]) -> None:
    extras = set(_metadata(built[1]).get_all("Provides-Extra", []))
    assert extras == PUBLIC_EXTRAS, (
        f"extras {sorted(extras)}: expected exactly {sorted(PUBLIC_EXTRAS)} "
        "(development tools belong in [dependency-groups])"
    )


def test_project_links_and_keywords_are_declared(built: tuple[Path, Path]) -> None:
    metadata = _metadata(built[1])
    links = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL", []))
    assert set(links) == PROJECT_LINKS, f"project links {sorted(links)}, expected {sorted(PROJECT_LINKS)}"
    for label, url in links.items():
        assert url.startswith("https://"), f"{label} is not an https URL: {url}"
    keywords = {word.strip() for word in (metadata["Keywords"] or "").split(",")}
    assert {"leader election", "lease", "fencing token"} <= keywords, f"keywords: {sorted(keywords)}"


def test_classifiers_claim_exactly_the_pythons_the_tests_run_on(built: tuple[Path, Path]) -> None:
    metadata = _metadata(built[1])
    claimed = {
        found.group(1)
        for classifier in metadata.get_all("Classifier", [])
        if (found := PYTHON_CLASSIFIER.match(classifier))
    }
    tested = _tested_pythons()
    assert claimed == tested, (
        f"classifiers claim Python {sorted(claimed)} but the suite runs on {sorted(tested)} "
        "(this interpreter and the Makefile's OTHER_PYTHONS)"
    )
    oldest = min(tested, key=lambda version: tuple(map(int, version.split("."))))
    assert metadata["Requires-Python"] == f">={oldest}", metadata["Requires-Python"]


def test_pypi_description_is_written_for_pip_users(built: tuple[Path, Path]) -> None:
    metadata = _metadata(built[1])
    description = str(metadata.get_payload())
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert description.strip() == (ROOT / "PYPI.md").read_text().strip(), "the description is not PYPI.md"
    assert "pip install gomaster" in description
    commands = [line for line in description.splitlines() if line.lstrip().startswith("make ")]
    assert not commands, f"the PyPI page shows repository commands: {commands}"
    relative = RELATIVE_LINK.findall(description)
    assert not relative, f"links PyPI cannot resolve: {relative}"


def test_sdist_ships_the_library_and_no_tests_that_need_bench(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    top = f"gomaster-{gomaster.__version__}/"
    with tarfile.open(sdist) as archive:
        members = [member for member in archive.getmembers() if member.isfile()]
        sources = {
            member.name: archive.extractfile(member).read().decode()  # type: ignore[union-attr]
            for member in members
            if member.name.endswith(".py")
        }
    names = {member.name.removeprefix(top) for member in members}
    strays = {
        name
        for name in names
        if not name.startswith(("gomaster/", "gomaster.egg-info/")) and name not in SDIST_FILES
    }
    assert not strays, f"the sdist ships files outside the package: {sorted(strays)}"
    importers = sorted(name for name, text in sources.items() if BENCH_IMPORT.search(text))
    assert not importers, f"the sdist ships files that import bench/, which it does not ship: {importers}"
    assert f"{top}gomaster/py.typed" in {member.name for member in members}


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


def test_wheel_without_extras_imports_and_names_the_missing_driver(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """``pip install gomaster`` alone: the package imports, and a backend names the extra it needs."""
    _, wheel = built
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], cwd=tmp_path)
    probe = (
        "import gomaster\n"
        "try:\n"
        "    gomaster.connect('mysql://app@db/app')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    said = _run([str(python), "-c", probe], cwd=tmp_path)
    assert "pip install 'gomaster[mysql]'" in said, said
