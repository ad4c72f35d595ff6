"""Caching for every family: one hash of arguments, one raw-file fingerprint, atomic publishing.

* :func:`stable_hash`: the key of anything JSON-able (run keys, cache keys), dict-order free;
* :func:`fingerprint`: a cheap hash of raw data files (name, size, first and last 4 MiB);
* :func:`cached_dir`: a directory written once into a temporary sibling and published with
  one rename (a reader never sees a half-written one; racing writers keep the first);
* :func:`atomic_file`: the same for one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.errors import DataFormatError

FINGERPRINT_CHUNK = 4 << 20
COMPLETE = "COMPLETE"


def stable_hash(obj: Any, n: int = 16) -> str:
    """First ``n`` hex chars of a sha256 of ``obj`` as sorted-key JSON (``str`` for the rest)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def fingerprint(paths: Sequence[str | Path]) -> str:
    """First 16 hex chars of a sha256 over, per file sorted by name: the name, the size, and
    the first and last 4 MiB (the whole file if it is at most 8 MiB).

    Not a full-content hash: it is cheap on multi-GB files and catches re-downloads, other
    versions and truncation, but not an edit in the middle of a large file. The directory is
    not included, so moved copies keep their fingerprint.
    """
    h = hashlib.sha256()
    for p in sorted((Path(p) for p in paths), key=lambda p: (p.name, str(p))):
        try:
            size = p.stat().st_size
            h.update(f"{p.name}\0{size}\0".encode())
            with open(p, "rb") as fh:
                if size <= 2 * FINGERPRINT_CHUNK:
                    h.update(fh.read())
                else:
                    h.update(fh.read(FINGERPRINT_CHUNK))
                    fh.seek(size - FINGERPRINT_CHUNK)
                    h.update(fh.read(FINGERPRINT_CHUNK))
        except OSError as exc:
            raise DataFormatError(
                f"Could not read {p} to fingerprint it: {exc}. Check that the data files "
                f"exist and are readable."
            ) from None
    return h.hexdigest()[:16]


def publish(tmp: Path, out: Path) -> None:
    """Move the finished directory ``tmp`` to ``out`` in one rename; if another process (a
    DDP rank, a parallel job) published an identical one first, keep theirs. A published
    directory holds its ``COMPLETE`` marker, so it is never removed here."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not (out / COMPLETE).exists():
        shutil.rmtree(out, ignore_errors=True)  # a leftover from an interrupted older write
    try:
        os.replace(tmp, out)
    except OSError:  # lost the race to an identical copy
        shutil.rmtree(tmp, ignore_errors=True)


def is_complete(out: Path) -> bool:
    """Whether ``out`` is a published cache directory."""
    return (out / COMPLETE).exists()


def cached_dir(out: Path, write: Callable[[Path], object]) -> Path:
    """``out``, written by ``write(tmp)`` into a temporary sibling and published atomically
    (:func:`publish`) unless a complete copy is already there."""
    out = Path(out)
    if not is_complete(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{os.getpid()}-"))
        try:
            write(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (tmp / COMPLETE).touch()
        publish(tmp, out)
    return out


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename,
    on failure it is removed (``path`` keeps its old content, or stays absent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
