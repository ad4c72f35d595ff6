"""Methods and datasets found through entry points (groups ``harness.methods``, ``harness.datasets``).

A third-party package registers its own classes in its ``pyproject.toml``::

    [project.entry-points."harness.methods"]
    mymethod = "mypkg.module:MyMethod"

and they appear in ``harness list`` and in benchmark YAMLs without touching the harness.
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
    return eps[name].load()


def describe(kind: str) -> list[tuple[str, str, str]]:
    """(name, import path, first docstring line) for every registered entry of a kind."""
    rows = []
    for name, ep in sorted(_entry_points(kind).items()):
        try:
            obj = ep.load()
            doc = (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""
        except Exception as exc:  # a broken plugin must not hide the others
            doc = f"(fails to import: {exc})"
        rows.append((name, ep.value, doc))
    return rows
