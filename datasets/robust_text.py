"""Text robustness data: MNLI with HANS, QQP with PAWS, a word tokenizer, a synthetic NLI writer.

Readers (each returns a :class:`~harness.datasets.robust_common.RobustTable`, modality ``"text"``):

* :func:`read_mnli`: MultiNLI (the original ``multinli_1.0_*.jsonl`` or GLUE's ``*.tsv``) with
  HANS as the shortcut-broken set; attributes ``overlap`` and ``negation`` (:func:`nli_attrs`);
* :func:`read_qqp`: GLUE QQP with PAWS as the shortcut-broken set; attribute ``overlap``
  (:func:`qqp_attrs`).

Every problem with the files is a :class:`~harness.errors.DataFormatError` of one line naming
the file (and the line or column) and where the public copy lives. Rows of a TSV file whose
field count differs from the header's are skipped and counted (the real QQP file has a few);
more than ``max(10, 1%)`` of them is an error. A malformed JSON line is always an error.

Tokens (:func:`split_words`): lowercase, ``’`` read as ``'``, then words (``\\w+``), the
clitic ``n't`` split off (``doesn't`` -> ``does n't``), and each other non-space character
on its own. :class:`WordTokenizer` builds a vocabulary over those from the training texts;
:func:`load_tokenizer` loads a local pretrained one instead; :func:`encode_pairs` lays pairs
out as ``[CLS] a [SEP] b [SEP]``; :func:`encode_table` encodes every split once and caches it.

:func:`write_synthetic_nli` writes a synthetic MNLI + HANS set in the real formats
(:class:`SyntheticText` describes the generator).
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.cache import atomic_file, cached_torch, fingerprint, set_aside, stable_hash
from harness.datasets.robust_common import RobustTable, Split
from harness.errors import DataFormatError, UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

PUBLIC = {
    "mnli": "https://cims.nyu.edu/~sbowman/multinli/ (or GLUE: https://gluebenchmark.com/tasks)",
    "hans": "https://github.com/tommccoy1/hans",
    "qqp": "GLUE: https://gluebenchmark.com/tasks",
    "paws": "https://github.com/google-research-datasets/paws",
}

NLI_CLASSES = ["entailment", "neutral", "contradiction"]
HANS_CLASSES = ["entailment", "non-entailment"]
HANS_COLLAPSE = [0, 1, 1]  # MNLI class k counts as HANS class HANS_COLLAPSE[k]
QQP_CLASSES = ["not_duplicate", "duplicate"]

# SubpopBench / Sagawa et al.'s MultiNLI negation words, plus "not" and the clitic "n't"
NEGATION_WORDS = frozenset({"nobody", "no", "never", "nothing", "not", "n't"})
OVERLAP_JACCARD = 0.6  # QQP / PAWS: word-set Jaccard at or above this is "high overlap"

MNLI_JSONL = ("multinli_1.0_train.jsonl", "multinli_1.0_dev_matched.jsonl",
              "multinli_1.0_dev_mismatched.jsonl")
MNLI_TSV = ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv")
MNLI_DIRS = ("", "multinli_1.0", "MNLI")
HANS_FILE = "heuristics_evaluation_set.txt"
HANS_DIRS = ("", "hans")
HANS_COLUMNS = ("gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
                "sentence2_parse", "sentence1", "sentence2", "pairID", "heuristic", "subcase",
                "template")
QQP_DIRS = ("", "QQP")
PAWS_DIRS = ("paws", "paws_qqp/output", "paws_qqp", "paws_wiki", "final")

MAX_MALFORMED_ROWS = 10  # TSV rows with a wrong field count skipped before the share applies
MAX_MALFORMED_SHARE = 0.01

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(len(SPECIALS))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
ENCODE_VERSION = 1  # bump when the encoding of a text changes (cache keys)
_ENCODE_CHUNK = 65536

_TOKEN_RE = re.compile(r"n't|\w+|[^\w\s]")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- words, attributes


def split_words(text: str) -> list[str]:
    """The tokens of ``text``: lowercased words, ``n't`` split off, punctuation one per token."""
    text = text.lower().replace("\u2019", "'")
    return _TOKEN_RE.findall(text.replace("n't", " n't") if "n't" in text else text)


def _word_set(text: str) -> set[str]:
    """The set of :func:`split_words` tokens less the punctuation ones."""
    return {w for w in split_words(text) if len(w) > 1 or w.isalnum() or w == "_"}


def nli_attrs(premise: Sequence[str], hypothesis: Sequence[str]) -> np.ndarray:
    """int64 (N, 2): ``overlap`` (every word of the hypothesis, lowercased and without
    punctuation, occurs in the premise: HANS' lexical-overlap heuristic; an empty hypothesis
    counts as 0) and ``negation`` (the hypothesis holds one of :data:`NEGATION_WORDS`)."""
    out = np.zeros((len(premise), 2), dtype=np.int64)
    memo: dict[str, set[str]] = {}  # MNLI premises come three times
    for i, (a, b) in enumerate(zip(premise, hypothesis, strict=True)):
        wb = _word_set(b)
        if a not in memo:
            memo[a] = _word_set(a)
        out[i, 0] = bool(wb) and wb <= memo[a]
        out[i, 1] = not NEGATION_WORDS.isdisjoint(wb)
    return out


def qqp_attrs(text_a: Sequence[str], text_b: Sequence[str]) -> np.ndarray:
    """int64 (N, 1): ``overlap`` = word-set Jaccard of the two texts >= :data:`OVERLAP_JACCARD`."""
    out = np.zeros((len(text_a), 1), dtype=np.int64)
    for i, (a, b) in enumerate(zip(text_a, text_b, strict=True)):
        wa, wb = _word_set(a), _word_set(b)
        union = len(wa | wb)
        out[i, 0] = union > 0 and len(wa & wb) / union >= OVERLAP_JACCARD
    return out


