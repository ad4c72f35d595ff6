"""Methods and datasets found through entry points (groups ``harness.methods``, ``harness.datasets``).

A third-party package registers its own classes in its ``pyproject.toml``::

    [project.entry-points."harness.methods"]
    mymethod = "mypkg.module:MyMethod"

and they appear in ``harness list`` and in benchmark YAMLs without touching the harness.
Loading a class checks it against the contract (:func:`harness.api.check_method`,
:func:`harness.api.check_dataset`): a plugin that breaks it fails here, naming what it lacks.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from harness.errors import UserError

GROUPS = {"method": "harness.methods", "dataset": "harness.datasets"}


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUPS[kind])}


def names(kind: str) -> list[str]:
    """Registered names of a kind (``method`` or ``dataset``), sorted."""
    return sorted(_entry_points(kind))


def load(kind: str, name: str) -> Any:
    """The class registered as ``name``; a clear error listing what exists otherwise."""
    eps = _entry_points(kind)
    if name not in eps:
        raise UserError(
            f"unknown {kind} {name!r}; registered {kind}s: {', '.join(sorted(eps)) or 'none'} "
            f"(see `harness list`; plugins register under the entry-point group {GROUPS[kind]!r})"
        )
    try:
        obj = eps[name].load()
    except Exception as exc:
        raise UserError(f"{kind} {name!r} ({eps[name].value}) fails to import: "
                        f"{type(exc).__name__}: {exc}") from None
    check(kind, obj, name)
    return obj


def check(kind: str, obj: Any, name: str = "") -> None:
    """The contract's check for a ``method`` or ``dataset`` class (a UserError if broken)."""
    from harness import api

    (api.check_method if kind == "method" else api.check_dataset)(obj, name)


def describe(kind: str) -> list[tuple[str, str, str, str]]:
    """(name, import path, first docstring line, what breaks the contract or "") per entry."""
    rows = []
    for name, ep in sorted(_entry_points(kind).items()):
        problem = ""
        try:
            obj = load(kind, name)
            doc = (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""
        except UserError as exc:  # a broken plugin must not hide the others
            doc, problem = "", str(exc)
        rows.append((name, ep.value, doc, problem))
    return rows
