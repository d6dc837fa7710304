"""The package's layers import only downward (docs/concepts.md, "How the code is layered").

core imports nothing else of gomaster; backends import core and their own package; the runtime
imports core, itself and the backends' protocol (``gomaster.backends`` and its ``base``), never
a concrete backend; ``gomaster.testing`` imports nothing of gomaster. The command line
(``gomaster.cli``) and the public re-exports (``gomaster``, ``gomaster.metrics``) sit on top and
may use everything. Every import counts, including those made inside functions or only for
type checking.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gomaster"
#: layer -> (packages whose modules it may import, single modules it may import besides). The
#: runtime knows of the backends only their protocol and ``connect``, never a backend itself.
ALLOWED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gomaster.core": (("gomaster.core",), ()),
    "gomaster.backends": (("gomaster.core", "gomaster.backends"), ()),
    "gomaster.runtime": (
        ("gomaster.core", "gomaster.runtime"),
        ("gomaster.backends", "gomaster.backends.base"),
    ),
    "gomaster.testing": ((), ()),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every gomaster module ``path`` imports, by its full name."""
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            # ``from gomaster import testing`` imports the module gomaster.testing.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    known = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in known and name != _module_name(path)}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(f"{prefix}.")


def _layer(module: str) -> str | None:
    return next((layer for layer in ALLOWED if _within(module, layer)), None)


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_imports_point_down(path: Path) -> None:
    layer = _layer(_module_name(path))
    if layer is None:
        return  # the top: the command line and the public re-exports
    packages, modules = ALLOWED[layer]
    wrong = sorted(
        name
        for name in _imports(path)
        if name not in modules and not any(_within(name, package) for package in packages)
    )
    assert not wrong, f"{_module_name(path)} ({layer}) imports {wrong}: only {[*packages, *modules]} allowed"


def test_the_check_sees_every_layer() -> None:
    """A layer that lost its modules (a rename) would pass the check above without being checked."""
    layers = {_layer(_module_name(path)) for path in MODULES}
    assert set(ALLOWED) <= layers, sorted(set(ALLOWED) - layers)
