"""Image robustness data: readers of the public layouts, MiMu's text watermark, a decode cache and a
synthetic Waterbirds writer.

Readers (each returns a :class:`~harness.datasets.robust_common.RobustTable` of modality ``"image"``
whose ``Split.paths`` are absolute image paths and whose ``files`` are the metadata files read):

* :func:`read_waterbirds`: ``waterbird_complete95_forest2water2/metadata.csv`` (group_DRO's release);
* :func:`read_subpop_metadata`: SubpopBench's ``metadata_<name>.csv`` (``id, filename, split, y, a``);
* :func:`read_celeba`: CelebA's ``list_attr_celeba`` + ``list_eval_partition`` (txt or Kaggle csv);
* :func:`read_imagenet9`: the backgrounds challenge's IN-9 folders, with MiMu's class-specific text
  watermark as a second shortcut (stamped by the decoder from ``Split.marks``);
* :func:`read_fairface`: FairFace's ``fairface_label_train.csv`` / ``fairface_label_val.csv`` (gender x
  race, the multi-valued columns binarised as one value vs the rest).

Every problem with the files is a :class:`~harness.errors.DataFormatError` whose one-line message
names the file (and the column or line) and where the public copy lives. Every listed image is
checked to exist (one directory listing per folder, ``os.path.exists`` for names not listed), so a
partial download fails at read time, not in the middle of training.

:func:`decode_images` turns a split into a uint8 ``(N, R, R, 3)`` array cached as one ``.npy`` file
(memory-mapped), keyed by :func:`images_fingerprint` (relative paths and sizes, stat only), the
resolution and the marks. :func:`write_synthetic_waterbirds` writes a small set in the real Waterbirds
layout with a core signal (the bird's shape) and two shortcuts of different strength (``place``:
the background's colour and texture family; ``mark``: a small bright square).
"""

from __future__ import annotations

import colorsys
import csv
import difflib
import functools
import hashlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from harness.cache import atomic_file, set_aside, stable_hash
from harness.datasets.robust_common import RobustTable, Split
from harness.errors import DataFormatError, UserError

__all__ = [
    "IMAGE_EXTENSIONS",
    "WATERBIRDS_COLUMNS",
    "WATERBIRDS_DIR",
    "WATERMARK_WORDS",
    "SyntheticImages",
    "decode_image",
    "decode_images",
    "images_fingerprint",
    "missing_files",
    "read_celeba",
    "read_fairface",
    "read_imagenet9",
    "read_subpop_metadata",
    "read_waterbirds",
    "stamp_seed",
    "stamp_text",
    "watermark_text",
    "write_synthetic_waterbirds",
]

PathLike = str | os.PathLike[str]

WATERBIRDS_SRC = "https://github.com/kohpangwei/group_DRO"
SUBPOP_SRC = "https://github.com/YyzHarry/SubpopBench"
CELEBA_SRC = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html or Kaggle jessicali9530/celeba-dataset"
BG_SRC = "https://github.com/MadryLab/backgrounds_challenge"
FAIRFACE_SRC = "https://github.com/joojs/fairface"

WATERBIRDS_DIR = "waterbird_complete95_forest2water2"
WATERBIRDS_COLUMNS = ("img_id", "img_filename", "y", "split", "place", "place_filename")
SUBPOP_COLUMNS = ("filename", "split", "y", "a")  # ``id`` is written by SubpopBench but not needed
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
SPLIT_NAMES = ("train", "val", "test")

# MiMu stamps one fixed made-up text per class (its code: one made-up URL or word per IN-9 class).
WATERMARK_WORDS = ("Lumora", "Vextrin", "Quandel", "Orbisk", "Tazmir", "Celvano", "Drupix", "Halvent",
                   "Zorneth")
IMAGENET9_VAL_FRACTION = 0.1
IMAGENET9_VAL_SEED = 0
DECODE_VERSION = 1  # bump when decoding or stamping changes the pixels (part of the cache key)
PROGRESS_MIN = 2000  # print progress lines when decoding more images than this


def _line(text: object) -> str:
    """``text`` on one line (exception messages can hold newlines)."""
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------------
# shared reading helpers
# --------------------------------------------------------------------------------------------------

Rows = list[tuple[int, list[str]]]  # (line number, fields)


def _read_csv(path: Path, required: Sequence[str], source: str) -> tuple[list[str], Rows]:
    """Header and ``(line number, fields)`` rows of a CSV; a missing file, a missing column or a row
    with the wrong number of fields is a DataFormatError."""
    if not path.is_file():
        raise DataFormatError(f"{path} not found; it is part of the public copy at {source}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            rows = [(reader.line_num, r) for r in reader if r]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFormatError(f"Could not read {path}: {_line(exc)}; get a fresh copy from "
                              f"{source}") from None
    if not header:
        raise DataFormatError(f"{path} is empty; expected a header with the columns {','.join(required)} "
                              f"({source})")
    missing = [c for c in required if c not in header]
    if missing:
        raise DataFormatError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"(it has {', '.join(header)}); expected the columns {','.join(required)} as in {source}")
    for line, r in rows:
        if len(r) != len(header):
            raise DataFormatError(f"{path} line {line}: {len(r)} fields where the header has {len(header)}; "
                                  f"the file is damaged, get a fresh copy from {source}")
    return header, rows


def _to_int(text: str) -> int | None:
    """``text`` as an integer (``"1"``, ``" 1 "``, ``"1.0"``), or None."""
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return None
        return int(value) if value.is_integer() else None


def _int_column(path: Path, header: list[str], rows: Rows, column: str,
                allowed: Callable[[int], bool], expected: str, source: str) -> np.ndarray:
    """One CSV column as int64; a non-integer or a value ``allowed`` rejects is a DataFormatError."""
    j = header.index(column)
    out = np.empty(len(rows), dtype=np.int64)
    for k, (line, r) in enumerate(rows):
        value = _to_int(r[j])
        if value is None or not allowed(value):
            raise DataFormatError(f"{path} line {line}: column {column!r} holds {r[j]!r}, expected "
                                  f"{expected} ({source})")
        out[k] = value
    return out


def _binary_column(rows: Rows, j: int) -> np.ndarray | None:
    """Column ``j`` as int64 if every value is the integer 0 or 1, else None."""
    values = [_to_int(r[j]) for _, r in rows]
    if not values or any(v not in (0, 1) for v in values):
        return None
    return np.asarray(values, dtype=np.int64)


def _listing(folder: str) -> set[str]:
    """Names in ``folder`` that exist (a broken symlink does not); empty if it cannot be listed."""
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if not e.is_symlink() or os.path.exists(e.path)}
    except OSError:
        return set()


def missing_files(paths: Sequence[PathLike]) -> list[str]:
    """The listed files that do not exist, in order: one listing per folder, ``os.path.exists`` for
    names the listing lacks (fast on 200k files, also on network file systems)."""
    listings: dict[str, set[str]] = {}
    out = []
    for p in paths:
        s = os.fspath(p)
        folder, _, name = s.rpartition(os.sep)
        names = listings.get(folder)
        if names is None:
            names = listings[folder] = _listing(folder or os.sep)
        if name not in names and not os.path.exists(s):
            out.append(s)
    return out


def _image_paths(base: PathLike, names: Sequence[str], listed_in: Path, source: str) -> list[Path]:
    """``base/name`` for each name (an absolute name is kept), after checking that every one exists:
    otherwise a DataFormatError naming the first missing one and how many are missing."""
    base = os.fspath(base)
    strs = [os.path.join(base, n) for n in names]
    missing = missing_files(strs)
    if missing:
        raise DataFormatError(
            f"{listed_in}: {len(missing)} of {len(strs)} listed images are missing, the first {missing[0]}; "
            f"the image folder is incomplete or elsewhere, get the complete one from {source}")
    return [Path(s) for s in strs]


