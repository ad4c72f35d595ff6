"""Image robustness readers (Waterbirds, SubpopBench, CelebA, ImageNet-9), the watermark, the decode
cache and the synthetic Waterbirds writer, on hand-made tiny files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import write_csv as _csv
from PIL import Image

import harness.datasets.robust_images as ri
from harness.datasets.robust_common import Split, group_ids
from harness.datasets.robust_images import (
    SyntheticImages,
    decode_images,
    images_fingerprint,
    read_celeba,
    read_imagenet9,
    read_subpop_metadata,
    read_waterbirds,
    stamp_seed,
    stamp_text,
    watermark_text,
    write_synthetic_waterbirds,
)
from harness.errors import DataFormatError


def _image(path: Path, colour: tuple[int, int, int] = (90, 140, 60),
           size: tuple[int, int] = (24, 20)) -> Path:
    """A tiny image (JPEG or PNG by suffix) with a little structure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8) + np.asarray(colour, np.uint8)
    arr[: size[1] // 2, : size[0] // 2] = 255 - arr[: size[1] // 2, : size[0] // 2]
    Image.fromarray(arr).save(path)
    return path


def _error(call, *args, **kw) -> str:
    """The message of the DataFormatError ``call`` raises; it must be one line."""
    with pytest.raises(DataFormatError) as info:
        call(*args, **kw)
    text = str(info.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------------------------------
# Waterbirds
# --------------------------------------------------------------------------------------------------

WB_ROWS = [  # img_id, img_filename, y, split, place, place_filename
    [1, "001.Albatross/a1.jpg", 1, 0, 1, "/o/ocean/1.jpg"],
    [2, "001.Albatross/a2.jpg", 1, 0, 0, "/f/forest/2.jpg"],
    [3, "002.Sparrow/s1.jpg", 0, 0, 0, "/f/forest/3.jpg"],
    [4, "002.Sparrow/s2.jpg", 0, 1, 0, "/f/forest/4.jpg"],
    [5, "001.Albatross/a3.jpg", 1, 1, 1, "/o/ocean/5.jpg"],
    [6, "002.Sparrow/s3.jpg", 0, 2, 1, "/o/ocean/6.jpg"],
    [7, "001.Albatross/a4.jpg", 1, 2, 0, "/f/forest/7.jpg"],
    [8, "002.Sparrow/s4.jpg", 0, 2, 0, "/f/forest/8.jpg"],
]


def _waterbirds(tmp_path: Path, rows=None, header=None, extra=None) -> Path:
    """A tiny ``waterbird_complete95_forest2water2/`` under ``tmp_path``; returns that folder."""
    root = tmp_path / ri.WATERBIRDS_DIR
    rows = [list(r) for r in (rows or WB_ROWS)]
    header = list(header or ri.WATERBIRDS_COLUMNS)
    for name, values in (extra or {}).items():
        header.append(name)
        for r, v in zip(rows, values, strict=True):
            r.append(v)
    for r in rows:
        _image(root / r[1])
    _csv(root / "metadata.csv", header, rows)
    return root


def test_waterbirds_reads_the_folder_or_its_parent(tmp_path):
    root = _waterbirds(tmp_path)
    for where in (root, tmp_path):
        t = read_waterbirds(where)
        assert (t.name, t.modality, t.class_names, t.attr_names) == ("waterbirds", "image",
                                                                     ["landbird", "waterbird"], ["place"])
        assert [len(t.train), len(t.val), len(t.tests["test"])] == [3, 2, 3]
        assert list(t.tests) == ["test"] and t.broken == {}
        assert t.files == [root / "metadata.csv"]
        assert t.train.y.tolist() == [1, 1, 0] and t.train.attrs[:, 0].tolist() == [1, 0, 0]
        assert t.tests["test"].paths[0] == root / "002.Sparrow/s3.jpg"
        assert all(p.is_absolute() and p.exists() for p in t.train.paths)
        assert t.train.y.dtype == np.int64 and t.train.attrs.shape == (3, 1)


def test_waterbirds_extra_binary_columns_are_attributes(tmp_path):
    root = _waterbirds(tmp_path, extra={"mark": [0, 1, 0, 1, 1, 0, 0, 1], "detail": [3, 1, 0, 4, 2, 0, 1, 5],
                                        "Unnamed: 0": [0, 1, 0, 1, 0, 1, 0, 1]})
    t = read_waterbirds(root)
    assert t.attr_names == ["place", "mark"]
    assert t.train.attrs.tolist() == [[1, 0], [0, 1], [0, 0]]


@pytest.mark.parametrize("case, expected", [
    ("no_metadata", ["metadata.csv", "group_DRO"]),
    ("no_place", ["missing column 'place'", "metadata.csv"]),
    ("bad_split", ["line 4", "'split'", "'3'"]),
    ("bad_y", ["line 2", "'y'", "'bird'"]),
    ("absent_image", ["2 of 8 listed images are missing", "a2.jpg"]),
    ("empty_val", ["val split", "metadata.csv"]),
])
def test_waterbirds_errors_name_the_file_and_column(tmp_path, case, expected):
    rows = [list(r) for r in WB_ROWS]
    header = list(ri.WATERBIRDS_COLUMNS)
    if case == "no_place":
        header.remove("place")
        rows = [r[:4] + r[5:] for r in rows]
    elif case == "bad_split":
        rows[2][3] = 3
    elif case == "bad_y":
        rows[0][2] = "bird"
    elif case == "empty_val":
        for r in rows:
            r[3] = 0 if r[3] == 1 else r[3]
    root = _waterbirds(tmp_path, rows, header)
    if case == "no_metadata":
        (root / "metadata.csv").unlink()
    elif case == "absent_image":
        (root / "001.Albatross/a2.jpg").unlink()
        (root / "002.Sparrow/s4.jpg").unlink()
    text = _error(read_waterbirds, root)
    for part in expected:
        assert part in text


# --------------------------------------------------------------------------------------------------
# SubpopBench
# --------------------------------------------------------------------------------------------------

def _subpop(tmp_path: Path, a=(0, 1, 1, 0, 0, 1), name="waterbirds", nested=True) -> Path:
    """SubpopBench's waterbirds layout: ``root/waterbirds/metadata_waterbirds.csv``, images relative to
    ``root/waterbirds/waterbird_complete95_forest2water2`` (``nested``) or to ``root``."""
    d = tmp_path / name
    base = d / ri.WATERBIRDS_DIR if nested else tmp_path
    rows = []
    for i, (split, y) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]):
        _image(base / f"c{y}/img{i}.jpg")
        rows.append([i, f"c{y}/img{i}.jpg", split, y, a[i]])
    _csv(d / f"metadata_{name}.csv", ["id", "filename", "split", "y", "a"], rows)
    return tmp_path