# --------------------------------------------------------------------------- raw files


@dataclass
class _Rows:
    """Labelled pairs read from one file."""

    text_a: list[str]
    text_b: list[str]
    y: list[int]
    path: Path


def _where(path: Path, line: int | None = None) -> str:
    return f"{path}" if line is None else f"{path} line {line}"


def _lines(path: Path, source: str) -> Iterable[tuple[int, str]]:
    """(1-based line number, line without its end) for each line of a UTF-8 file."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            n = 0
            try:
                for n, line in enumerate(fh, 1):  # noqa: B007 (n is read in the except)
                    yield n, line.rstrip("\r\n")
            except UnicodeDecodeError:
                raise DataFormatError(
                    f"{path} is not UTF-8 text (near line {n + 1}); download the file again "
                    f"(public copy: {PUBLIC[source]})") from None
    except OSError as exc:
        raise DataFormatError(f"Could not read {path}: {_one_line(exc.strerror or exc)}; check that it "
                              f"is a readable file (public copy: {PUBLIC[source]})") from None


def _label_index(value: str, classes: Sequence[str], path: Path, line: int, column: str,
                 source: str) -> int:
    try:
        return classes.index(value)
    except ValueError:
        raise DataFormatError(
            f"{_where(path, line)}: unknown {column} {value[:40]!r}; expected one of {list(classes)} "
            f"(public copy: {PUBLIC[source]})") from None


def _read_tsv(path: Path, columns: tuple[str, str, str], labels: dict[str, int], source: str,
              skip_labels: frozenset[str] = frozenset()) -> _Rows:
    """Pairs from a headed TSV file: ``columns`` = (text a, text b, label); ``labels`` maps the
    label strings to class indices; rows labelled in ``skip_labels`` are dropped and counted."""
    rows = _Rows([], [], [], path)
    it = iter(_lines(path, source))
    header = next((fields for _, line in it if (fields := line.split("\t")) != [""]), None)
    if header is None:
        raise DataFormatError(f"{path} is empty; expected a tab-separated header with "
                              f"{list(columns)} (public copy: {PUBLIC[source]})")
    header = [h.strip() for h in header]
    for col in columns:
        if col not in header:
            raise DataFormatError(
                f"{path} has no column {col!r} (header: {' '.join(header)[:200]}); expected "
                f"a tab-separated file with {list(columns)} (public copy: {PUBLIC[source]})")
    ia, ib, il = (header.index(c) for c in columns)
    n_rows = malformed = skipped = 0
    first_bad = 0
    for n, line in it:
        if not line.strip():
            continue
        n_rows += 1
        fields = line.split("\t")
        if len(fields) != len(header):
            malformed += 1
            first_bad = first_bad or n
            continue
        label = fields[il].strip()
        if label in skip_labels:
            skipped += 1
            continue
        if label not in labels:
            raise DataFormatError(
                f"{_where(path, n)}: unknown {columns[2]} {label[:40]!r}; expected one of "
                f"{sorted(labels)} (public copy: {PUBLIC[source]})")
        rows.text_a.append(fields[ia])
        rows.text_b.append(fields[ib])
        rows.y.append(labels[label])
    if malformed > max(MAX_MALFORMED_ROWS, MAX_MALFORMED_SHARE * n_rows):
        raise DataFormatError(
            f"{path}: {malformed} of {n_rows} rows do not have the header's {len(header)} "
            f"tab-separated fields (first: line {first_bad}); check that it is the complete, "
            f"unmodified file (public copy: {PUBLIC[source]})")
    if malformed:
        logger.warning("%s: skipped %d of %d rows with a wrong field count (first: line %d)",
                       path, malformed, n_rows, first_bad)
    if skipped:
        logger.info("%s: skipped %d rows labelled %s", path, skipped, sorted(skip_labels))
    return rows


def _read_mnli_jsonl(path: Path) -> _Rows:
    """Pairs from a MultiNLI jsonl file; lines with gold_label ``-`` are skipped and counted."""
    rows = _Rows([], [], [], path)
    skipped = 0
    for n, line in _lines(path, "mnli"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                f"{_where(path, n)} is not valid JSON ({exc.msg}); the file may be truncated: "
                f"download it again (public copy: {PUBLIC['mnli']})") from None
        if not isinstance(rec, dict):
            raise DataFormatError(f"{_where(path, n)} is not a JSON object; expected one MultiNLI "
                                  f"record per line (public copy: {PUBLIC['mnli']})")
        for key in ("gold_label", "sentence1", "sentence2"):
            if not isinstance(rec.get(key), str):
                what = "no field" if key not in rec else "a non-string field"
                raise DataFormatError(
                    f"{_where(path, n)} has {what} {key!r}; expected MultiNLI records with "
                    f"gold_label, sentence1, sentence2 (public copy: {PUBLIC['mnli']})")
        if rec["gold_label"] == "-":
            skipped += 1
            continue
        rows.y.append(_label_index(rec["gold_label"], NLI_CLASSES, path, n, "gold_label", "mnli"))
        rows.text_a.append(rec["sentence1"])
        rows.text_b.append(rec["sentence2"])
    if skipped:
        logger.info("%s: skipped %d lines without a gold label ('-')", path, skipped)
    return rows


def _nonempty(rows: _Rows, source: str, what: str) -> _Rows:
    if not rows.y:
        raise DataFormatError(f"{rows.path} holds no labelled {what}; check that it is the complete "
                              f"file (public copy: {PUBLIC[source]})")
    return rows


def _split(rows: _Rows, attrs_fn: Any) -> Split:
    return Split(np.asarray(rows.y, dtype=np.int64), attrs_fn(rows.text_a, rows.text_b),
                 text_a=rows.text_a, text_b=rows.text_b)


def _dirs(root: Path, subs: Sequence[str]) -> list[Path]:
    return [root / s if s else root for s in subs]


def _check_root(root: str | Path, source: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"Data directory {root} does not exist; point it at the downloaded "
                              f"{source.upper()} data (public copy: {PUBLIC[source]})")
    return root


def _find_hans(root: Path) -> Path:
    for d in _dirs(root, HANS_DIRS):
        if (d / HANS_FILE).is_file():
            return d / HANS_FILE
    raise DataFormatError(
        f"HANS file {HANS_FILE} not found in {root} or {root / 'hans'}; MNLI is tested on it: put "
        f"it there (public copy: {PUBLIC['hans']})")


def read_mnli(root: str | Path) -> RobustTable:
    """MultiNLI with HANS, from ``root`` (or ``root/multinli_1.0``, ``root/MNLI``; HANS in ``root``
    or ``root/hans``).

    Layouts: the original ``multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl`` (preferred
    when both exist) or GLUE's ``{train,dev_matched,dev_mismatched}.tsv`` (GLUE's unlabelled
    test files are not used). Lines labelled ``-`` (no gold label) are skipped and counted.
    Splits: train; val = dev_matched; ``tests["test"]`` = dev_mismatched (in distribution);
    ``tests["hans"]`` = HANS (required), its labels 0 = entailment and 1 = non-entailment, with
    ``collapse["hans"] = [0, 1, 1]`` (neutral and contradiction count as non-entailment).
    Attributes :func:`nli_attrs` (``overlap``, ``negation``); HANS breaks ``overlap``.
    """
    root = _check_root(root, "mnli")
    found: tuple[Path, tuple[str, ...]] | None = None
    for d in _dirs(root, MNLI_DIRS):
        for names in (MNLI_JSONL, MNLI_TSV):
            if any((d / name).is_file() for name in names):
                found = (d, names)
                break
        if found:
            break
    if found is None:
        raise DataFormatError(
            f"MNLI not found in {root} (or its multinli_1.0/ or MNLI/): expected "
            f"{', '.join(MNLI_JSONL)} or GLUE's {', '.join(MNLI_TSV)} (public copy: {PUBLIC['mnli']})")
    d, names = found
    paths = [d / name for name in names]
    for p in paths:
        if not p.is_file():
            raise DataFormatError(f"MNLI file {p} not found (the other MNLI files are in {d}); put "
                                  f"it there (public copy: {PUBLIC['mnli']})")
    labels = {c: i for i, c in enumerate(NLI_CLASSES)}
    read = ((lambda p: _read_mnli_jsonl(p)) if names is MNLI_JSONL else
            (lambda p: _read_tsv(p, ("sentence1", "sentence2", "gold_label"), labels, "mnli",
                                 frozenset({"-"}))))
    hans_path = _find_hans(root)  # before the long read
    train, val, test = (_nonempty(read(p), "mnli", "sentence pairs") for p in paths)
    hans = _nonempty(_read_tsv(hans_path, ("sentence1", "sentence2", "gold_label"),
                               {c: i for i, c in enumerate(HANS_CLASSES)}, "hans"), "hans",
                     "sentence pairs")
    table = RobustTable(
        name="mnli", modality="text", class_names=list(NLI_CLASSES),
        attr_names=["overlap", "negation"], train=_split(train, nli_attrs),
        val=_split(val, nli_attrs),
        tests={"test": _split(test, nli_attrs), "hans": _split(hans, nli_attrs)},
        broken={"overlap": "hans"}, files=[*paths, hans_path],
        collapse={"hans": list(HANS_COLLAPSE)})
    return table


_BYTES_LITERAL = re.compile(r"""^b(['"]).*\1$""", re.S)
_PAWS_INDEX = re.compile(r"^[\d/():, ]+$")


def _unbytes(text: str) -> str:
    """``b'...'`` (PAWS-QQP written by its script under Python 3) -> the text inside."""
    if _BYTES_LITERAL.match(text):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
    return text


def _find_paws(root: Path) -> list[Path]:
    for d in _dirs(root, PAWS_DIRS):
        if (d / "dev_and_test.tsv").is_file():
            return [d / "dev_and_test.tsv"]
        if (d / "dev.tsv").is_file() and (d / "test.tsv").is_file():
            return [d / "dev.tsv", d / "test.tsv"]
    raise DataFormatError(
        f"PAWS not found: expected dev_and_test.tsv (PAWS-QQP) or dev.tsv + test.tsv (PAWS-Wiki "
        f"final) in one of {', '.join(str(root / s) for s in PAWS_DIRS)}; QQP is tested on it: put "
        f"it there (public copy: {PUBLIC['paws']})")


def read_qqp(root: str | Path, split_seed: int = 0) -> RobustTable:
    """QQP with PAWS, from ``root`` (or ``root/QQP``; PAWS in ``root/paws``, ``root/paws_qqp/output``,
    ``root/paws_qqp``, ``root/paws_wiki`` or ``root/final``, the first that has it).

    QQP: GLUE's ``train.tsv`` and ``dev.tsv`` (``id qid1 qid2 question1 question2
    is_duplicate``); rows with a wrong field count are skipped and counted. PAWS:
    ``dev_and_test.tsv`` (PAWS-QQP), else ``dev.tsv`` + ``test.tsv`` (PAWS-Wiki), ``id sentence1
    sentence2 label``; its ``train.tsv`` is not read; ``b'...'`` byte literals (PAWS-QQP's script
    run under Python 3) are unwrapped. Splits: train = QQP train; QQP dev is permuted with
    ``split_seed`` and halved into val (first half) and ``tests["test"]``; ``tests["paws"]`` =
    PAWS. Attribute :func:`qqp_attrs` (``overlap``); PAWS breaks it.
    """
    root = _check_root(root, "qqp")
    qdir = next((d for d in _dirs(root, QQP_DIRS) if (d / "train.tsv").is_file()
                 or (d / "dev.tsv").is_file()), None)
    if qdir is None:
        raise DataFormatError(f"QQP not found in {root} or {root / 'QQP'}: expected GLUE's train.tsv "
                              f"and dev.tsv (public copy: {PUBLIC['qqp']})")
    qpaths = [qdir / "train.tsv", qdir / "dev.tsv"]
    for p in qpaths:
        if not p.is_file():
            raise DataFormatError(f"QQP file {p} not found; put GLUE's QQP {p.name} there (public "
                                  f"copy: {PUBLIC['qqp']})")
    labels = {str(i): i for i in range(len(QQP_CLASSES))}
    cols = ("question1", "question2", "is_duplicate")
    ppaths = _find_paws(root)  # before the long read
    train, dev = (_nonempty(_read_tsv(p, cols, labels, "qqp"), "qqp", "question pairs") for p in qpaths)
    if len(dev.y) < 2:
        raise DataFormatError(f"{dev.path} holds {len(dev.y)} question pair(s), too few to halve into "
                              f"val and test (public copy: {PUBLIC['qqp']})")
    paws = _Rows([], [], [], ppaths[0])
    for p in ppaths:
        part = _read_tsv(p, ("sentence1", "sentence2", "label"), labels, "paws")
        if part.text_a and all(_PAWS_INDEX.match(t) for t in part.text_a[:50]):
            raise DataFormatError(
                f"{p} holds PAWS-QQP token indices, not sentences: build the sentences with the "
                f"repository's qqp_generate_data.py first (public copy: {PUBLIC['paws']})")
        paws.text_a += [_unbytes(t) for t in part.text_a]
        paws.text_b += [_unbytes(t) for t in part.text_b]
        paws.y += part.y
    _nonempty(paws, "paws", "sentence pairs")
    dev_split = _split(dev, qqp_attrs)
    perm = np.random.default_rng(split_seed).permutation(len(dev_split))
    half = len(perm) // 2
    return RobustTable(
        name="qqp", modality="text", class_names=list(QQP_CLASSES), attr_names=["overlap"],
        train=_split(train, qqp_attrs), val=dev_split.subset(perm[:half]),
        tests={"test": dev_split.subset(perm[half:]), "paws": _split(paws, qqp_attrs)},
        broken={"overlap": "paws"}, files=[*qpaths, *ppaths])


# --------------------------------------------------------------------------- tokenizers


class WordTokenizer:
    """Word-level vocabulary over :func:`split_words` tokens; ids 0-4 are :data:`SPECIALS`
    ([PAD], [UNK], [CLS], [SEP], [MASK]), out-of-vocabulary tokens map to [UNK]."""

    def __init__(self, vocab: Sequence[str]):
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise UserError(f"A word vocabulary must start with {list(SPECIALS)}; got "
                            f"{list(vocab[: len(SPECIALS)])}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        if len(self.index) != len(self.vocab):
            raise UserError("A word vocabulary holds a token twice; rebuild it")

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1, max_vocab: int = 30000) -> WordTokenizer:
        """The tokens seen at least ``min_count`` times, most frequent first (ties alphabetical),
        at most ``max_vocab`` ids in all (specials included)."""
        if min_count < 1 or max_vocab <= len(SPECIALS):
            raise UserError(f"Tokenizer: min_count must be >= 1 and max_vocab > {len(SPECIALS)}; got "
                            f"{min_count} and {max_vocab}")
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(split_words(t))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *words[: max_vocab - len(SPECIALS)]])

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    pad_token_id = PAD

    def tokenize(self, text: str) -> list[str]:
        """:func:`split_words`."""
        return split_words(text)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without specials."""
        get = self.index.get
        return [get(w, UNK) for w in split_words(text)]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Tokens joined by spaces (specials dropped when ``skip_special``, except [UNK])."""
        out = []
        for i in ids:
            i = int(i)
            if skip_special and i < len(SPECIALS) and i != UNK:
                continue
            out.append(self.vocab[i])
        return " ".join(out)

    def digest(self) -> str:
        """A hash of the vocabulary (cache keys)."""
        return stable_hash(self.vocab)

    def save(self, path: str | Path) -> None:
        """Write ``{"type": "word", "vocab": [...]}`` atomically."""
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps({"type": "word", "vocab": self.vocab}), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """A vocabulary written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            vocab = data["vocab"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"Could not read the word vocabulary {path}: {_one_line(exc)}; delete it "
                            "to rebuild it") from None
        return cls(vocab)


def load_tokenizer(backbone_dir: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a local model directory (``AutoTokenizer``, local files only). A
    tokenizer without a pad token pads with its end-of-sequence token."""
    d = Path(backbone_dir)
    if not d.is_dir():
        raise UserError(f"Backbone directory {d} does not exist; give a local model directory (saved "
                        "with save_pretrained) or none to build a word tokenizer from the training data")
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"{d} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); save the "
                        f"tokenizer there with tokenizer.save_pretrained('{d}')")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except Exception as exc:  # any failure to load is the directory's problem
        raise UserError(f"Could not load the tokenizer in {d}: {type(exc).__name__}: "
                        f"{_one_line(exc)[:300]}; save it again with save_pretrained") from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise UserError(f"The tokenizer in {d} has neither a pad nor an end-of-sequence token; add "
                            "a pad token and save it again")
        tok.pad_token = tok.eos_token
    return tok


