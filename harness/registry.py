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


def describe(kind: str, check_contract: bool = True) -> list[tuple[str, str, str, str]]:
    """(name, import path, first docstring line, what breaks the contract or "") per entry.

    Without ``check_contract`` nothing is imported: the docstring is read from the class's
    source (``ast``), so listing costs no torch or Lightning import (seconds); a plugin
    whose source cannot be read is imported as before."""
    rows = []
    for name, ep in sorted(_entry_points(kind).items()):
        problem = ""
        doc = None if check_contract else _static_doc(ep.value)
        if doc is None:
            try:
                obj = load(kind, name)
                doc = (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""
            except UserError as exc:  # a broken plugin must not hide the others
                doc, problem = "", str(exc)
        rows.append((name, ep.value, doc, problem))
    return rows


def _static_doc(target: str) -> str | None:
    """The first docstring line of ``module:Class`` read from the module's source without
    importing it (its parent packages are imported to find it); None where the source or
    the class cannot be found."""
    import ast
    import importlib.util

    module, _, attr = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        with open(spec.origin, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), spec.origin)
    except (ImportError, OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == attr:
            doc = ast.get_docstring(node) or ""
            return doc.strip().splitlines()[0] if doc.strip() else ""
    return None