@pytest.mark.parametrize("nested", [True, False])
def test_subpop_reads_metadata_and_finds_the_image_folder(tmp_path, nested):
    root = _subpop(tmp_path, nested=nested)
    t = read_subpop_metadata(root, "waterbirds")
    assert (t.name, t.class_names, t.attr_names) == ("subpop-waterbirds", ["class0", "class1"], ["attr"])
    assert [len(t.train), len(t.val), len(t.tests["test"])] == [2, 2, 2]
    assert t.val.attrs[:, 0].tolist() == [1, 0]
    assert all(p.exists() for p in t.tests["test"].paths)
    assert t.files == [root / "waterbirds" / "metadata_waterbirds.csv"]


def test_subpop_errors(tmp_path):
    text = _error(read_subpop_metadata, tmp_path, "celeba")
    assert "metadata_celeba.csv" in text and "SubpopBench" in text
    root = _subpop(tmp_path / "multi", a=(0, 1, 2, 0, 1, 2))
    text = _error(read_subpop_metadata, root, "waterbirds")
    assert "only binary attributes" in text and "metadata_waterbirds.csv" in text
    meta = _subpop(tmp_path / "nocol") / "waterbirds" / "metadata_waterbirds.csv"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join(",".join(line.split(",")[:4]) for line in lines) + "\n")
    assert "missing column 'a'" in _error(read_subpop_metadata, tmp_path / "nocol", "waterbirds")