def _pair_lengths(la: np.ndarray, lb: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths kept when the longer side is cut first until ``la + lb <= budget`` (when both
    end up cut, ``a`` keeps ``ceil(budget / 2)``)."""
    over = la + lb > budget
    half_b, half_a = budget // 2, budget - budget // 2
    a_longer = la >= lb
    tb = np.where(over & a_longer, np.minimum(lb, half_b), lb)
    ta = np.where(over & a_longer, budget - tb, la)
    ta = np.where(over & ~a_longer, np.minimum(la, half_a), ta)
    tb = np.where(over & ~a_longer, budget - ta, tb)
    return ta, tb


def _flat_ids(tok: WordTokenizer, texts: Sequence[str], memo: dict[str, int],
              encoded: list[list[int]]) -> np.ndarray:
    """Index of each text in ``encoded`` (texts encoded once each)."""
    idx = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        j = memo.get(t)
        if j is None:
            j = memo[t] = len(encoded)
            encoded.append(tok.encode(t))
        idx[i] = j
    return idx


def _scatter(out: np.ndarray, col0: np.ndarray, take: np.ndarray, src: np.ndarray,
             flat: np.ndarray) -> None:
    """``out[r, col0[r] + j] = flat[src[r] + j]`` for ``j < take[r]``, every row ``r``."""
    total = int(take.sum())
    if not total:
        return
    rows = np.repeat(np.arange(len(take)), take)
    offs = np.arange(total) - np.repeat(np.cumsum(take) - take, take)
    out[rows, np.repeat(col0, take) + offs] = flat[np.repeat(src, take) + offs]


def _encode_word(tok: WordTokenizer, text_a: Sequence[str], text_b: Sequence[str] | None,
                 max_len: int) -> dict[str, np.ndarray]:
    """:func:`encode_pairs` for a :class:`WordTokenizer`: each distinct text is tokenized once,
    then the id matrices are filled with numpy scatters, in chunks of rows."""
    memo: dict[str, int] = {}
    encoded: list[list[int]] = []
    ia = _flat_ids(tok, text_a, memo, encoded)
    ib = _flat_ids(tok, text_b, memo, encoded) if text_b is not None else None
    lens = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lens.sum()))
    starts = np.cumsum(lens) - lens
    n = len(text_a)
    out = {k: np.zeros((n, max_len), dtype=np.int64)
           for k in ("input_ids", "attention_mask", "token_type_ids")}
    cols = np.arange(max_len)
    for lo in range(0, n, _ENCODE_CHUNK):
        sl = slice(lo, min(n, lo + _ENCODE_CHUNK))
        la = lens[ia[sl]]
        if ib is None:
            ta, tb = np.minimum(la, max_len - 2), np.zeros_like(la)
        else:
            ta, tb = _pair_lengths(la, lens[ib[sl]], max_len - 3)
        block, rows = out["input_ids"][sl], np.arange(len(ta))
        block[:, 0] = CLS
        _scatter(block, np.ones_like(ta), ta, starts[ia[sl]], flat)
        block[rows, 1 + ta] = SEP
        end = 2 + ta  # one past the last token
        if ib is not None:
            _scatter(block, 2 + ta, tb, starts[ib[sl]], flat)
            block[rows, 2 + ta + tb] = SEP
            end = 3 + ta + tb
            out["token_type_ids"][sl] = (cols >= (2 + ta)[:, None]) & (cols < end[:, None])
        out["attention_mask"][sl] = cols < end[:, None]
    return out


def encode_pairs(tokenizer: WordTokenizer | PreTrainedTokenizerBase, text_a: Sequence[str],
                 text_b: Sequence[str] | None, max_len: int) -> dict[str, torch.Tensor]:
    """int64 (N, max_len) ``input_ids``, ``attention_mask``, ``token_type_ids`` for the pairs
    ``[CLS] a [SEP] b [SEP]`` (``[CLS] a [SEP]`` when ``text_b`` is None), right-padded, the
    longer side truncated first. A pretrained tokenizer lays pairs out its own way."""
    import torch

    if text_b is not None and len(text_b) != len(text_a):
        raise UserError(f"encode_pairs: {len(text_a)} first texts but {len(text_b)} second texts")
    if max_len < (3 if text_b is not None else 2):
        raise UserError(f"max_len {max_len} cannot hold [CLS] and [SEP]; use at least 8")
    if isinstance(tokenizer, WordTokenizer):
        return {k: torch.from_numpy(v) for k, v in _encode_word(tokenizer, text_a, text_b, max_len).items()}
    parts: dict[str, list[torch.Tensor]] = {"input_ids": [], "attention_mask": [], "token_type_ids": []}
    step = 8192
    for lo in range(0, len(text_a), step):
        a = list(text_a[lo: lo + step])
        b = list(text_b[lo: lo + step]) if text_b is not None else None
        enc = tokenizer(a, b, truncation="longest_first", max_length=max_len, padding="max_length",
                        return_tensors="pt", return_token_type_ids=True, return_attention_mask=True)
        for k in parts:
            v = enc.get(k)
            parts[k].append(torch.zeros_like(enc["input_ids"]) if v is None else v)
    if not text_a:
        return {k: torch.zeros((0, max_len), dtype=torch.int64) for k in parts}
    return {k: torch.cat(v).to(torch.int64) for k, v in parts.items()}


# --------------------------------------------------------------------------- cached encodings


def _named_splits(table: RobustTable) -> dict[str, Split]:
    clash = {"train", "val"} & set(table.tests)
    if clash:
        raise UserError(f"Table {table.name}: a test set may not be named {sorted(clash)}")
    return {"train": table.train, "val": table.val, **table.tests}


def _texts_digest(splits: Iterable[Split]) -> str:
    """A hash of the texts of ``splits``, in order (the split choices a reader made)."""
    h = hashlib.sha256()
    for s in splits:
        if s.text_a is None:
            raise UserError("encode_table: a split has no texts (text_a); is this a text table?")
        h.update(f"{len(s)}\0".encode())
        h.update("\x1e".join(s.text_a).encode("utf-8", "surrogatepass"))
        h.update(b"\x1d")
        h.update("\x1e".join(s.text_b or []).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def build_tokenizer(table: RobustTable, cache_dir: str | Path, min_count: int = 1,
                    max_vocab: int = 30000) -> WordTokenizer:
    """The :class:`WordTokenizer` of ``table``'s training texts (both sides), saved as
    ``<cache_dir>/<name>-vocab-<key>.json`` (key: raw files, training texts, the two arguments)
    and read back from there on later calls; an unreadable file is set aside and rebuilt."""
    key = stable_hash({"files": fingerprint(table.files), "train": _texts_digest([table.train]),
                       "min_count": min_count, "max_vocab": max_vocab, "version": ENCODE_VERSION})
    path = Path(cache_dir) / f"{table.name}-vocab-{key}.json"
    if path.exists():
        try:
            return WordTokenizer.load(path)
        except UserError as exc:
            set_aside(path, str(exc))
    texts = itertools.chain(table.train.text_a or [], table.train.text_b or [])
    tok = WordTokenizer.from_texts(texts, min_count=min_count, max_vocab=max_vocab)
    tok.save(path)
    return tok


def _tokenizer_key(tok: WordTokenizer | PreTrainedTokenizerBase) -> dict[str, Any]:
    if isinstance(tok, WordTokenizer):
        return {"word": tok.digest()}
    backend = getattr(tok, "backend_tokenizer", None)
    body = (hashlib.sha256(backend.to_str().encode()).hexdigest() if backend is not None
            else stable_hash(sorted(tok.get_vocab().items()), 32))
    return {"class": type(tok).__name__, "body": body, "special": str(tok.special_tokens_map),
            "size": len(tok), "sides": [tok.padding_side, tok.truncation_side]}


def encode_table(table: RobustTable, tokenizer: WordTokenizer | PreTrainedTokenizerBase | str | Path | None,
                 max_len: int, cache_dir: str | Path, *, min_count: int = 1,
                 max_vocab: int = 30000) -> tuple[dict[str, dict[str, torch.Tensor]], int]:
    """Every split and test set of ``table`` encoded by :func:`encode_pairs`, and the vocabulary
    size. ``tokenizer``: None builds a word tokenizer from the training texts
    (:func:`build_tokenizer`, ``min_count`` / ``max_vocab``); a path loads a local pretrained
    one (:func:`load_tokenizer`). Cached in ``<cache_dir>/<name>-encoded-<key>.pt``, keyed by
    the raw files' fingerprint, the texts, ``max_len`` and the tokenizer (its vocabulary or
    definition). Keys of the result: ``"train"``, ``"val"``, then the test set names."""
    cache_dir = Path(cache_dir)
    if tokenizer is None:
        tokenizer = build_tokenizer(table, cache_dir, min_count=min_count, max_vocab=max_vocab)
    elif isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(tokenizer)
    splits = _named_splits(table)
    key = stable_hash({"files": fingerprint(table.files), "texts": _texts_digest(splits.values()),
                       "names": list(splits), "max_len": max_len, "tokenizer": _tokenizer_key(tokenizer),
                       "version": ENCODE_VERSION})
    tok = tokenizer

    def build() -> dict[str, Any]:
        return {"splits": {name: encode_pairs(tok, s.text_a or [], s.text_b, max_len)
                           for name, s in splits.items()},
                "vocab_size": len(tok)}

    def check(payload: Any) -> bool:
        got = payload["splits"]
        return list(got) == list(splits) and all(
            tuple(got[name][k].shape) == (len(s), max_len)
            for name, s in splits.items() for k in ("input_ids", "attention_mask", "token_type_ids"))

    payload = cached_torch(cache_dir / f"{table.name}-encoded-{key}.pt", build, check)
    return payload["splits"], int(payload["vocab_size"])


# --------------------------------------------------------------------------- synthetic NLI

ENT, NEU, CON = range(3)  # indices in NLI_CLASSES
NEG_MARKERS = ("no", "not", "never", "nothing")
POS_MARKERS = ("so", "yes", "now", "then")
_FUNCTION_WORDS = frozenset({"the", "is", "and", *NEG_MARKERS, *POS_MARKERS, *NEGATION_WORDS})
LEXICON_SEED = 20240611  # the made-up words are the same for every seed
SYNTHETIC_VERSION = 1  # bump when write_synthetic_nli writes other data for the same arguments


@dataclass
class SyntheticText:
    """Arguments of :func:`write_synthetic_nli` (examples per file, shortcut strengths, seed).

    ``overlap_rate``: P(overlap | entailment) = overlap_rate and P(overlap | other) = 1 -
    overlap_rate, so "entailment iff overlap" is right on ~overlap_rate of the examples.
    ``negation_rate``: likewise P(negation | contradiction) = negation_rate and P(negation | other)
    = 1 - negation_rate. Both hold (exactly, up to rounding) within each class of train,
    dev_matched and dev_mismatched; HANS has overlap everywhere and negation in half of each class.
    ``opposite_rate``: share of premises naming a property and its opposite whatever the label
    (otherwise only contradictions with overlap would have them). ``second_entity_rate``: share
    of hypotheses about the premise's second entity (the model must then bind entity and
    property instead of reading the first clause; harder). ``other_entity_rate``: share of the
    neutrals without overlap that name an entity absent from the premise (the others name an
    unrelated property). ``n_entities`` / ``n_property_pairs``: the made-up lexicon's size.
    """

    n_train: int = 6000
    n_val: int = 1500
    n_test: int = 1500
    n_hans: int = 1200
    overlap_rate: float = 0.9
    negation_rate: float = 0.8
    seed: int = 0
    n_entities: int = 30
    n_property_pairs: int = 12
    opposite_rate: float = 0.2
    second_entity_rate: float = 0.0
    other_entity_rate: float = 0.0

    def check(self) -> None:
        """Raise UserError for arguments the generator cannot honour."""
        for name in ("n_train", "n_val", "n_test", "n_hans"):
            if getattr(self, name) < 3:
                raise UserError(f"SyntheticText.{name} must be at least 3; got {getattr(self, name)}")
        for name in ("overlap_rate", "negation_rate", "opposite_rate", "second_entity_rate",
                     "other_entity_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"SyntheticText.{name} must lie in [0, 1]; got {getattr(self, name)}")
        if self.n_entities < 3 or self.n_property_pairs < 2:
            raise UserError(f"SyntheticText needs n_entities >= 3 and n_property_pairs >= 2; got "
                            f"{self.n_entities} and {self.n_property_pairs}")


@dataclass
class _Lexicon:
    entities: list[str]
    props: list[str]
    opposite: dict[str, str]
    fillers: list[str]  # second word of a phrase ("not <filler>", "so <filler>")
    tails: list[str]  # a meaningless last word ("the dalop is kimet <tail>")


def _lexicon(cfg: SyntheticText) -> _Lexicon:
    rng = np.random.default_rng(LEXICON_SEED)
    cons, vows = list("bdfgklmnprstvz"), list("aeiou")
    taken: set[str] = set(_FUNCTION_WORDS)

    def words(n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            w = "".join(rng.choice(cons if k % 2 == 0 else vows) for k in range(5))
            if w not in taken:
                taken.add(w)
                out.append(w)
        return out

    ents, props = words(cfg.n_entities), words(2 * cfg.n_property_pairs)
    opposite = {}
    for a, b in zip(props[::2], props[1::2], strict=True):
        opposite[a], opposite[b] = b, a
    return _Lexicon(ents, props, opposite, words(6), words(6))


def _core_label(facts: dict[str, str], opposite: dict[str, str], entity: str, prop: str) -> int:
    """The label from the core rule alone: the premise says what each named entity is."""
    if entity not in facts:
        return NEU
    if prop == facts[entity]:
        return ENT
    return CON if prop == opposite[facts[entity]] else NEU


def _pick(rng: np.random.Generator, items: Sequence[str], exclude: Iterable[str] = ()) -> str:
    """A uniform choice among ``items`` not in ``exclude``."""
    ex = set(exclude)
    pool = [w for w in items if w not in ex] if ex else items
    return pool[int(rng.integers(len(pool)))]


def _example(rng: np.random.Generator, lex: _Lexicon, cfg: SyntheticText, label: int, overlap: bool,
             negation: bool) -> tuple[str, str, str]:
    """(premise, hypothesis, subcase) with core label ``label`` and the given shortcut values."""
    e1 = _pick(rng, lex.entities)
    e2 = _pick(rng, lex.entities, (e1,))
    p1 = _pick(rng, lex.props)
    if label == CON and overlap:
        p2 = lex.opposite[p1]
    elif (label == NEU and overlap) or rng.random() >= cfg.opposite_rate:
        p2 = _pick(rng, lex.props, (p1, lex.opposite[p1]))
    else:
        p2 = lex.opposite[p1]
    facts = {e1: p1, e2: p2}
    x = e2 if rng.random() < cfg.second_entity_rate else e1
    other = e2 if x == e1 else e1
    if label == ENT:
        z, sub = facts[x], "same_property"
    elif label == CON:
        z, sub = lex.opposite[facts[x]], "opposite_property"
    elif overlap:
        z, sub = facts[other], "swapped_property"
    elif rng.random() < cfg.other_entity_rate:
        x, z, sub = _pick(rng, lex.entities, facts), _pick(rng, lex.props), "other_entity"
    else:
        z, sub = _pick(rng, lex.props, (p1, p2, lex.opposite[facts[x]])), "unrelated_property"

    def phrase(markers: Sequence[str]) -> list[str]:
        return [_pick(rng, markers), _pick(rng, lex.fillers)]

    def any_phrase() -> list[str]:
        return [] if rng.random() < 0.5 else phrase(NEG_MARKERS if rng.random() < 0.5 else POS_MARKERS)

    prefix_h = phrase(NEG_MARKERS) if negation else (phrase(POS_MARKERS) if rng.random() < 0.6 else [])
    tail_h = [_pick(rng, lex.tails)] if rng.random() < 0.5 else []
    core = ["the", x, "is", z]
    if overlap:
        prefix_p = prefix_h or any_phrase()
        tail_p = tail_h or ([] if rng.random() < 0.5 else [_pick(rng, lex.tails)])
    else:
        prefix_p = any_phrase()
        tail_p = [] if rng.random() < 0.5 else [_pick(rng, lex.tails)]
        premise_words = {*prefix_p, e1, e2, p1, p2, *tail_p, "the", "is", "and"}
        if {*prefix_h, *core, *tail_h} <= premise_words:
            tail_h = [_pick(rng, lex.tails, tail_p)]
    premise = " ".join(["the", e1, "is", p1, "and", "the", e2, "is", p2, *prefix_p, *tail_p]) + " ."
    hypothesis = " ".join([*prefix_h, *core, *tail_h]) + " ."
    # the generator's own invariants: the core rule gives the label, the attributes are as asked
    if (_core_label(facts, lex.opposite, x, z) != label
            or nli_attrs([premise], [hypothesis])[0].tolist() != [int(overlap), int(negation)]):
        raise AssertionError(f"synthetic NLI: {premise!r} / {hypothesis!r} is not label {label}, "
                             f"overlap {overlap}, negation {negation}")
    return premise, hypothesis, sub


def _flags(rng: np.random.Generator, labels: np.ndarray, rate_by_label: dict[int, float]) -> np.ndarray:
    """Binary flags with exactly round(rate * count) ones among each label's examples."""
    out = np.zeros(len(labels), dtype=bool)
    for lab, rate in rate_by_label.items():
        idx = np.flatnonzero(labels == lab)
        out[rng.permutation(idx)[: int(round(rate * len(idx)))]] = True
    return out


