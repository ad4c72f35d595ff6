"""Large text files read as blocks of whole lines, parsed on worker threads, in file order.

One reader for the large line-oriented files: the Amazon reviews (:mod:`amazon_readers`) and the
clinical CSV tables (:func:`harness.datasets.clinical_grid.map_csv`). A plain file's blocks are
read by the workers themselves (``os.pread``, so reading is parallel too); a gzip file is
decompressed on one thread (ISA-L, about twice zlib's speed, on a thread of its own; pyarrow's
zlib without ``isal``). At most ``2 workers + 1`` blocks are in flight (the consumer falls
behind now and then without idling the workers), so memory stays bounded
whatever the file's size, and the results come back in file order.
"""

from __future__ import annotations

import codecs
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")

_BOM = codecs.BOM_UTF8


def map_blocks(path: str | Path, fn: Callable[[bytes, int | None], T], *, gz: bool,
               block_bytes: int, workers: int, skip_header: bool = False,
               reuse_buffers: bool = False) -> Iterator[T]:
    """``fn(data, offset)`` for each block of whole lines of ``path``, computed on ``workers``
    threads and yielded in file order.

    A block is about ``block_bytes`` bytes and ends at a line end (the last block at the end of
    the file, with or without a final newline); a leading UTF-8 BOM and, with ``skip_header``,
    the first line are in no block. ``offset`` is the block's byte offset in a plain file, None
    in a gzip file (``gz``: decompressed on one thread). When reading the file fails (an I/O or
    decompression error), the blocks read before are still yielded, then the error is raised; an
    exception of ``fn`` (or of a worker's read) is raised when its block's turn comes. Close the
    generator (``contextlib.closing``) to stop early: the pending blocks are cancelled.

    ``reuse_buffers`` (plain files): each worker reads its blocks into one ``bytearray`` of its
    own, reused block after block (fresh memory for every block costs a page fault per 4 KiB),
    so ``fn`` must keep nothing that points into ``data`` (copies only).
    """
    size = max(1, int(block_bytes))
    workers = max(1, int(workers))
    fd = None if gz else os.open(path, os.O_RDONLY)

    local = threading.local()

    def read_range(r: tuple[int, int]) -> T:
        if not reuse_buffers:
            return fn(os.pread(fd, r[1] - r[0], r[0]), r[0])
        buf = getattr(local, "buf", None)
        n = r[1] - r[0]
        if buf is None:
            buf = local.buf = bytearray(n)
        elif len(buf) > n:
            del buf[n:]  # (shrinking keeps the allocation)
        elif len(buf) < n:
            buf.extend(bytes(n - len(buf)))
        got = os.preadv(fd, [buf], r[0])
        if got != n:  # the file shrank under us: what pread would have returned
            del buf[got:]
        return fn(buf, r[0])

    def decompressed(data: bytes) -> T:
        return fn(data, None)

    jobs: Generator = (_gz_blocks(path, size, skip_header) if gz
                       else _plain_ranges(path, size, skip_header))
    work: Callable = decompressed if gz else read_range
    pending: deque[Future] = deque()
    try:
        with ThreadPoolExecutor(workers) as ex:
            try:
                failed: Exception | None = None
                while True:
                    try:
                        job = next(jobs)
                    except StopIteration:
                        break
                    except Exception as exc:  # noqa: BLE001 - the blocks before the damage count
                        failed = exc
                        break
                    pending.append(ex.submit(work, job))
                    while len(pending) > 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
                if failed is not None:
                    raise failed
            finally:
                for f in pending:
                    f.cancel()
    finally:
        jobs.close()  # the file, and a gzip stream's thread
        if fd is not None:
            os.close(fd)


def _plain_ranges(path: str | Path, size: int, skip_header: bool) -> Iterator[tuple[int, int]]:
    """A plain file's byte ranges of about ``size`` bytes, each ending at a line end (after a
    UTF-8 BOM and, with ``skip_header``, the first line)."""
    total = os.path.getsize(path)
    with open(path, "rb") as fh:
        start = 3 if fh.read(3) == _BOM else 0
        if skip_header:
            fh.seek(start)
            fh.readline()
            start = fh.tell()
        while start < total:
            end = start + size
            if end < total:
                fh.seek(end - 1)
                fh.readline()
                end = fh.tell()
            else:
                end = total
            yield start, end
            start = end


def _gz_blocks(path: str | Path, size: int, skip_header: bool) -> Iterator[bytes]:
    """A gzip file's decompressed text in blocks of whole lines of about ``size`` bytes (as
    _plain_ranges), inflated by ISA-L on a thread of its own (pyarrow's zlib without isal)."""
    stream: BinaryIO
    try:
        from isal import igzip_threaded

        stream = igzip_threaded.open(path, "rb", threads=1)  # type: ignore[assignment]
    except ImportError:  # pragma: no cover - isal is a dependency
        import pyarrow as pa

        stream = pa.input_stream(str(path), compression="gzip")  # type: ignore[assignment]
    with stream:
        yield from _line_blocks(stream, size, skip_header)


def _line_blocks(stream: BinaryIO, size: int, skip_header: bool) -> Iterator[bytes]:
    rest = b""
    at_start = True  # a BOM may come
    in_header = skip_header
    while True:
        chunk = stream.read(size)
        buf = rest + chunk if rest else chunk
        rest = b""
        if at_start:
            if chunk and len(buf) < 3 and _BOM.startswith(buf):
                rest = buf
                continue
            if buf.startswith(_BOM):
                buf = buf[3:]
            at_start = False
        if in_header:
            cut = buf.find(b"\n") + 1
            if not cut:  # the header goes on: drop what there is of it
                if not chunk:
                    return
                continue
            buf = buf[cut:]
            in_header = False
        if not chunk:
            if buf:
                yield buf
            return
        cut = buf.rfind(b"\n") + 1
        if cut:
            yield buf[:cut]
            rest = buf[cut:]
        else:
            rest = buf