# --------------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------------

CELEBA_NAMES = ["Bald", "Blond_Hair", "Male", "Smiling"]
CELEBA_VALUES = [[-1, 1, -1, 1], [-1, -1, 1, 1], [1, -1, 1, -1], [-1, 1, -1, -1], [-1, -1, -1, 1],
                 [-1, 1, 1, 1], [-1, -1, 1, -1], [-1, 1, -1, 1]]
CELEBA_PARTS = [0, 0, 0, 1, 1, 2, 2, 2]


def _celeba(root: Path, variant: str = "txt", nested: bool = False, values=None, count=None) -> Path:
    values = values or CELEBA_VALUES
    files = [f"{i + 1:06d}.jpg" for i in range(len(values))]
    image_dir = root / "img_align_celeba" / ("img_align_celeba" if nested else "")
    for f in files:
        _image(image_dir / f)
    if variant == "txt":
        lines = [str(count if count is not None else len(files)), " ".join(CELEBA_NAMES) + " "]
        lines += [f"{f} " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, values, strict=True)]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{f} {p}\n" for f, p in zip(files, CELEBA_PARTS, strict=True)))
    else:
        _csv(root / "list_attr_celeba.csv", ["image_id", *CELEBA_NAMES],
             [[f, *row] for f, row in zip(files, values, strict=True)])
        _csv(root / "list_eval_partition.csv", ["image_id", "partition"],
             [[f, p] for f, p in zip(files, CELEBA_PARTS, strict=True)])
    return root


@pytest.mark.parametrize("variant, nested", [("txt", False), ("csv", True), ("txt", True)])
def test_celeba_txt_and_kaggle_csv(tmp_path, variant, nested):
    root = _celeba(tmp_path, variant, nested)
    t = read_celeba(root)
    assert (t.name, t.class_names, t.attr_names) == ("celeba", ["not_Blond_Hair", "Blond_Hair"], ["Male"])
    assert t.train.y.tolist() == [1, 0, 0] and t.train.attrs[:, 0].tolist() == [0, 1, 1]
    assert [len(t.val), len(t.tests["test"])] == [2, 3]
    assert t.train.paths[0].parent.name == "img_align_celeba" and t.train.paths[0].exists()
    assert t.files[0].name == f"list_attr_celeba.{variant}"
    several = read_celeba(root, target="Smiling", spurious=["Male", "Bald"])
    assert several.attr_names == ["Male", "Bald"] and several.n_groups == 8
    assert several.train.attrs.tolist() == [[0, 0], [1, 0], [1, 1]] and several.train.y.tolist() == [1, 1, 0]


def test_celeba_errors(tmp_path):
    root = _celeba(tmp_path / "ok")
    text = _error(read_celeba, root, target="Blonde_Hair")
    assert "'Blonde_Hair'" in text and "Blond_Hair" in text and "list_attr_celeba.txt" in text
    assert "Male" in _error(read_celeba, root, spurious="male")
    (root / "img_align_celeba" / "000002.jpg").unlink()
    text = _error(read_celeba, root)
    assert "1 of 8 listed images are missing" in text and "000002.jpg" in text
    (root / "list_eval_partition.txt").unlink()
    assert "list_eval_partition" in _error(read_celeba, root)
    bad = [list(r) for r in CELEBA_VALUES]
    bad[3][1] = 2
    text = _error(read_celeba, _celeba(tmp_path / "bad", values=bad))
    assert "'Blond_Hair' of 000004.jpg is '2'" in text
    assert "line 1 says 9 images" in _error(read_celeba, _celeba(tmp_path / "count", count=9))
    root = _celeba(tmp_path / "part")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 5\n")
    assert "partition of 000002.jpg is '5'" in _error(read_celeba, root)


# --------------------------------------------------------------------------------------------------
# ImageNet-9
# --------------------------------------------------------------------------------------------------