def _splits(y: np.ndarray, attrs: np.ndarray, split: np.ndarray, paths: list[Path], listed_in: Path,
            source: str) -> list[Split]:
    """train / val / test (split codes 0 / 1 / 2); an empty one is a DataFormatError."""
    out = []
    for code, name in enumerate(SPLIT_NAMES):
        idx = np.flatnonzero(split == code)
        if len(idx) == 0:
            raise DataFormatError(f"{listed_in}: the {name} split (split code {code}) is empty; the file is "
                                  f"incomplete, get the full one from {source}")
        out.append(Split(y[idx], attrs[idx], [paths[i] for i in idx]))
    return out


def _abs(root: Path) -> Path:
    """``root`` made absolute without resolving symlinks (the user's path is kept)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(root))))


# --------------------------------------------------------------------------------------------------
# Waterbirds
# --------------------------------------------------------------------------------------------------

def read_waterbirds(root: PathLike) -> RobustTable:
    """Waterbirds as released by group_DRO: ``root`` is ``waterbird_complete95_forest2water2/`` (any
    folder holding its ``metadata.csv``, e.g. WILDS' ``waterbirds_v1.0/``) or its parent.

    ``metadata.csv``: ``img_id,img_filename,y,split,place,place_filename``; ``img_filename`` relative to
    that folder; split 0 / 1 / 2 = train / val / test. Attributes: ``place``, then every further column
    whose values are all the integers 0 / 1, in file order (the synthetic writer adds ``mark``); other
    extra columns are ignored. ``tests = {"test": split 2}`` (group-balanced by reweighting downstream).
    """
    root = _abs(Path(root))
    if not (root / "metadata.csv").is_file() and (root / WATERBIRDS_DIR / "metadata.csv").is_file():
        root = root / WATERBIRDS_DIR
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise DataFormatError(
            f"Waterbirds metadata not found: neither {meta} nor {root / WATERBIRDS_DIR / 'metadata.csv'} "
            f"exists; pass the folder {WATERBIRDS_DIR}/ (or its parent) from {WATERBIRDS_SRC}")
    header, rows = _read_csv(meta, WATERBIRDS_COLUMNS, WATERBIRDS_SRC)
    y = _int_column(meta, header, rows, "y", lambda v: v in (0, 1), "0 (landbird) or 1 (waterbird)",
                    WATERBIRDS_SRC)
    split = _int_column(meta, header, rows, "split", lambda v: v in (0, 1, 2), "0, 1 or 2 (train/val/test)",
                        WATERBIRDS_SRC)
    names, columns = ["place"], [_int_column(meta, header, rows, "place", lambda v: v in (0, 1),
                                             "0 (land) or 1 (water)", WATERBIRDS_SRC)]
    for j, col in enumerate(header):
        if col in WATERBIRDS_COLUMNS or not col or col.startswith("Unnamed") or col in names:
            continue
        values = _binary_column(rows, j)
        if values is not None:
            names.append(col)
            columns.append(values)
    attrs = np.stack(columns, axis=1)
    jf = header.index("img_filename")
    paths = _image_paths(root, [r[jf].strip() for _, r in rows], meta, WATERBIRDS_SRC)
    train, val, test = _splits(y, attrs, split, paths, meta, WATERBIRDS_SRC)
    return RobustTable("waterbirds", "image", ["landbird", "waterbird"], names, train, val, {"test": test},
                       {}, [meta])


# --------------------------------------------------------------------------------------------------
# SubpopBench
# --------------------------------------------------------------------------------------------------

def _subpop_bases(meta: Path, root: Path, name: str) -> list[Path]:
    """Folders an image ``filename`` of SubpopBench's metadata may be relative to, in order."""
    d = meta.parent
    out: list[Path] = []
    for base in (d, d / WATERBIRDS_DIR, d / "img_align_celeba", d / "img_align_celeba" / "img_align_celeba",
                 root, root / name):
        if base not in out:
            out.append(base)
    return out


def read_subpop_metadata(root: PathLike, name: str) -> RobustTable:
    """A SubpopBench metadata file (``subpopbench/scripts/download.py``): ``id, filename, split, y, a``.

    The file is the first of ``root/metadata_<name>.csv``, ``root/<name>/metadata_<name>.csv``,
    ``root/metadata.csv``, ``root/<name>/metadata.csv``. ``filename`` is absolute (MetaShift, NICO++)
    or relative to one of: the metadata file's folder, its ``waterbird_complete95_forest2water2/``
    (Waterbirds), its ``img_align_celeba/`` (CelebA, also Kaggle's nested one), ``root``,
    ``root/<name>``: the first of these under which most of the first 50 files exist. Split codes
    0 / 1 / 2; ``y`` non-negative integers (class names ``class0``, ``class1``...); ``a`` must be
    binary (0 / 1) and becomes the attribute ``attr``.
    """
    root = _abs(Path(root))
    candidates = [root / f"metadata_{name}.csv", root / name / f"metadata_{name}.csv", root / "metadata.csv",
                  root / name / "metadata.csv"]
    meta = next((c for c in candidates if c.is_file()), None)
    if meta is None:
        raise DataFormatError(
            f"SubpopBench metadata for {name!r} not found: none of {', '.join(map(str, candidates))} exists; "
            f"write it with subpopbench/scripts/download.py from {SUBPOP_SRC}")
    header, rows = _read_csv(meta, SUBPOP_COLUMNS, SUBPOP_SRC)
    split = _int_column(meta, header, rows, "split", lambda v: v in (0, 1, 2),
                        "0, 1 or 2 (train/val/test)", SUBPOP_SRC)
    y = _int_column(meta, header, rows, "y", lambda v: v >= 0, "a class index >= 0", SUBPOP_SRC)
    a = _int_column(meta, header, rows, "a", lambda v: v >= 0, "0 or 1", SUBPOP_SRC)
    values = np.unique(a)
    if len(values) > 2:
        raise DataFormatError(
            f"{meta}: column 'a' has {len(values)} values ({', '.join(map(str, values[:8]))}); only binary "
            f"attributes (0/1) are supported, recode 'a' as 0/1 ({SUBPOP_SRC})")
    if values.max() > 1:
        k = int(np.flatnonzero(a > 1)[0])
        raise DataFormatError(f"{meta} line {rows[k][0]}: column 'a' holds {a[k]}, expected 0 or 1 "
                              f"({SUBPOP_SRC})")
    jf = header.index("filename")
    names = [r[jf].strip() for _, r in rows]
    bases = _subpop_bases(meta, root, name)
    sample = names[:50]
    found = [sum(os.path.exists(b / n) for n in sample) for b in bases]
    if not sample or max(found) == 0:
        raise DataFormatError(
            f"{meta}: listed images not found, e.g. {sample[0] if sample else '?'!r} under none of "
            f"{', '.join(map(str, bases))}; put the images where SubpopBench's download.py puts them "
            f"({SUBPOP_SRC})")
    base = bases[found.index(max(found))]
    paths = _image_paths(base, names, meta, SUBPOP_SRC)
    train, val, test = _splits(y, a[:, None], split, paths, meta, SUBPOP_SRC)
    classes = [f"class{c}" for c in range(int(y.max()) + 1)]
    return RobustTable(f"subpop-{name}", "image", classes, ["attr"], train, val, {"test": test}, {}, [meta])


# --------------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------------

def _first_file(root: Path, names: Sequence[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"Could not read {path}: {_line(exc)}; get a fresh copy from "
                              f"{CELEBA_SRC}") from None


def _bad_row(path: Path, lines: list[str], width: int, first_line: int, sep: str | None) -> DataFormatError:
    """The error for the first row of ``lines`` that does not have ``width`` fields."""
    for k, raw in enumerate(lines):
        if raw.strip() and len(raw.split(sep)) != width:
            return DataFormatError(f"{path} line {first_line + k}: {len(raw.split(sep))} fields, expected "
                                   f"{width} (a file name and one value per attribute); get a fresh copy "
                                   f"from {CELEBA_SRC}")
    return DataFormatError(f"{path}: rows do not have {width} fields each; get a fresh copy from "
                           f"{CELEBA_SRC}")


def _celeba_attributes(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Attribute names, file names and the flat value tokens (row-major) of ``list_attr_celeba``."""
    text = _read_text(path)
    if path.suffix == ".csv":
        head, _, body = text.partition("\n")
        header = [h.strip() for h in head.split(",")]
        if len(header) < 2 or header[0] != "image_id":
            raise DataFormatError(f"{path}: the header must be image_id,<attribute names> (found "
                                  f"{_line(head)[:80]!r}); get the file from {CELEBA_SRC}")
        attr_names, first_line, sep = header[1:], 2, ","
        if "\r" in body:
            body = body.replace("\r", "")
        tokens = body.replace(",", " ").split()
        n_declared = None
    else:
        parts = text.split("\n", 2)
        if len(parts) < 3 or _to_int(parts[0].strip()) is None:
            raise DataFormatError(f"{path}: line 1 must be the image count and line 2 the attribute names; "
                                  f"get the file from {CELEBA_SRC}")
        n_declared = _to_int(parts[0].strip())
        attr_names, first_line, sep, body = parts[1].split(), 3, None, parts[2]
        tokens = body.split()
    width = len(attr_names) + 1
    if not attr_names or len(tokens) % width:
        raise _bad_row(path, body.split("\n"), width, first_line, sep)
    files = tokens[0::width]
    if n_declared is not None and n_declared != len(files):
        raise DataFormatError(f"{path}: line 1 says {n_declared} images but the file lists {len(files)}; the "
                              f"file is truncated or edited, get a fresh copy from {CELEBA_SRC}")
    return attr_names, files, tokens


def _celeba_column(path: Path, tokens: list[str], width: int, k: int, name: str,
                   files: list[str]) -> np.ndarray:
    """Attribute ``k`` (-1/0 -> 0, 1 -> 1) as int64; any other value is a DataFormatError."""
    col = np.asarray(tokens[1 + k::width])
    pos = col == "1"
    bad = ~(pos | (col == "-1") | (col == "0"))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}: attribute {name!r} of {files[i]} is {str(col[i])!r}, expected -1 or "
                              f"1 ({int(bad.sum())} bad values); get a fresh copy from {CELEBA_SRC}")
    return pos.astype(np.int64)


def _celeba_partition(path: Path) -> dict[str, str]:
    """``list_eval_partition``: file name -> ``"0"`` / ``"1"`` / ``"2"``."""
    text = _read_text(path)
    if path.suffix == ".csv":
        head, _, body = text.partition("\n")
        header = [h.strip() for h in head.split(",")]
        if header[:2] != ["image_id", "partition"]:
            raise DataFormatError(f"{path}: the header must be image_id,partition (found "
                                  f"{_line(head)[:80]!r}); get the file from {CELEBA_SRC}")
        tokens, first_line, sep = body.replace("\r", "").replace(",", " ").split(), 2, ","
    else:
        body, first_line, sep = text, 1, None
        tokens = body.split()
    if len(tokens) % 2:
        raise _bad_row(path, body.split("\n"), 2, first_line, sep)
    part = dict(zip(tokens[0::2], tokens[1::2], strict=True))
    bad = [f for f, p in part.items() if p not in ("0", "1", "2")]
    if bad:
        raise DataFormatError(f"{path}: the partition of {bad[0]} is {part[bad[0]]!r}, expected 0, 1 or 2 "
                              f"(train/val/test); get a fresh copy from {CELEBA_SRC}")
    return part


def _attribute_index(name: str, names: list[str], path: Path, role: str) -> int:
    if name in names:
        return names.index(name)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    close += [n for n in names if n.lower() == name.lower() and n not in close]
    hint = f"closest: {', '.join(close)}" if close else f"the names are {', '.join(names[:8])}..."
    raise DataFormatError(f"{path}: no attribute {name!r} (the {role}); {hint}")


def read_celeba(root: PathLike, target: str = "Blond_Hair",
                spurious: str | Sequence[str] = "Male") -> RobustTable:
    """CelebA with ``target`` as the label and ``spurious`` (a name or several) as the attributes.

    Files (first found): ``list_attr_celeba.txt`` (also ``Anno/``) or Kaggle's ``list_attr_celeba.csv``;
    ``list_eval_partition.txt`` (also ``Eval/``) or ``list_eval_partition.csv``. Images under
    ``img_align_celeba/``, Kaggle's ``img_align_celeba/img_align_celeba/`` or ``Img/img_align_celeba/``
    (the one holding the first listed file). Attribute values -1 (or 0) / 1; partition 0 / 1 / 2 =
    train / val / test. The txt header's image count must match the rows (a truncated file is an
    error). Class names ``[f"not_{target}", target]``.
    """
    root = _abs(Path(root))
    attr_file = _first_file(root, ["list_attr_celeba.txt", "Anno/list_attr_celeba.txt",
                                   "list_attr_celeba.csv"])
    part_file = _first_file(root, ["list_eval_partition.txt", "Eval/list_eval_partition.txt",
                                   "list_eval_partition.csv"])
    for found, stem in ((attr_file, "list_attr_celeba"), (part_file, "list_eval_partition")):
        if found is None:
            raise DataFormatError(f"CelebA: {root / stem}.txt (or .csv) not found; download it from "
                                  f"{CELEBA_SRC}")
    assert attr_file is not None and part_file is not None
    spurious_names = [spurious] if isinstance(spurious, str) else list(spurious)
    if target in spurious_names or len(set(spurious_names)) != len(spurious_names):
        raise UserError(f"CelebA: the spurious attributes {spurious_names} must differ from each other and "
                        f"from the target {target!r}")
    names, files, tokens = _celeba_attributes(attr_file)
    width = len(names) + 1
    def column(name: str, role: str) -> np.ndarray:
        k = _attribute_index(name, names, attr_file, role)
        return _celeba_column(attr_file, tokens, width, k, name, files)

    y = column(target, "target")
    cols = [column(s, "spurious attribute") for s in spurious_names]
    attrs = np.stack(cols, axis=1) if cols else np.zeros((len(files), 0), dtype=np.int64)
    part = _celeba_partition(part_file)
    codes = [part.get(f) for f in files]
    if None in codes:
        lost = [f for f, c in zip(files, codes, strict=True) if c is None]
        raise DataFormatError(f"{part_file}: no partition for {len(lost)} of the {len(files)} images in "
                              f"{attr_file.name}, the first {lost[0]}; get matching files from {CELEBA_SRC}")
    split = np.asarray(codes, dtype="U1").astype(np.int64)
    dirs = [root / "img_align_celeba", root / "img_align_celeba" / "img_align_celeba",
            root / "Img" / "img_align_celeba"]
    image_dir = next((d for d in dirs if files and os.path.exists(d / files[0])), dirs[0])
    paths = _image_paths(image_dir, files, attr_file, CELEBA_SRC)
    train, val, test = _splits(y, attrs, split, paths, part_file, CELEBA_SRC)
    return RobustTable("celeba", "image", [f"not_{target}", target], spurious_names, train, val,
                       {"test": test}, {}, [attr_file, part_file])


# --------------------------------------------------------------------------------------------------
# ImageNet-9 (backgrounds challenge) with MiMu's watermark
# --------------------------------------------------------------------------------------------------

_CLASS_DIR = re.compile(r"^(\d+)_(.+)$")


def watermark_text(k: int) -> str:
    """The fixed made-up watermark text of class ``k`` (:data:`WATERMARK_WORDS`, then numbered)."""
    word = WATERMARK_WORDS[k % len(WATERMARK_WORDS)]
    return word if k < len(WATERMARK_WORDS) else f"{word}{k // len(WATERMARK_WORDS)}"


def _class_dirs(folder: Path) -> list[str]:
    """``NN_name`` sub-folders sorted by their number; none is a DataFormatError."""
    if not folder.is_dir():
        raise DataFormatError(f"ImageNet-9: folder {folder} not found; it is part of the backgrounds "
                              f"challenge data ({BG_SRC}; IN-9L training data: in9l.tar.gz, test sets: "
                              f"backgrounds_challenge_data.tar.gz)")
    dirs = [e.name for e in os.scandir(folder) if e.is_dir() and _CLASS_DIR.match(e.name)]
    if not dirs:
        raise DataFormatError(f"ImageNet-9: {folder} holds no class folders like 00_dog; get the data from "
                              f"{BG_SRC}")
    return sorted(dirs, key=lambda d: (int(_CLASS_DIR.match(d).group(1)), d))  # type: ignore[union-attr]


def _list_set(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """The images of one IN-9 set (sorted per class) and their class indices."""
    found = _class_dirs(folder)
    if found != classes:
        raise DataFormatError(f"ImageNet-9: the class folders of {folder} ({', '.join(found)}) differ from "
                              f"the training set's ({', '.join(classes)}); get matching data from {BG_SRC}")
    paths: list[Path] = []
    y: list[int] = []
    for k, c in enumerate(classes):
        with os.scandir(folder / c) as entries:
            names = sorted(e.name for e in entries
                           if e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith("."))
        paths += [folder / c / n for n in names]
        y += [k] * len(names)
    if not paths:
        raise DataFormatError(f"ImageNet-9: {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); get "
                              f"the data from {BG_SRC}")
    return paths, np.asarray(y, dtype=np.int64)


def read_imagenet9(root: PathLike, marks: bool = True, mark_seed: int = 0) -> RobustTable:
    """ImageNet-9 from the backgrounds challenge, with MiMu's class-specific text watermark.

    Test sets are read from ``<T>/original/val``, ``<T>/mixed_same/val`` and ``<T>/mixed_rand/val`` where
    ``T`` is ``root/bg_challenge`` if it exists (the release's tarball) else ``root``. Training images are
    the first of ``root/in9l/train`` (IN-9L, SubpopBench's layout), ``root/original/train``,
    ``T/original/train``; validation is that folder's sibling ``val`` unless the sibling is the test set
    ``T/original/val`` (or absent): then a seeded (seed 0) 10% of each class of the training folder.
    Class folders ``NN_name`` sorted by number; class names without the ``NN_`` prefix.

    Attributes: ``background`` (1: the background is from the image's own class: original and
    mixed_same; 0: mixed_rand) and, with ``marks``, ``watermark`` (1: the stamped text is the own
    class's :func:`watermark_text`; 0: another class's, drawn with ``mark_seed``). Sets: ``test``
    (original, own marks), ``mixed_same``, ``broken_background`` (mixed_rand, own marks),
    ``broken_watermark`` (original, another class's text), ``all_broken`` (mixed_rand, another class's
    text). Every split carries ``marks`` (the text per image) and ``mark_seed``; the pixels are stamped
    by :func:`decode_images`. Without ``marks`` only ``background`` and the first three sets.
    """
    root = _abs(Path(root))
    tests_root = root / "bg_challenge" if (root / "bg_challenge").is_dir() else root
    train_dirs = [root / "in9l" / "train", root / "original" / "train", tests_root / "original" / "train"]
    train_dir = next((d for d in train_dirs if d.is_dir()), None)
    if train_dir is None:
        tried = ", ".join(map(str, dict.fromkeys(train_dirs)))
        raise DataFormatError(f"ImageNet-9: no training folder: none of {tried} exists; get IN-9L "
                              f"(in9l.tar.gz) or original.tar.gz from {BG_SRC}")
    classes = _class_dirs(train_dir)
    if len(classes) < 2:
        raise DataFormatError(f"ImageNet-9: {train_dir} holds one class folder ({classes[0]}); the data set "
                              f"has nine (00_dog ... 08_fish), get them from {BG_SRC}")
    names = [_CLASS_DIR.match(c).group(2) for c in classes]  # type: ignore[union-attr]
    train_paths, train_y = _list_set(train_dir, classes)
    val_dir = train_dir.parent / "val"
    if val_dir.is_dir() and val_dir != tests_root / "original" / "val":
        val_paths, val_y = _list_set(val_dir, classes)
    else:  # a seeded 10% of each class
        rng = np.random.default_rng(IMAGENET9_VAL_SEED)
        is_val = np.zeros(len(train_y), dtype=bool)
        for k in range(len(classes)):
            idx = np.flatnonzero(train_y == k)
            n_val = int(round(IMAGENET9_VAL_FRACTION * len(idx))) if len(idx) > 1 else 0
            is_val[rng.permutation(idx)[:n_val]] = True
        val_paths, val_y = [p for p, v in zip(train_paths, is_val, strict=True) if v], train_y[is_val]
        train_paths = [p for p, v in zip(train_paths, is_val, strict=True) if not v]
        train_y = train_y[~is_val]
        if not val_paths:
            raise DataFormatError(f"ImageNet-9: {train_dir} is too small to hold out a validation split; get "
                                  f"the full data from {BG_SRC}")
    sets = {s: _list_set(tests_root / s / "val", classes) for s in ("original", "mixed_same", "mixed_rand")}
    n_attr = 2 if marks else 1

    def split(paths: list[Path], y: np.ndarray, background: int, own_mark: bool, stream: int) -> Split:
        attrs = np.zeros((len(y), n_attr), dtype=np.int64)
        attrs[:, 0] = background
        paths, y = list(paths), y.copy()  # sets that share images do not share lists
        if not marks:
            return Split(y, attrs, paths, None, mark_seed)
        if own_mark:
            shown = y
            attrs[:, 1] = 1
        else:  # another class's text, uniformly among the others
            rng = np.random.default_rng([mark_seed, stream])
            shown = (y + rng.integers(1, len(classes), size=len(y))) % len(classes)
        texts = [watermark_text(int(k)) for k in shown]
        return Split(y, attrs, paths, texts, mark_seed)

    tests = {"test": split(*sets["original"], 1, True, 0),
             "mixed_same": split(*sets["mixed_same"], 1, True, 0),
             "broken_background": split(*sets["mixed_rand"], 0, True, 0)}
    broken = {"background": "broken_background"}
    if marks:
        tests["broken_watermark"] = split(*sets["original"], 1, False, 1)
        tests["all_broken"] = split(*sets["mixed_rand"], 0, False, 2)
        broken.update(watermark="broken_watermark", all="all_broken")
    return RobustTable("imagenet9", "image", names, ["background", "watermark"][:n_attr],
                       split(train_paths, train_y, 1, True, 0), split(val_paths, val_y, 1, True, 0), tests,
                       broken, [])


# --------------------------------------------------------------------------------------------------
# the watermark
# --------------------------------------------------------------------------------------------------

_FONTS = threading.local()  # FreeType faces are not shared across threads


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    cache = _FONTS.__dict__.setdefault("fonts", {})
    if size not in cache:
        cache[size] = ImageFont.load_default(size=size)
    return cache[size]


def _tail(path: PathLike) -> str:
    """``folder/file``: the last two parts of ``path`` (string operations, no pathlib: 200k of them)."""
    folder, _, name = os.fspath(path).rpartition(os.sep)
    return f"{folder.rpartition(os.sep)[2]}/{name}"


def stamp_seed(mark_seed: int, path: PathLike) -> int:
    """The stamp seed of one image: a hash of ``mark_seed`` and the image's last two path parts
    (``class_folder/file``), so it survives moving the data and does not depend on the index."""
    return int(stable_hash([int(mark_seed), _tail(path)]), 16)


def stamp_text(img: Image.Image, text: str, seed: int) -> Image.Image:
    """MiMu's watermark: ``text`` drawn on a copy of ``img`` (RGB), all randomness from
    ``np.random.default_rng(seed)``: a font size of 10-25% of the shorter side (shrunk until the text
    fits inside a 4% margin), a random fill colour with a thin black or white outline (whichever
    contrasts, so it is visible on any background), at one of 8 positions: the 4 corners and the 4
    edge midpoints."""
    img = img.convert("RGB") if img.mode != "RGB" else img.copy()
    if not text:
        return img
    rng = np.random.default_rng(seed)
    w, h = img.size
    side = min(w, h)
    size = max(6, int(round(rng.uniform(0.10, 0.25) * side)))
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    where = int(rng.integers(8))
    margin = max(1, int(round(0.04 * side)))
    draw = ImageDraw.Draw(img)
    while True:
        stroke = max(1, size // 12)
        font = _font(size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
        tw, th = right - left, bottom - top
        fits = tw <= w - 2 * margin and th <= h - 2 * margin
        if fits or size <= 6:
            break
        size = max(6, min(size - 1, int(size * min((w - 2 * margin) / tw, (h - 2 * margin) / th))))
    col, row = [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 2), (2, 2)][where]
    x = [margin, (w - tw) // 2, w - margin - tw][col]
    y = [margin, (h - th) // 2, h - margin - th][row]
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    outline = (0, 0, 0) if luminance > 127 else (255, 255, 255)
    draw.text((x - left, y - top), text, font=font, fill=colour, stroke_width=stroke, stroke_fill=outline)
    return img


# --------------------------------------------------------------------------------------------------
# decoding and its cache
# --------------------------------------------------------------------------------------------------

def images_fingerprint(paths: Sequence[PathLike]) -> str:
    """A stable hash of each file's path relative to the files' common folder and its size, in order
    (``os.stat`` only, no image is read): the data moved elsewhere keeps it, a replaced or truncated
    file changes it."""
    if not paths:
        return stable_hash([])
    strs = [s if os.path.isabs(s) else os.path.abspath(s) for s in map(os.fspath, paths)]
    try:
        common = os.path.commonpath([os.path.dirname(s) for s in strs])
        cut = len(os.path.join(common, ""))
    except ValueError:  # different drives
        cut = 0
    h = hashlib.sha256()
    for s in strs:
        try:
            size = os.stat(s).st_size
        except OSError as exc:
            raise DataFormatError(f"Could not stat image {s}: {_line(exc)}; check that the image folder is "
                                  f"complete") from None
        h.update(f"{s[cut:]}\0{size}\n".encode())
    return h.hexdigest()[:16]


def _marks_digest(split: Split) -> str | None:
    """A hash of every marked image's text and stamp identity (``folder/file``), None without marks."""
    if not split.marks or not any(split.marks):
        return None
    h = hashlib.sha256()
    for p, m in zip(split.paths or [], split.marks, strict=True):
        h.update(f"{_tail(p)}\0{m}\n".encode())
    return h.hexdigest()[:16]


def decode_image(path: PathLike, resolution: int, mark: str = "", seed: int = 0) -> np.ndarray:
    """One image as uint8 ``(resolution, resolution, 3)``: Pillow decodes it as RGB, stamps ``mark``
    (:func:`stamp_text` with ``seed``) at the source resolution, then the centred square of side
    ``min(w, h)`` is resized to ``resolution`` (bilinear, i.e. shorter side to ``resolution`` then centre
    crop). Unmarked JPEGs use Pillow's draft mode (DCT scaling, only when the image is at least twice the
    target) for speed."""
    try:
        with Image.open(path) as im:
            if not mark:
                im.draft("RGB", (resolution, resolution))
            rgb = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataFormatError(f"Could not decode image {path}: {_line(exc)}; replace it with a good "
                              f"copy") from None
    if mark:
        rgb = stamp_text(rgb, mark, seed)
    w, h = rgb.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    out = rgb.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
    return np.asarray(out, dtype=np.uint8)


def _workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _fill(out: np.ndarray, split: Split, resolution: int, label: str) -> None:
    """Decode every image of ``split`` into ``out`` with a small thread pool (Pillow releases the GIL)."""
    paths = split.paths or []
    marks = split.marks or [""] * len(paths)
    n = len(paths)
    block = 64

    def work(lo: int) -> int:
        for i in range(lo, min(lo + block, n)):
            seed = stamp_seed(split.mark_seed, paths[i]) if marks[i] else 0
            out[i] = decode_image(paths[i], resolution, marks[i], seed)
        return min(lo + block, n) - lo

    start, done, shown = time.perf_counter(), 0, 0
    pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="decode")
    try:
        futures: list[Future[int]] = [pool.submit(work, lo) for lo in range(0, n, block)]
        for fut in futures:
            done += fut.result()
            if n > PROGRESS_MIN and done * 10 // n > shown:
                shown = done * 10 // n
                rate = done / max(time.perf_counter() - start, 1e-9)
                print(f"decoding {n} images at {resolution}px into {label}: {shown * 10}% "
                      f"({rate:.0f} images/s)", file=sys.stderr, flush=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def decode_images(split: Split, resolution: int, cache_dir: PathLike) -> np.ndarray:
    """Every image of ``split`` as a read-only memory-mapped uint8 ``(N, resolution, resolution, 3)``
    array, in order, decoded by :func:`decode_image` (marks stamped from ``split.marks`` with
    :func:`stamp_seed`) and cached in ``cache_dir/images-<N>x<R>-<key>.npy``; the key hashes
    :func:`images_fingerprint`, the resolution, the marks and ``mark_seed``. The file is written through
    a memory map into a temporary sibling and renamed (memory stays bounded); a cache file that does
    not load or has the wrong shape is set aside and rebuilt."""
    if not split.paths:
        return np.zeros((0, resolution, resolution, 3), dtype=np.uint8)
    if resolution < 1:
        raise UserError(f"decode_images: resolution must be a positive number of pixels, not {resolution}")
    n = len(split.paths)
    shape = (n, resolution, resolution, 3)
    marks = _marks_digest(split)
    key = stable_hash({"images": images_fingerprint(split.paths), "resolution": int(resolution),
                       "marks": marks, "mark_seed": int(split.mark_seed) if marks else None,
                       "version": DECODE_VERSION})
    path = Path(cache_dir) / f"images-{n}x{resolution}-{key}.npy"
    if path.exists():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape != shape or arr.dtype != np.uint8:
                raise ValueError(f"shape {arr.shape} {arr.dtype}, expected {shape} uint8")
            return arr
        except Exception as exc:  # any failure to load means: rebuild it
            set_aside(path, f"{type(exc).__name__}: {exc}")
    with atomic_file(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        try:
            _fill(out, split, resolution, path.name)
            out.flush()
        finally:
            del out
    return np.load(path, mmap_mode="r")


# --------------------------------------------------------------------------------------------------
# synthetic Waterbirds
# --------------------------------------------------------------------------------------------------

@dataclass
class SyntheticImages:
    """A synthetic Waterbirds-layout set: the bird is the label (0: an ellipse with stripes along one
    axis, 1: a cross with stripes along the other, +-15 degrees; random position, size, rotation and
    colour), ``place`` (background: green blotchy land
    vs blue wavy water, colours jittered) agrees with ``y`` at ``background_rate`` and ``mark`` (a small
    bright square in a random corner) at ``mark_rate`` in train and val, independently of each other;
    in test every group (y x place x mark) has ``n_test // 8`` images. ``bird_hue``: ``"any"``
    (each bird a random colour) or ``"class"`` (landbirds red to orange, waterbirds magenta to
    violet: neither a background's colour); the second leaves the background as the main thing
    a picture's pixels vary by within a class (InvDiff's set)."""

    n_train: int = 2000
    n_val: int = 800
    n_test: int = 1200
    size: int = 64
    background_rate: float = 0.95
    mark_rate: float = 0.85
    seed: int = 0
    bird_hue: str = "any"

    def __post_init__(self) -> None:
        if self.bird_hue not in BIRD_HUES:
            raise UserError(f"SyntheticImages: bird_hue must be one of {', '.join(map(repr, BIRD_HUES))}, "
                            f"not {self.bird_hue!r}")
        if min(self.n_train, self.n_val) < 2 or self.n_test < 8:
            raise UserError(f"SyntheticImages: need n_train, n_val >= 2 and n_test >= 8 (got {self.n_train}, "
                            f"{self.n_val}, {self.n_test})")
        if self.size < 16:
            raise UserError(f"SyntheticImages: size must be at least 16 pixels, not {self.size}")
        for name in ("background_rate", "mark_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"SyntheticImages: {name} must be in [0, 1], not {getattr(self, name)}")


SYNTHETIC_VERSION = 3  # bump when the writer's output changes (part of the synthetic cache key)
BIRD_HUES = ("any", "class")
CLASS_HUES = ((0.97, 0.10), (0.78, 0.90))  # bird_hue "class": hue ranges (wrapping) per class
SYNTH_SPECIES = ("001.Round_Landbird", "002.Pointed_Waterbird")  # class folders, like CUB's
SYNTH_PLACES = ("/f/forest/broadleaf", "/o/ocean")


def _agreeing(rng: np.random.Generator, y: np.ndarray, rate: float) -> np.ndarray:
    """A binary attribute equal to ``y`` for exactly ``round(rate * n_c)`` of each class's ``n_c``
    examples (which ones: random)."""
    a = np.empty(len(y), dtype=np.int64)
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        agree = int(round(rate * len(idx)))
        a[idx[:agree]] = c
        a[idx[agree:]] = 1 - c
    return a


def _synthetic_labels(cfg: SyntheticImages, code: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y, place, mark of one split (code 0 / 1 / 2), from its own random stream. Train and val: half of
    each class, place and mark drawn independently given y; test: the 8 groups equally large."""
    rng = np.random.default_rng([cfg.seed, code])
    if code == 2:
        g = rng.permutation(np.repeat(np.arange(8), cfg.n_test // 8))
        return (g >> 2) & 1, (g >> 1) & 1, g & 1
    n = cfg.n_train if code == 0 else cfg.n_val
    y = rng.permutation(np.repeat(np.arange(2), [n // 2, n - n // 2]))
    return y, _agreeing(rng, y, cfg.background_rate), _agreeing(rng, y, cfg.mark_rate)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


@functools.lru_cache(maxsize=4)
def _axis(size: int) -> np.ndarray:
    """Pixel coordinates in [0, 1), float32."""
    return np.arange(size, dtype=np.float32) / size


def _wave(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``sin(rows[r] + cols[c])`` as an outer sum (a separable texture, cheap)."""
    return np.outer(np.sin(rows), np.cos(cols)) + np.outer(np.cos(rows), np.sin(cols))


def _render(rng: np.random.Generator, y: int, place: int, mark: int, size: int,
            stripes: int | None = None, bird_hue: str = "any") -> Image.Image:
    """One synthetic bird picture (see :class:`SyntheticImages`): ``y`` sets the body's shape and
    ``stripes`` (default ``y``) the plumage's orientation; they differ only in the pretraining
    corpus (:mod:`harness.datasets.robust_pretrain`), where every feature is drawn independently."""
    stripes = y if stripes is None else stripes
    s = size
    ax = _axis(s)
    if place == 0:  # land: green / olive, blotchy foliage from a few random plane waves
        hue = rng.uniform(0.18, 0.36)
        tex = np.zeros((s, s), np.float32)
        for _ in range(3):
            ang, freq, ph = rng.uniform(0, np.pi), rng.uniform(1.5, 4.0), rng.uniform(0, 2 * np.pi)
            tex += _wave(2 * np.pi * freq * np.sin(ang) * ax + ph, 2 * np.pi * freq * np.cos(ang) * ax)
        tex = 0.5 + tex / 6
    else:  # water: blue, horizontal waves with a little wobble
        hue = rng.uniform(0.53, 0.66)
        freq, ph, wob = rng.uniform(4, 8), rng.uniform(0, 2 * np.pi), rng.uniform(0.02, 0.06)
        wobble = wob * np.sin(2 * np.pi * rng.uniform(1, 2) * ax)
        tex = 0.5 + 0.5 * _wave(2 * np.pi * freq * ax + ph, 2 * np.pi * freq * wobble)
    c1 = _hsv(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.45, 0.8), rng.uniform(0.30, 0.50))
    c2 = _hsv(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.35, 0.7), rng.uniform(0.50, 0.70))
    mask = Image.fromarray((np.clip(tex, 0, 1) * 255).astype(np.uint8))
    img = Image.composite(Image.new("RGB", (s, s), c2), Image.new("RGB", (s, s), c1), mask)
    draw = ImageDraw.Draw(img)
    # the bird: its shape is the label; equal areas on average so size carries nothing
    r = rng.uniform(0.22, 0.30) * s
    cx, cy = rng.uniform(0.35, 0.65, size=2) * s
    theta = rng.uniform(0, 2 * np.pi)
    if y == 0:  # a filled ellipse
        aspect = rng.uniform(1.0, 1.6)
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        px, py = r * np.sqrt(aspect) * np.cos(t), r / np.sqrt(aspect) * np.sin(t)
    else:  # a filled cross (plus) of about the same area
        span, half = 1.17 * r, 0.36 * 1.17 * r
        px = np.asarray([half, half, span, span, half, half, -half, -half, -span, -span, -half, -half])
        py = np.asarray([span, half, half, -half, -half, -span, -span, -half, -half, half, half, span])
    rx = cx + px * np.cos(theta) - py * np.sin(theta)
    ry = cy + px * np.sin(theta) + py * np.cos(theta)
    bird_h = rng.uniform(0, 1)  # one draw either way: "any" pictures are those of earlier versions
    if bird_hue == "class":
        lo, hi = CLASS_HUES[y]
        bird_h = lo + bird_h * ((hi - lo) % 1.0)
    bird = _hsv(bird_h, rng.uniform(0.5, 1.0), rng.uniform(0.75, 1.0))
    # its plumage is the label too: stripes across the body, horizontal for class 0 and vertical
    # for class 1 (+-15 degrees), period s / 8: a local cue every patch over the bird carries
    phi = (0.0 if stripes == 0 else np.pi / 2) + rng.uniform(-np.pi / 12, np.pi / 12)
    period, phase = s / 8, rng.uniform(0, 2 * np.pi)
    pix = ax * s  # pixel coordinates; wave[row, col]: constant along the stripes
    wave = np.sin(2 * np.pi * np.add.outer(pix * np.cos(phi), pix * np.sin(phi)) / period + phase)
    dark = tuple(int(c * 0.35) for c in bird)
    plumage = Image.fromarray(np.where(wave[..., None] > 0, np.asarray(bird, np.uint8),
                                       np.asarray(dark, np.uint8)).astype(np.uint8))
    body = Image.new("L", (s, s), 0)
    ImageDraw.Draw(body).polygon(list(zip(rx.tolist(), ry.tolist(), strict=True)), fill=255)
    img.paste(plumage, (0, 0), body)
    if mark:  # a small bright yellow-white square in a random corner
        m = max(3, int(round(0.09 * s)))
        off = int(rng.integers(2, max(3, s // 12)))
        corner = int(rng.integers(4))
        x0 = off if corner % 2 == 0 else s - off - m
        y0 = off if corner < 2 else s - off - m
        fill = (int(rng.integers(225, 256)), int(rng.integers(225, 256)), int(rng.integers(0, 140)))
        draw.rectangle([x0, y0, x0 + m - 1, y0 + m - 1], fill=fill)
    noise = (8 * rng.standard_normal((s, s, 1), dtype=np.float32)).astype(np.int16)  # grey sensor noise
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def write_synthetic_waterbirds(out_dir: PathLike, cfg: SyntheticImages | None = None) -> Path:
    """Write ``out_dir/waterbird_complete95_forest2water2/`` (``metadata.csv`` with the Waterbirds columns
    plus ``mark``, and JPEG images in CUB-like class folders) from ``cfg`` (:class:`SyntheticImages`);
    returns that folder, which :func:`read_waterbirds` reads back."""
    cfg = cfg or SyntheticImages()
    root = Path(out_dir) / WATERBIRDS_DIR
    for folder in SYNTH_SPECIES:
        (root / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    img_id = 0
    for code in (0, 1, 2):
        y, place, mark = _synthetic_labels(cfg, code)
        rng = np.random.default_rng([cfg.seed, code, 1])
        for yi, pi, mi in zip(y.tolist(), place.tolist(), mark.tolist(), strict=True):
            img_id += 1
            name = f"{SYNTH_SPECIES[yi]}/{SYNTH_SPECIES[yi].split('.', 1)[1]}_{img_id:05d}.jpg"
            _render(rng, yi, pi, mi, cfg.size, bird_hue=cfg.bird_hue).save(root / name, quality=90)
            rows.append([img_id, name, yi, code, pi, f"{SYNTH_PLACES[pi]}/{img_id:08d}.jpg", mi])
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*WATERBIRDS_COLUMNS, "mark"])
        writer.writerows(rows)
    return root


# --------------------------------------------------------------------------------------------------
# FairFace
# --------------------------------------------------------------------------------------------------

# the image zips of FairFace's README (Padding=0.25 / Padding=1.25), each unzipped into a folder of its
# name holding ``train/`` and ``val/``
FAIRFACE_DIRS = ("fairface-img-margin025-trainval", "fairface-img-margin125-trainval")
FAIRFACE_LABELS = ("fairface_label_train.csv", "fairface_label_val.csv")
FAIRFACE_VALUES = {  # every value a label column may hold, as spelt in the public files
    "gender": ("Male", "Female"),
    "race": ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
             "Middle Eastern"),
    "age": ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"),
    "service_test": ("False", "True"),
}
FAIRFACE_DEFAULT = {"gender": "Female", "race": "White", "service_test": "True"}  # the value coded 1
FAIRFACE_VAL_SHARE = 0.1
FAIRFACE_VAL_SEED = 0


def _fairface_slug(text: str) -> str:
    """``East Asian`` -> ``east_asian``, ``more than 70`` -> ``more_than_70`` (MLflow's alphabet)."""
    return re.sub(r"[^a-z0-9-]+", "_", text.lower()).strip("_")


def _fairface_key(text: str) -> str:
    """A value as compared with the user's spelling: case, ``_`` and spaces do not matter."""
    return " ".join(text.replace("_", " ").lower().split())


def _fairface_close(value: str, allowed: Sequence[str], n: int, cutoff: float) -> list[str]:
    """The values of ``allowed`` closest to ``value`` (compared by :func:`_fairface_key`)."""
    keys = {_fairface_key(v): v for v in allowed}
    return [keys[k] for k in difflib.get_close_matches(_fairface_key(value), list(keys), n=n, cutoff=cutoff)]


def _fairface_code(spec: str, role: str) -> tuple[str, str]:
    """``(column, the value coded 1)`` of a target or spurious spec: ``column`` or ``column=value``."""
    if not isinstance(spec, str):
        raise UserError(f"FairFace: the {role} must be a column name or 'column=value', not {spec!r}")
    column, eq, value = (part.strip() for part in spec.partition("="))
    columns = list(FAIRFACE_VALUES)
    if column not in FAIRFACE_VALUES:
        close = difflib.get_close_matches(column.lower(), columns, n=3, cutoff=0.4)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise UserError(f"FairFace: no column {column!r} (the {role} {spec!r}); {hint}the label columns are "
                        f"{', '.join(columns)}; write 'column' or 'column=value'")
    values = FAIRFACE_VALUES[column]
    if not eq:
        if role == "target" and len(values) != 2:
            raise UserError(f"FairFace: the target must be a two-valued column (gender) and {column!r} has "
                            f"{len(values)} values; pick one value against the rest, e.g. "
                            f"target='{column}={values[1]}'")
        if column not in FAIRFACE_DEFAULT:
            raise UserError(f"FairFace: {column!r} has {len(values)} values; name the one coded 1 as the "
                            f"{role}, e.g. '{column}={values[3]}' (values: {', '.join(values)})")
        return column, FAIRFACE_DEFAULT[column]
    found = [v for v in values if _fairface_key(v) == _fairface_key(value)]
    if not found:
        close = _fairface_close(value, values, 3, 0.4)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise UserError(f"FairFace: column {column!r} has no value {value!r} (the {role} {spec!r}); {hint}"
                        f"its values are {', '.join(values)}")
    return column, found[0]


def _fairface_csv(path: Path, required: Sequence[str]) -> tuple[list[str], Rows]:
    header, rows = _read_csv(path, required, FAIRFACE_SRC)
    if not rows:
        raise DataFormatError(f"{path} has a header but no rows; the file is incomplete, get the full one "
                              f"from {FAIRFACE_SRC}")
    return header, rows


def _fairface_values(path: Path, header: list[str], rows: Rows, column: str) -> np.ndarray:
    """Column ``column`` as int64 indices into ``FAIRFACE_VALUES[column]`` (``service_test``: any case);
    a value outside that list is a DataFormatError naming the first bad line and how many there are."""
    allowed = FAIRFACE_VALUES[column]
    lookup = {v: k for k, v in enumerate(allowed)}
    fold = str.capitalize if column == "service_test" else str  # pandas writes True / False; TRUE is fine
    j = header.index(column)
    out = np.asarray([lookup.get(fold(r[j].strip()), -1) for _, r in rows], dtype=np.int64)
    bad = np.flatnonzero(out < 0)
    if len(bad):
        line, r = rows[int(bad[0])]
        value = r[j].strip()
        close = _fairface_close(value, allowed, 1, 0.5)
        hint = f" (closest: {close[0]})" if close else ""
        raise DataFormatError(f"{path} line {line}: column {column!r} holds {value!r}{hint}, expected one of "
                              f"{', '.join(allowed)} ({len(bad)} rows with unknown values); get a fresh copy "
                              f"from {FAIRFACE_SRC}")
    return out


def _fairface_names(path: Path, header: list[str], rows: Rows) -> list[str]:
    j = header.index("file")
    names = [r[j].strip() for _, r in rows]
    for (line, _), name in zip(rows, names, strict=True):
        if not name:
            raise DataFormatError(f"{path} line {line}: column 'file' is empty; get a fresh copy from "
                                  f"{FAIRFACE_SRC}")
    return names


def _fairface_base(root: Path, label_dir: Path, first: str, listed_in: Path) -> Path:
    """The folder the ``file`` column (``train/1.jpg``) is relative to: the first of ``root``, the labels'
    folder and the image folders under either that holds the first listed image."""
    bases: list[Path] = []
    for base in (root, label_dir, *(d / sub for d in (label_dir, root) for sub in FAIRFACE_DIRS)):
        if base not in bases:
            bases.append(base)
    for base in bases:
        if os.path.exists(os.path.join(base, first)):
            return base
    raise DataFormatError(
        f"{listed_in}: listed images not found, e.g. {first!r} under none of {', '.join(map(str, bases))}; "
        f"unzip {FAIRFACE_DIRS[0]}.zip (or the 1.25 one) from {FAIRFACE_SRC} beside the label files")


def read_fairface(root: PathLike, target: str = "gender", spurious: str | Sequence[str] = "race",
                  val_share: float = FAIRFACE_VAL_SHARE, seed: int = FAIRFACE_VAL_SEED) -> RobustTable:
    """FairFace (Karkkainen & Joo, WACV 2021; ``FAIRFACE_SRC``) with ``target`` as the label and
    ``spurious`` (one spec or several) as the attributes.

    Files: ``fairface_label_train.csv`` and ``fairface_label_val.csv`` with the columns ``file, age,
    gender, race, service_test`` (only ``file`` and the columns used are required); ``file`` is
    ``train/1.jpg`` / ``val/1.jpg``. The README's image zips (Padding=0.25 and Padding=1.25) are
    ``fairface-img-margin025-trainval.zip`` and ``fairface-img-margin125-trainval.zip``, unzipped into
    folders of those names holding ``train/`` and ``val/``. ``root`` is the folder holding the label files
    or its parent, when they lie in ``root/fairface-img-margin025-trainval/`` (then in ``..125..``), or
    one of those image folders with the label files in its parent. Images are relative to the first of
    ``root``, the labels' folder, and ``fairface-img-margin025-trainval/`` then ``..125..`` under either,
    that holds the first listed image: with both zips beside the labels, 0.25 (the paper's main
    experiments) is read unless ``root`` is the 1.25 folder.

    Binarisation (a :class:`RobustTable` attribute is 0/1): a spec is ``column`` or ``column=value``,
    the row coded 1 when the column holds that value (case, ``_`` and spaces do not matter:
    ``race=east_asian``). Defaults: ``gender`` -> Female (Male 0, Female 1), ``race`` -> White (White vs
    the 6 other races), ``service_test`` -> True; ``age`` needs a value (``age=20-29``). The attribute is
    named ``<column>_<value>`` in lower case (``race_white``, ``race_east_asian``, ``gender_female``).
    The target must be two-valued: ``gender`` (class names ``gender_male``, ``gender_female``), or one
    value against the rest (``target="race=Black"``: ``race_not_black``, ``race_black``); a bare
    ``race`` or ``age`` target is a UserError. Several specs of one column (``["race=White",
    "race=Black"]``) are allowed; the target's column is not.

    Splits: FairFace has train and val only, so ``tests = {"test": the official val file}``, ``val`` a
    seeded random ``val_share`` of the train file's rows (``np.random.default_rng(seed)``, not
    stratified; at least 1 row, and at least 1 left) and ``train`` the rest, each in file order. Values
    are checked against the public lists (gender Male / Female; the 7 races; the 9 age bins; service_test
    True / False); a bad value, a missing file or column, an empty file or a missing image is a
    :class:`DataFormatError` naming the file.
    """
    if not 0.0 < float(val_share) < 1.0:
        raise UserError(f"FairFace: val_share must be in (0, 1), not {val_share}")
    y_col, y_value = _fairface_code(target, "target")
    specs = [spurious] if isinstance(spurious, str) else list(spurious)
    codes = [_fairface_code(s, "spurious attribute") for s in specs]
    if any(c == y_col for c, _ in codes) or len(set(codes)) != len(codes):
        raise UserError(f"FairFace: the spurious attributes {specs} must differ from each other and use "
                        f"another column than the target {target!r}")
    root = _abs(Path(root))
    dirs = [root, *(root / d for d in FAIRFACE_DIRS)] + ([root.parent] if root.name in FAIRFACE_DIRS else [])
    label_dir = next((d for d in dirs if any((d / f).is_file() for f in FAIRFACE_LABELS)), None)
    if label_dir is None:
        raise DataFormatError(
            f"FairFace labels not found: no {FAIRFACE_LABELS[0]} in {', '.join(map(str, dirs))}; pass the "
            f"folder holding {FAIRFACE_LABELS[0]} and {FAIRFACE_LABELS[1]} (or its parent) from "
            f"{FAIRFACE_SRC}")
    used = list(dict.fromkeys([y_col, *(c for c, _ in codes)]))
    required = ["file", *used]
    tables = []
    for name in FAIRFACE_LABELS:
        path = label_dir / name
        header, rows = _fairface_csv(path, required)
        values = {c: _fairface_values(path, header, rows, c) for c in used}
        tables.append((path, _fairface_names(path, header, rows), values))
    train_csv, val_csv = (path for path, _, _ in tables)
    base = _fairface_base(root, label_dir, tables[0][1][0], train_csv)
    splits = []
    for path, names, values in tables:
        y = (values[y_col] == FAIRFACE_VALUES[y_col].index(y_value)).astype(np.int64)
        cols = [(values[c] == FAIRFACE_VALUES[c].index(v)).astype(np.int64) for c, v in codes]
        attrs = np.stack(cols, axis=1) if cols else np.zeros((len(names), 0), dtype=np.int64)
        splits.append(Split(y, attrs, _image_paths(base, names, path, FAIRFACE_SRC)))
    full, test = splits
    n = len(full)
    if n < 2:
        raise DataFormatError(f"{train_csv} has {n} row; at least 2 are needed to hold out a validation "
                              f"share; get the full file from {FAIRFACE_SRC}")
    n_val = min(n - 1, max(1, int(round(float(val_share) * n))))
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(int(seed)).permutation(n)[:n_val]] = True
    train, val = full.subset(np.flatnonzero(~held)), full.subset(np.flatnonzero(held))
    if len(FAIRFACE_VALUES[y_col]) == 2:
        other = next(v for v in FAIRFACE_VALUES[y_col] if v != y_value)
        classes = [f"{y_col}_{_fairface_slug(other)}", f"{y_col}_{_fairface_slug(y_value)}"]
    else:
        classes = [f"{y_col}_not_{_fairface_slug(y_value)}", f"{y_col}_{_fairface_slug(y_value)}"]
    attr_names = [f"{c}_{_fairface_slug(v)}" for c, v in codes]
    return RobustTable("fairface", "image", classes, attr_names, train, val, {"test": test}, {},
                       [train_csv, val_csv])