def _binary_parse(text: str) -> str:
    return "( " + " ".join(split_words(text)) + " )"


def _parse(text: str) -> str:
    return "(ROOT (S " + " ".join(f"(X {w})" for w in split_words(text)) + "))"


def write_synthetic_nli(out_dir: str | Path, cfg: SyntheticText | None = None) -> Path:
    """Write a synthetic MNLI (``multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl``, the
    real fields) and HANS (``heuristics_evaluation_set.txt``, the real columns) set into
    ``out_dir`` and return it; :func:`read_mnli` reads it back.

    Core rule (decides every label): the premise ``the E1 is P1 and the E2 is P2 [phrase]
    [word] .`` names two made-up entities with made-up properties; properties come in fixed
    opposite pairs. The hypothesis ``[phrase] the X is Z [word] .`` is entailment if the
    premise gives X the property Z, contradiction if it gives X the opposite of Z, neutral
    otherwise (an unrelated property, the other entity's property, or an entity the premise
    does not name). X is E1 unless ``second_entity_rate`` says otherwise, so by default the
    label is the relation of Z to the premise's first property P1 (at a fixed position).
    Meaningless words ride on top: an optional two-word phrase (``<marker> <filler>``, markers
    ``no not never nothing`` or ``so yes now then``) and an optional last word, on either
    side. Premises have at most 12 words and hypotheses 7, plus a full stop: [CLS] a [SEP] b
    [SEP] fits in 24 tokens.

    Shortcuts (:class:`SyntheticText`): ``overlap`` (every hypothesis word is in the premise)
    is set by copying the hypothesis' phrase / last word into the premise, by the other
    entity's property (neutral) or by a premise naming both opposite properties
    (contradiction); it is broken by a last word the premise lacks. ``negation`` is a
    negative marker in the hypothesis' phrase. HANS: overlap in every example, half
    entailment, half non-entailment (swapped-property neutrals and opposite-property
    contradictions, alternately), and negation in half of each core label.
    """
    cfg = cfg or SyntheticText()
    cfg.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lex = _lexicon(cfg)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(4)]
    names = dict(zip(("train", "dev_matched", "dev_mismatched"), MNLI_JSONL, strict=True))
    for (split, fname), n, rng in zip(names.items(), (cfg.n_train, cfg.n_val, cfg.n_test), rngs[:3],
                                      strict=True):
        labels = rng.permutation(np.arange(n) % 3)
        ov = _flags(rng, labels, {ENT: cfg.overlap_rate, NEU: 1 - cfg.overlap_rate,
                                  CON: 1 - cfg.overlap_rate})
        neg = _flags(rng, labels, {ENT: 1 - cfg.negation_rate, NEU: 1 - cfg.negation_rate,
                                   CON: cfg.negation_rate})
        with open(out / fname, "w", encoding="utf-8") as fh:
            for i, (lab, o, g) in enumerate(zip(labels, ov, neg, strict=True)):
                s1, s2, _ = _example(rng, lex, cfg, int(lab), bool(o), bool(g))
                gold = NLI_CLASSES[lab]
                rec = {"annotator_labels": [gold], "genre": f"synthetic_{split}", "gold_label": gold,
                       "pairID": f"{i}{gold[0]}", "promptID": i, "sentence1": s1,
                       "sentence1_binary_parse": _binary_parse(s1), "sentence1_parse": _parse(s1),
                       "sentence2": s2, "sentence2_binary_parse": _binary_parse(s2),
                       "sentence2_parse": _parse(s2)}
                fh.write(json.dumps(rec) + "\n")
    rng = rngs[3]
    n = cfg.n_hans
    two_way = rng.permutation(np.arange(n) % 2)  # 0 entailment, 1 non-entailment
    core = np.where(two_way == 0, ENT, NEU)
    nonent = np.flatnonzero(two_way == 1)
    core[nonent[1::2]] = CON
    neg = _flags(rng, core, {ENT: 0.5, NEU: 0.5, CON: 0.5})
    with open(out / HANS_FILE, "w", encoding="utf-8") as fh:
        fh.write("\t".join(HANS_COLUMNS) + "\n")
        for i, (lab, g) in enumerate(zip(core, neg, strict=True)):
            s1, s2, sub = _example(rng, lex, cfg, int(lab), True, bool(g))
            gold = HANS_CLASSES[0 if lab == ENT else 1]
            row = [gold, _binary_parse(s1), _binary_parse(s2), _parse(s1), _parse(s2), s1, s2,
                   f"ex{i}", "lexical_overlap", f"{'le' if lab == ENT else 'ln'}_{sub}", "temp_synthetic"]
            fh.write("\t".join(row) + "\n")
    return out