IN9_CLASSES = ["00_dog", "01_bird", "02_wheeled vehicle"]
IN9_COLOURS = [(200, 60, 60), (60, 200, 60), (60, 60, 200)]


def _in9(root: Path, train: str = "original/train", n_train: int = 10, val: str | None = None,
         tests: str = "", skip: str = "") -> Path:
    for k, c in enumerate(IN9_CLASSES):
        for i in range(n_train):
            _image(root / train / c / f"n{k}_{i}.JPEG", IN9_COLOURS[k], (40, 32))
        if val:
            _image(root / val / c / f"v{k}.JPEG", IN9_COLOURS[k], (40, 32))
        for s in ("original", "mixed_same", "mixed_rand"):
            if s != skip:
                for i in range(2):
                    _image(root / tests / s / "val" / c / f"t{k}_{i}.JPEG", IN9_COLOURS[k], (40, 32))
    return root


def test_imagenet9_sets_attributes_and_marks(tmp_path):
    root = _in9(tmp_path)
    t = read_imagenet9(root, mark_seed=3)
    assert t.class_names == ["dog", "bird", "wheeled vehicle"] and t.attr_names == ["background", "watermark"]
    assert list(t.tests) == ["test", "mixed_same", "broken_background", "broken_watermark", "all_broken"]
    assert t.broken == {"background": "broken_background", "watermark": "broken_watermark",
                        "all": "all_broken"}
    # the seeded 10% of each class is the validation split, disjoint from training
    assert len(t.train) == 27 and len(t.val) == 3 and sorted(t.val.y.tolist()) == [0, 1, 2]
    assert not set(t.train.paths) & set(t.val.paths)
    assert read_imagenet9(root, mark_seed=3).val.paths == t.val.paths
    expected = {"test": (1, 1), "mixed_same": (1, 1), "broken_background": (0, 1), "broken_watermark": (1, 0),
                "all_broken": (0, 0)}
    for name, (bg, wm) in expected.items():
        s = t.tests[name]
        assert len(s) == 6 and s.mark_seed == 3
        assert (s.attrs[:, 0] == bg).all() and (s.attrs[:, 1] == wm).all()
        own = [watermark_text(int(k)) for k in s.y]
        assert (s.marks == own) if wm else all(m != o for m, o in zip(s.marks, own, strict=True))
        assert set(s.marks) <= {watermark_text(k) for k in range(3)}
    assert t.tests["test"].paths == t.tests["broken_watermark"].paths
    assert "mixed_rand" in str(t.tests["all_broken"].paths[0])
    assert t.train.marks == [watermark_text(int(k)) for k in t.train.y] and (t.train.attrs == 1).all()
    plain = read_imagenet9(root, marks=False)
    assert plain.attr_names == ["background"] and plain.train.marks is None
    assert list(plain.tests) == ["test", "mixed_same", "broken_background"]
    assert plain.broken == {"background": "broken_background"}


def test_imagenet9_in9l_layout_uses_its_validation(tmp_path):
    root = _in9(tmp_path, train="in9l/train", n_train=3, val="in9l/val", tests="bg_challenge")
    t = read_imagenet9(root)
    assert len(t.train) == 9 and len(t.val) == 3
    assert all("in9l/val" in str(p) for p in t.val.paths)
    assert all("bg_challenge" in str(p) for p in t.tests["test"].paths)


def test_imagenet9_errors(tmp_path):
    text = _error(read_imagenet9, _in9(tmp_path / "a", skip="mixed_rand"))
    assert "mixed_rand" in text and "backgrounds_challenge" in text
    text = _error(read_imagenet9, tmp_path / "empty")
    assert "original/train" in text and "backgrounds_challenge" in text


