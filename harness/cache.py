"""Caching for every family: one hash of arguments, one raw-file fingerprint, atomic publishing.

* :func:`stable_hash`: the key of anything JSON-able (run keys, cache keys), dict-order free;
* :func:`fingerprint`: a cheap hash of raw data files (name, size, first and last 4 MiB);
* :func:`cached_dir`: a directory written once into a temporary sibling and published with
  one rename (a reader never sees a half-written one; racing writers keep the first);
* :func:`atomic_file`: the same for one file;
* :func:`cached_torch`: a payload of plain tensors, numbers, strings, lists and dicts saved
  with ``torch.save`` and loaded with ``weights_only=True``; a file that does not load is
  set aside (:func:`set_aside`, ``<name>.corrupt``) and rebuilt.

Temporary siblings are named ``.tmp-<host>-<pid>-*`` (directories) and ``.<name>.<host>-<pid>.tmp``
(files); a failed write removes its own, and the next write beside them removes those a killed
process of this host left (:func:`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
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


def _host() -> str:
    """This host's name as ``[A-Za-z0-9_]+``, for temporary names."""
    return re.sub(r"\W", "_", socket.gethostname(), flags=re.ASCII) or "host"


def _tag() -> str:
    """``<host>-<pid>``: who writes a temporary sibling."""
    return f"{_host()}-{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


# ``.tmp-[<host>-]<pid>-<random>`` (cached_dir) and ``.<name>.[<host>-]<pid>.tmp`` (atomic_file)
_STALE_DIR = re.compile(r"^\.tmp-(?:(?P<host>\w+)-)?(?P<pid>\d+)-\w+$", re.ASCII)
_STALE_FILE = re.compile(r"^\..+\.(?:(?P<host>\w+)-)?(?P<pid>\d+)\.tmp$", re.ASCII)
_LEGACY_AGE = 3600.0  # seconds: a name without a host is removed only when this old


def _remove(path: Path) -> None:
    """Delete a file or a directory tree, read-only entries included; errors are ignored."""
    def retry(func: Callable[..., Any], name: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(name), stat.S_IRWXU)
            os.chmod(name, stat.S_IRWXU)
            func(name)
        except OSError:
            pass

    if path.is_dir() and not path.is_symlink():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=retry)
        else:
            shutil.rmtree(path, onerror=retry)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def sweep_stale(parent: Path) -> list[Path]:
    """Remove the temporary siblings in ``parent`` (``.tmp-<host>-<pid>-*`` directories,
    ``.<name>.<host>-<pid>.tmp`` files) whose writer, a process of this host, is gone (a
    SIGKILL or an out-of-memory kill skips every clean-up). Names without a host (written
    before hosts were recorded) go when their process is gone and they are an hour old.
    Returns what was removed."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    host, now = _host(), time.time()
    for entry in parent.iterdir():
        m = _STALE_DIR.match(entry.name) or _STALE_FILE.match(entry.name)
        if m is None:
            continue
        who, pid = m.group("host"), int(m.group("pid"))
        if who is not None and who != host:
            continue  # another host's write in progress (a shared file system)
        if pid == os.getpid() or pid_alive(pid):
            continue
        if who is None:
            try:
                if now - entry.lstat().st_mtime < _LEGACY_AGE:
                    continue
            except OSError:
                continue
        _remove(entry)
        removed.append(entry)
    return removed


def publish(tmp: Path, out: Path) -> None:
    """Move the finished directory ``tmp`` to ``out`` in one rename; if another process (a
    DDP rank, a parallel job) published an identical one first, keep theirs. A published
    directory holds its ``COMPLETE`` marker, so it is never removed here. ``tmp`` is gone
    afterwards whatever happens; an ``out`` that is still not published then is an OSError."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() and not (out / COMPLETE).exists():
            _remove(out)  # a leftover from an interrupted older write
        try:
            os.replace(tmp, out)
        except OSError as exc:
            if not is_complete(out):  # not a lost race: the rename itself failed
                raise OSError(f"could not publish {tmp} as {out}: {exc}") from None
    finally:
        if tmp.exists():
            _remove(tmp)


def is_complete(out: Path) -> bool:
    """Whether ``out`` is a published cache directory."""
    return (out / COMPLETE).exists()


def cached_dir(out: Path, write: Callable[[Path], object]) -> Path:
    """``out``, written by ``write(tmp)`` into a temporary sibling and published atomically
    (:func:`publish`) unless a complete copy is already there. The temporary directory is
    removed on every exit (an exception, SIGINT / SIGTERM included), and stale ones a killed
    process left beside ``out`` are removed first (:func:`sweep_stale`)."""
    out = Path(out)
    if not is_complete(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(out.parent)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{_tag()}-"))
        try:
            write(tmp)
            (tmp / COMPLETE).touch()
            publish(tmp, out)
        finally:
            if tmp.exists():
                _remove(tmp)
    return out


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename,
    on failure it is removed (``path`` keeps its old content, or stays absent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)
    tmp = path.with_name(f".{path.name}.{_tag()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def set_aside(path: str | Path, reason: str) -> Path:
    """Rename an unreadable cache file or directory to ``<name>.corrupt`` (replacing an older
    one) and print a one-line warning naming both; returns the new path. The caller rebuilds."""
    path = Path(path)
    dest = path.with_name(path.name + ".corrupt")
    if dest.exists() or dest.is_symlink():
        _remove(dest)
    try:
        os.replace(path, dest)
    except FileNotFoundError:  # another process (a DDP rank) set it aside first
        return dest
    reason = " ".join(str(reason).split())[:300]
    print(f"warning: cache {path} could not be read ({reason}); set aside as {dest} and rebuilt "
          "from the raw files", file=sys.stderr, flush=True)
    return dest


def load_torch(path: str | Path, check: Callable[[Any], object] | None = None) -> Any | None:
    """``torch.load(path, weights_only=True)`` (never unpickling code), or ``None`` when there
    is no such file or it does not load (truncated, not a torch file, a payload that needs
    other globals) or ``check(payload)`` raises or returns False: such a file is set aside."""
    import torch

    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if check is not None and check(payload) is False:
            raise ValueError("unexpected content")
    except Exception as exc:  # any failure to load means: rebuild it
        text = str(exc).strip().splitlines()
        set_aside(path, f"{type(exc).__name__}: {text[0] if text else ''}")
        return None
    return payload


def cached_torch(path: str | Path, build: Callable[[], Any],
                 check: Callable[[Any], object] | None = None) -> Any:
    """The payload cached at ``path`` (:func:`load_torch`), or ``build()`` saved there
    atomically. Payloads hold plain tensors, numbers, strings, lists, tuples and dicts only,
    so that they load with ``weights_only=True``."""
    import torch

    payload = load_torch(path, check)
    if payload is None:
        payload = build()
        with atomic_file(path) as tmp:
            torch.save(payload, tmp)
    return payload
