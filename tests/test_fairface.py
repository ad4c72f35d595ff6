"""The FairFace reader (:func:`harness.datasets.robust_images.read_fairface`) on hand-made tiny layouts:
the label files, the binarisation of target and spurious columns, the held-out val split, the folders
``root`` may name, and one-line errors for bad specs and bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import write_csv as _csv
from PIL import Image

import harness.datasets.robust_images as ri
from harness.datasets.robust_common import group_ids
from harness.datasets.robust_images import FAIRFACE_SRC, read_fairface
from harness.errors import DataFormatError, UserError

COLUMNS = ["file", "age", "gender", "race", "service_test"]
TRAIN = [  # file, age, gender, race, service_test (the public files' spelling)
    ["train/1.jpg", "50-59", "Male", "East Asian", "True"],
    ["train/2.jpg", "30-39", "Female", "Indian", "False"],
    ["train/3.jpg", "3-9", "Female", "Black", "False"],
    ["train/4.jpg", "20-29", "Male", "Indian", "True"],
    ["train/5.jpg", "20-29", "Female", "Indian", "True"],
    ["train/6.jpg", "20-29", "Male", "White", "True"],
    ["train/7.jpg", "10-19", "Male", "White", "False"],
    ["train/8.jpg", "30-39", "Female", "Middle Eastern", "True"],
    ["train/9.jpg", "more than 70", "Female", "Latino_Hispanic", "False"],
    ["train/10.jpg", "0-2", "Male", "Southeast Asian", "True"],
]
VAL = [
    ["val/1.jpg", "3-9", "Male", "East Asian", "False"],
    ["val/2.jpg", "50-59", "Female", "White", "True"],
    ["val/3.jpg", "30-39", "Male", "White", "True"],
    ["val/4.jpg", "20-29", "Female", "Black", "False"],
]


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    """One tiny 4x4 JPEG, written as every image."""
    arr = np.zeros((4, 4, 3), np.uint8) + np.asarray((120, 90, 60), np.uint8)
    arr[:2, :2] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _fairface(labels: Path, jpeg: bytes, images: Path | None = None, train=None, val=None,
              header=None) -> Path:
    """The label files in ``labels`` and their images under ``images`` (default: ``labels``, as after
    unzipping the image zip beside the label files); returns ``labels``."""
    images = images or labels
    for rows in (TRAIN, VAL):
        for r in rows:
            p = images / r[0]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(jpeg)
    _csv(labels / "fairface_label_train.csv", header or COLUMNS, train or TRAIN)
    _csv(labels / "fairface_label_val.csv", header or COLUMNS, val or VAL)
    return labels


def _error(kind: type[Exception], *args, **kw) -> str:
    """The message of the ``kind`` error ``read_fairface`` raises: one line, no chained exception (the CLI
    prints it as ``error: <message>``, without a traceback)."""
    with pytest.raises(kind) as info:
        read_fairface(*args, **kw)
    assert isinstance(info.value, UserError)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    text = str(info.value)
    assert text and "\n" not in text
    return text


def _files(split) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in split.paths]


# --------------------------------------------------------------------------------------------------
# a good layout
# --------------------------------------------------------------------------------------------------

def test_reads_gender_by_race_white(tmp_path, jpeg):
    root = _fairface(tmp_path / "fairface", jpeg)
    t = read_fairface(root)
    assert (t.name, t.modality) == ("fairface", "image")
    assert t.class_names == ["gender_male", "gender_female"] and t.attr_names == ["race_white"]
    assert t.n_groups == 4 and list(t.tests) == ["test"] and t.broken == {}
    assert t.files == [root / "fairface_label_train.csv", root / "fairface_label_val.csv"]
    # test = the official val file, in file order
    test = t.tests["test"]
    assert _files(test) == ["val/1.jpg", "val/2.jpg", "val/3.jpg", "val/4.jpg"]
    assert test.y.tolist() == [0, 1, 0, 1] and test.attrs[:, 0].tolist() == [0, 1, 1, 0]
    assert test.y.dtype == np.int64 and test.attrs.shape == (4, 1)
    assert group_ids(test.y, test.attrs).tolist() == [0, 3, 1, 2]
    assert all(p.is_absolute() and p.exists() for p in test.paths)
    assert test.paths[0] == root / "val" / "1.jpg"
    # train + val = the train file: round(0.1 * 10) = 1 row held out, the rest in file order
    assert [len(t.train), len(t.val)] == [9, 1]
    names = [r[0] for r in TRAIN]
    assert sorted(_files(t.train) + _files(t.val)) == sorted(names)
    assert _files(t.train) == [n for n in names if n not in _files(t.val)]
    for split in (t.train, t.val):
        for p, y, a in zip(split.paths, split.y, split.attrs[:, 0], strict=True):
            row = TRAIN[names.index(f"train/{p.name}")]
            assert (y, a) == (int(row[2] == "Female"), int(row[3] == "White"))


def test_val_split_is_seeded(tmp_path, jpeg):
    root = _fairface(tmp_path, jpeg)
    a, b = read_fairface(root, seed=3, val_share=0.3), read_fairface(root, seed=3, val_share=0.3)
    assert len(a.val) == 3 and len(a.train) == 7
    assert _files(a.val) == _files(b.val) and _files(a.train) == _files(b.train)
    assert _files(a.val) == sorted(_files(a.val), key=lambda f: int(f[6:-4]))  # file order
    held = {tuple(_files(read_fairface(root, seed=s, val_share=0.3).val)) for s in range(6)}
    assert len(held) > 1  # the seed matters
    assert [len(read_fairface(root, val_share=share).val) for share in (0.01, 0.5, 0.99)] == [1, 5, 9]


def test_binarisation_specs(tmp_path, jpeg):
    root = _fairface(tmp_path, jpeg)
    t = read_fairface(root, spurious=["race=black", "race=East_Asian", "age=20-29", "service_test"])
    assert t.attr_names == ["race_black", "race_east_asian", "age_20-29", "service_test_true"]
    assert t.n_groups == 2 * 2 ** 4
    assert t.tests["test"].attrs.tolist() == [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1], [1, 0, 1, 0]]
    t = read_fairface(root, target="race=Black", spurious="gender")
    assert t.class_names == ["race_not_black", "race_black"] and t.attr_names == ["gender_female"]
    assert t.tests["test"].y.tolist() == [0, 0, 0, 1] and t.tests["test"].attrs[:, 0].tolist() == [0, 1, 0, 1]
    t = read_fairface(root, target="gender=Male", spurious=[])
    assert t.class_names == ["gender_female", "gender_male"] and t.attr_names == [] and t.n_groups == 2
    assert t.tests["test"].y.tolist() == [1, 0, 1, 0] and t.tests["test"].attrs.shape == (4, 0)
    t = read_fairface(root, spurious="age=more_than_70")
    assert t.attr_names == ["age_more_than_70"]


def test_only_the_used_columns_are_required(tmp_path, jpeg):
    cut = [COLUMNS.index(c) for c in ("file", "gender", "race")]
    root = _fairface(tmp_path, jpeg, header=[COLUMNS[j] for j in cut],
                     train=[[r[j] for j in cut] for r in TRAIN], val=[[r[j] for j in cut] for r in VAL])
    assert read_fairface(root).attr_names == ["race_white"]
    assert "missing column 'age'" in _error(DataFormatError, root, spurious="age=3-9")


# --------------------------------------------------------------------------------------------------
# where root points
# --------------------------------------------------------------------------------------------------

M025, M125 = ri.FAIRFACE_DIRS


@pytest.mark.parametrize("layout", ["inside_025", "inside_125", "beside_125", "beside_both", "root_is_125"])
def test_root_may_be_the_parent(tmp_path, jpeg, layout):
    """Labels and images in ``parent/<image folder>/`` (pass ``parent``); labels in ``parent`` beside the
    unzipped image folder(s) (pass ``parent``: 0.25 first); or pass that image folder itself."""
    parent = tmp_path / "data"
    if layout.startswith("inside"):
        folder = parent / (M025 if layout == "inside_025" else M125)
        _fairface(folder, jpeg)
        labels, images, root = folder, folder, parent
    else:
        labels, images = parent, parent / (M025 if layout == "beside_both" else M125)
        _fairface(labels, jpeg, images)
        if layout == "beside_both":
            _fairface(tmp_path / "other", jpeg, parent / M125)
        root = parent / M125 if layout == "root_is_125" else parent
    t = read_fairface(root)
    assert t.files == [labels / "fairface_label_train.csv", labels / "fairface_label_val.csv"]
    assert t.tests["test"].paths[0] == images / "val" / "1.jpg"
    assert len(t.train) + len(t.val) == len(TRAIN)
    if layout == "beside_both":  # the 1.25 folder is read when it is the root
        assert read_fairface(parent / M125).tests["test"].paths[0] == parent / M125 / "val" / "1.jpg"


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, expected", [
    ({"target": "race"}, ["two-valued", "race=Black"]),
    ({"target": "age"}, ["two-valued", "age="]),
    ({"target": "sex"}, ["no column 'sex'", "gender"]),
    ({"spurious": "rase"}, ["no column 'rase'", "'race'"]),
    ({"spurious": "race=Blak"}, ["no value 'Blak'", "'Black'"]),
    ({"spurious": "race=Asian"}, ["no value 'Asian'", "East Asian", "Southeast Asian"]),
    ({"spurious": "age"}, ["'age' has 9 values", "age=20-29"]),
    ({"spurious": "gender"}, ["differ", "'gender'"]),
    ({"spurious": ["race", "race=White"]}, ["differ"]),
    ({"val_share": 0.0}, ["val_share"]),
    ({"val_share": 1.0}, ["val_share"]),
])
def test_spec_errors(tmp_path, jpeg, kw, expected):
    text = _error(UserError, _fairface(tmp_path, jpeg), **kw)
    for part in expected:
        assert part in text, text


@pytest.mark.parametrize("case, file, expected", [
    ("no_labels", "fairface_label_train.csv", ["labels not found", M025]),
    ("no_val_csv", "fairface_label_val.csv", ["not found"]),
    ("no_race_column", "fairface_label_train.csv", ["missing column 'race'"]),
    ("bad_gender", "fairface_label_val.csv", ["line 3", "'gender'", "'F'", "Male, Female", "1 rows"]),
    ("bad_race", "fairface_label_train.csv", ["line 5", "'race'", "'Latino'", "(closest: Latino_Hispanic)",
                                              "2 rows"]),
    ("absent_image", "fairface_label_val.csv", ["1 of 4 listed images are missing", "val/3.jpg"]),
    ("absent_folder", "fairface_label_train.csv", ["listed images not found", "'train/1.jpg'", M025]),
    ("empty_file", "fairface_label_train.csv", ["is empty"]),
    ("header_only", "fairface_label_val.csv", ["no rows"]),
    ("empty_name", "fairface_label_train.csv", ["line 3", "column 'file' is empty"]),
])
def test_file_errors_name_the_file_and_the_source(tmp_path, jpeg, case, file, expected):
    root = _fairface(tmp_path / "ff", jpeg)
    train, val = [list(r) for r in TRAIN], [list(r) for r in VAL]
    if case == "no_labels":
        for name in ri.FAIRFACE_LABELS:
            (root / name).unlink()
    elif case == "no_val_csv":
        (root / file).unlink()
    elif case == "no_race_column":
        _csv(root / file, COLUMNS[:3] + COLUMNS[4:], [r[:3] + r[4:] for r in train])
    elif case == "bad_gender":
        val[1][2] = "F"
        _csv(root / file, COLUMNS, val)
    elif case == "bad_race":
        train[3][3] = train[6][3] = "Latino"
        _csv(root / file, COLUMNS, train)
    elif case == "absent_image":
        (root / "val" / "3.jpg").unlink()
    elif case == "absent_folder":
        for p in (root / "train").iterdir():
            p.unlink()
    elif case == "empty_file":
        (root / file).write_text("")
    elif case == "header_only":
        _csv(root / file, COLUMNS, [])
    elif case == "empty_name":
        train[1][0] = " "
        _csv(root / file, COLUMNS, train)
    text = _error(DataFormatError, root)
    assert file in text and FAIRFACE_SRC in text, text
    for part in expected:
        assert part in text, text


def test_robust_images_reads_the_fairface_layout(tmp_path, jpeg):
    """``layout: fairface`` in a benchmark: the DataModule reads the files through the reader, with
    FairFace's default target and attribute (not CelebA's)."""
    from harness.datasets.robustness import RobustImages

    root = _fairface(tmp_path / "fairface", jpeg)
    dm = RobustImages(data_dir=str(root), layout="fairface", cache_dir=str(tmp_path / "cache"), resolution=8)
    t = dm.table
    assert t.class_names == ["gender_male", "gender_female"] and t.attr_names == ["race_white"]
    dm = RobustImages(data_dir=str(root), layout="fairface", target="race=Black", spurious="gender",
                      cache_dir=str(tmp_path / "cache"), resolution=8)
    assert dm.table.attr_names == ["gender_female"]