def test_watermark_is_deterministic_visible_and_per_class():
    words = [watermark_text(k) for k in range(12)]
    assert len(set(words)) == 12
    img = Image.new("RGB", (160, 120), (40, 90, 40))
    a, b = stamp_text(img, "Lumora", 7), stamp_text(img, "Lumora", 7)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    diff = np.abs(np.asarray(a, np.int16) - np.asarray(img, np.int16)).sum(-1) > 0
    assert 0.005 < diff.mean() < 0.5  # visible, and only where stamped
    assert np.asarray(img).max() == 90  # the input is not altered
    other = stamp_text(img, "Vextrin", 7)
    assert not np.array_equal(np.asarray(a), np.asarray(other))
    placed = {tuple(np.argwhere(np.asarray(stamp_text(img, "Lumora", s))[..., 0] != 40).mean(0).round())
              for s in range(8)}
    assert len(placed) > 2  # positions vary with the seed
    assert stamp_seed(0, "/x/00_dog/a.JPEG") == stamp_seed(0, "/elsewhere/00_dog/a.JPEG")
    assert stamp_seed(0, "/x/00_dog/a.JPEG") != stamp_seed(1, "/x/00_dog/a.JPEG")


def test_decoded_marks_differ_from_plain_images(tmp_path):
    root = _in9(tmp_path / "in9", n_train=10)
    marked = read_imagenet9(root).tests["test"]
    plain = read_imagenet9(root, marks=False).tests["test"]
    a = decode_images(marked, 32, tmp_path / "cache")
    b = decode_images(plain, 32, tmp_path / "cache")
    assert a.shape == b.shape == (6, 32, 32, 3)
    assert all(not np.array_equal(a[i], b[i]) for i in range(6))
    again = decode_images(read_imagenet9(root).tests["broken_watermark"], 32, tmp_path / "cache")
    assert not np.array_equal(a, again)  # other texts, other pixels, another cache file
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 3


# --------------------------------------------------------------------------------------------------
# decode cache
# --------------------------------------------------------------------------------------------------

def _split(paths: list[Path]) -> Split:
    return Split(np.zeros(len(paths), np.int64), np.zeros((len(paths), 1), np.int64), paths)


def test_decode_cache_shape_reuse_and_corrupt_file(tmp_path, monkeypatch, capsys):
    paths = [_image(tmp_path / "img" / f"{i}.png", (20 * i, 50, 90), (30 + i, 20)) for i in range(5)]
    split = _split(paths)
    arr = decode_images(split, 16, tmp_path / "cache")
    assert arr.shape == (5, 16, 16, 3) and arr.dtype == np.uint8 and isinstance(arr, np.memmap)
    assert arr[2, 12, 12].tolist() == [40, 50, 90]  # the bottom-right quarter keeps its colour
    (cached,) = (tmp_path / "cache").glob("images-5x16-*.npy")

    def refuse(*args, **kw):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(ri, "decode_image", refuse)
    assert np.array_equal(decode_images(split, 16, tmp_path / "cache"), arr)
    monkeypatch.undo()
    expected = np.array(arr)
    cached.write_bytes(cached.read_bytes()[:200])  # truncated
    rebuilt = decode_images(split, 16, tmp_path / "cache")
    assert np.array_equal(rebuilt, expected)
    assert cached.with_name(cached.name + ".corrupt").exists()
    assert "set aside" in capsys.readouterr().err
    np.save(cached, np.zeros((5, 8, 8, 3), np.uint8))  # a readable file of the wrong shape
    assert np.array_equal(decode_images(split, 16, tmp_path / "cache"), expected)


def test_images_fingerprint_uses_relative_paths_and_sizes(tmp_path):
    paths = [_image(tmp_path / "a" / "x" / f"{i}.png", (10 * i, 0, 0)) for i in range(3)]
    moved = [tmp_path / "b" / "x" / p.name for p in paths]
    for p, q in zip(paths, moved, strict=True):
        q.parent.mkdir(parents=True, exist_ok=True)
        q.write_bytes(p.read_bytes())
    assert images_fingerprint(paths) == images_fingerprint(moved)
    before = images_fingerprint(paths)
    with open(paths[1], "ab") as fh:
        fh.write(b"\0")
    assert images_fingerprint(paths) != before
    assert images_fingerprint(paths[::-1]) != images_fingerprint(paths)


