"""Griffe extension for the API page: private parameters stay out of documented signatures.

``Leadership`` carries the supervisor's shared-memory handle in a private dataclass field
(``_lease``): the supervisor passes it, user code never does. Griffe gives every dataclass field
an ``__init__`` parameter, so the rendered signature showed it. This drops, from every function
of the package (dataclass ``__init__``s included), each parameter whose name starts with an
underscore and that has a default; a required one stays, or the signature would lie.

It must run after griffe's ``dataclasses`` extension, which creates those ``__init__``s: list
``dataclasses`` before it in mkdocs.yml. Runtime behaviour is untouched.
"""

from __future__ import annotations

from typing import Any

import griffe


def _is_private_with_default(parameter: griffe.Parameter) -> bool:
    return parameter.name.startswith("_") and parameter.default is not None


def _hide(obj: griffe.Object, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    for member in obj.members.values():
        if member.is_alias:
            continue
        if isinstance(member, griffe.Function):
            for name in [p.name for p in member.parameters if _is_private_with_default(p)]:
                del member.parameters[name]
        elif isinstance(member, griffe.Class | griffe.Module):
            _hide(member, seen)


class HidePrivateParameters(griffe.Extension):
    """Remove private, defaulted parameters once the whole package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **_: Any) -> None:
        _hide(pkg, set())
