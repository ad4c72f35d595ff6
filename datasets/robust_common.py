"""What every robustness reader returns: splits of labelled examples with spurious attributes.

A reader (images: :mod:`harness.datasets.robust_images`, text:
:mod:`harness.datasets.robust_text`) turns one public layout into a :class:`RobustTable`:
``train`` and ``val`` splits, one or more test sets, the class names, and the names of the
*spurious attributes* annotated per example (Waterbirds' ``place``, CelebA's ``Male``, the
synthetic sets' ``background`` and ``mark``, MNLI's ``negation``...). Every attribute is
binary (0/1), so a group is (label, attribute values) and there are
``n_classes * 2 ** n_attributes`` groups (:func:`group_ids`).

Test sets: ``tests["test"]`` is the in-distribution test set (shortcuts as in training,
or a group-balanced set such as Waterbirds' test split); further entries are explicit
shortcut-broken sets (HANS, PAWS, ImageNet-9 ``mixed_rand``...), and ``broken`` says which
shortcut each one breaks (``{"overlap": "hans"}``; ``"all"`` for a set where every
shortcut is broken). A shortcut without an explicit set is broken by reweighting the
groups of ``tests["test"]`` (:mod:`harness.datasets.robustness`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val")


@dataclass
class Split:
    """One split's examples.

    ``y``: int64 (N,) class index. ``attrs``: int64 (N, A) binary spurious attributes in the
    order of :attr:`RobustTable.attr_names`. Images: ``paths`` (N image files) and, if the
    images must be altered when decoded, ``marks`` (N, per-example watermark text or ``""``)
    with ``mark_seed`` for the stamp's random size, colour and position. Text: ``text_a``
    (premise / first question) and ``text_b`` (hypothesis / second question).
    """

    y: np.ndarray
    attrs: np.ndarray
    paths: list[Path] | None = None
    marks: list[str] | None = None
    mark_seed: int = 0
    text_a: list[str] | None = None
    text_b: list[str] | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> Split:
        """The examples at ``idx`` (an int array), in that order."""
        def pick(v: list | None) -> list | None:
            return None if v is None else [v[i] for i in idx]

        return Split(self.y[idx], self.attrs[idx], pick(self.paths), pick(self.marks),
                     self.mark_seed, pick(self.text_a), pick(self.text_b))


@dataclass
class RobustTable:
    """A robustness data set as read from its raw files (see the module docstring)."""

    name: str  # "waterbirds", "celeba", "subpop", "imagenet9", "mnli", "qqp", ...
    modality: str  # "image" or "text"
    class_names: list[str]
    attr_names: list[str]
    train: Split
    val: Split
    tests: dict[str, Split]  # "test" first: in-distribution; then explicit broken sets
    broken: dict[str, str] = field(default_factory=dict)  # shortcut (attr name or "all") -> test set
    files: list[Path] = field(default_factory=list)  # every raw file read (for the fingerprint)
    # test set -> per model class k, the set's class it counts as (probabilities summed), e.g.
    # HANS' 2 classes under a 3-class MNLI model: {"hans": [0, 1, 1]}
    collapse: dict[str, list[int]] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_groups(self) -> int:
        return self.n_classes * 2 ** len(self.attr_names)


def group_ids(y: np.ndarray, attrs: np.ndarray) -> np.ndarray:
    """Group index = y * 2**A + the attributes read as a binary number (first attribute high)."""
    a = attrs.shape[1]
    bits = (attrs.astype(np.int64) << np.arange(a - 1, -1, -1, dtype=np.int64)).sum(1) if a else 0
    return y.astype(np.int64) * (2 ** a) + bits


def group_names(class_names: list[str], attr_names: list[str]) -> list[str]:
    """Readable names in :func:`group_ids` order, e.g. ``waterbird.place_1`` (MLflow's
    alphabet, so they can name tags and metrics)."""
    out = []
    for c in class_names:
        for g in range(2 ** len(attr_names)):
            bits = [(g >> (len(attr_names) - 1 - k)) & 1 for k in range(len(attr_names))]
            out.append(".".join([c] + [f"{n}_{b}" for n, b in zip(attr_names, bits, strict=True)]))
    return out