def test_decode_errors_and_progress(tmp_path, monkeypatch, capsys):
    good = [_image(tmp_path / f"{i}.png") for i in range(8)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    text = _error(decode_images, _split([*good, bad]), 8, tmp_path / "cache")
    assert "broken.jpg" in text
    assert not list((tmp_path / "cache").glob("*.npy")) and not list((tmp_path / "cache").glob(".*tmp"))
    monkeypatch.setattr(ri, "PROGRESS_MIN", 4)
    decode_images(_split(good), 8, tmp_path / "cache")
    err = capsys.readouterr().err
    assert "decoding 8 images at 8px" in err and "100%" in err


# --------------------------------------------------------------------------------------------------
# synthetic Waterbirds
# --------------------------------------------------------------------------------------------------

def test_synthetic_defaults_are_the_documented_ones():
    c = SyntheticImages()
    assert (c.n_train, c.n_val, c.n_test, c.size, c.background_rate, c.mark_rate, c.seed) == \
        (2000, 800, 1200, 64, 0.95, 0.85, 0)


def test_synthetic_waterbirds_layout_rates_and_balanced_test(tmp_path):
    cfg = SyntheticImages(n_train=200, n_val=80, n_test=80, size=32)
    root = write_synthetic_waterbirds(tmp_path, cfg)
    assert root == tmp_path / ri.WATERBIRDS_DIR
    with open(root / "metadata.csv") as fh:
        assert next(csv.reader(fh)) == [*ri.WATERBIRDS_COLUMNS, "mark"]
    assert ri.WATERBIRDS_COLUMNS == ("img_id", "img_filename", "y", "split", "place", "place_filename")
    t = read_waterbirds(tmp_path)
    assert t.attr_names == ["place", "mark"] and t.n_groups == 8
    assert [len(t.train), len(t.val), len(t.tests["test"])] == [200, 80, 80]
    with Image.open(t.train.paths[0]) as im:
        assert im.size == (32, 32) and im.format == "JPEG"
    for s in (t.train, t.val):
        assert abs((s.attrs[:, 0] == s.y).mean() - 0.95) < 0.02
        assert abs((s.attrs[:, 1] == s.y).mean() - 0.85) < 0.02
        assert abs(s.y.mean() - 0.5) < 0.02
    test = t.tests["test"]
    assert np.bincount(group_ids(test.y, test.attrs), minlength=8).tolist() == [10] * 8
    assert (test.attrs[:, 0] == test.y).mean() == 0.5 and (test.attrs[:, 1] == test.y).mean() == 0.5
    # the shortcuts are in the pixels: water is bluer than land, a mark brightens a corner
    px = decode_images(test, 32, tmp_path / "cache").astype(np.float32)
    blue = px[..., 2].mean((1, 2)) - px[..., 1].mean((1, 2))
    assert blue[test.attrs[:, 0] == 1].mean() > blue[test.attrs[:, 0] == 0].mean() + 20
    corners = np.stack([px[:, :6, :6], px[:, :6, -6:], px[:, -6:, :6], px[:, -6:, -6:]], 1)
    peak = corners.mean(-1).max((2, 3)).max(1)
    assert peak[test.attrs[:, 1] == 1].mean() > peak[test.attrs[:, 1] == 0].mean() + 30
    same = write_synthetic_waterbirds(tmp_path / "again", cfg)
    assert (same / "metadata.csv").read_text() == (root / "metadata.csv").read_text()


def test_synthetic_rejects_bad_config():
    from harness.errors import UserError

    with pytest.raises(UserError, match="mark_rate"):
        SyntheticImages(mark_rate=1.5)
    with pytest.raises(UserError, match="n_test"):
        SyntheticImages(n_test=4)


def test_waterbirds_paths_are_absolute_from_a_relative_root(tmp_path, monkeypatch):
    _waterbirds(tmp_path)
    monkeypatch.chdir(tmp_path)
    t = read_waterbirds(Path(ri.WATERBIRDS_DIR))
    assert all(os.path.isabs(p) for p in t.train.paths)
