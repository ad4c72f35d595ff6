"""Text robustness data: MNLI / HANS / QQP / PAWS readers, the word tokenizer, the synthetic NLI set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.datasets import robust_text as rt
from harness.datasets.robust_common import RobustTable, Split
from harness.errors import DataFormatError, UserError

HANS_HEADER = "\t".join(rt.HANS_COLUMNS)
GLUE_MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
QQP_HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
PAWS_HEADER = "id\tsentence1\tsentence2\tlabel"

MNLI_ROWS = {
    "train": [("entailment", "The cat sat on the mat.", "A cat sat."),
              ("neutral", "A man plays guitar.", "The man is famous."),
              ("-", "Unlabelled premise.", "Unlabelled hypothesis."),
              ("contradiction", "Nobody is here.", "Someone isn't absent, never.")],
    "dev_matched": [("entailment", "Dogs bark loudly.", "dogs bark"),
                    ("contradiction", "It is sunny.", "It is not sunny.")],
    "dev_mismatched": [("neutral", "She reads.", "She reads novels.")],
}
HANS_ROWS = [("entailment", "The doctor near the actor danced .", "The doctor danced ."),
             ("non-entailment", "The doctor saw the lawyer .", "The lawyer saw the doctor .")]


# --------------------------------------------------------------------------- writers of tiny files


def _jsonl(path: Path, rows: list[tuple[str, str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i, (gold, s1, s2) in enumerate(rows):
            fh.write(json.dumps({"annotator_labels": [gold], "genre": "fiction", "gold_label": gold,
                                 "pairID": f"{i}x", "promptID": i, "sentence1": s1, "sentence2": s2,
                                 "sentence1_binary_parse": "( x )", "sentence2_binary_parse": "( x )",
                                 "sentence1_parse": "(ROOT x)", "sentence2_parse": "(ROOT x)"}) + "\n")


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _hans(path: Path, rows: list[tuple[str, str, str]] = HANS_ROWS) -> Path:
    return _write(path, [HANS_HEADER] + [f"{g}\t( x )\t( x )\t(ROOT x)\t(ROOT x)\t{a}\t{b}\tex{i}\t"
                                         "lexical_overlap\tln_subject/object_swap\ttemp1"
                                         for i, (g, a, b) in enumerate(rows)])


def _mnli_jsonl(root: Path) -> Path:
    for split, rows in MNLI_ROWS.items():
        _jsonl(root / f"multinli_1.0_{split}.jsonl", rows)
    _hans(root / rt.HANS_FILE)
    return root


def _mnli_tsv(d: Path) -> None:
    for split, rows in MNLI_ROWS.items():
        _write(d / f"{split}.tsv", [GLUE_MNLI_HEADER] + [
            f"{i}\t{i}\t{i}n\tfiction\t( x )\t( x )\t(ROOT x)\t(ROOT x)\t{a}\t{b}\t{g}\t{g}"
            for i, (g, a, b) in enumerate(rows)])


def _qqp(root: Path, paws_dir: str = "paws") -> Path:
    _write(root / "train.tsv", [QQP_HEADER,
                                "1\t1\t2\tHow do I learn Python?\tHow can I learn Python?\t1",
                                "2\t3\t4\tWhat is love?\tWhere is Paris?\t0",
                                "3\t5\t6\tA question with a broken row",  # malformed: skipped
                                "4\t7\t8\tWhy is the sky blue?\tWhy is the sky blue today?\t1"])
    _write(root / "dev.tsv", [QQP_HEADER] + [f"{i}\t{2 * i}\t{2 * i + 1}\tq{i} a b\tq{i} a c\t{i % 2}"
                                             for i in range(10)])
    if paws_dir:
        _write(root / paws_dir / "dev_and_test.tsv", [
            PAWS_HEADER, "1\tb'Flights from New York to Florida'\tb'Flights from Florida to New York'\t0",
            "2\tKatz was born in Sweden in 1947 .\tKatz was born in 1947 in Sweden .\t1"])
    return root


def _message(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# --------------------------------------------------------------------------- readers


def test_read_mnli_jsonl_with_hans(tmp_path):
    table = rt.read_mnli(_mnli_jsonl(tmp_path))
    assert isinstance(table, RobustTable) and table.modality == "text" and table.name == "mnli"
    assert table.class_names == ["entailment", "neutral", "contradiction"]
    assert table.attr_names == ["overlap", "negation"] and table.broken == {"overlap": "hans"}
    assert list(table.tests) == ["test", "hans"] and table.collapse == {"hans": [0, 1, 1]}
    assert table.train.y.tolist() == [0, 1, 2]  # the "-" line is skipped
    assert table.train.text_a[2] == "Nobody is here." and table.train.text_b[0] == "A cat sat."
    assert table.val.y.tolist() == [0, 2] and table.tests["test"].y.tolist() == [1]
    assert table.tests["hans"].y.tolist() == [0, 1]
    assert table.tests["hans"].attrs[:, 0].tolist() == [1, 1]
    assert table.val.attrs.tolist() == [[1, 0], [0, 1]]  # "not" is not in the premise
    assert table.train.attrs.dtype == np.int64 and table.train.attrs.shape == (3, 2)
    assert [p.name for p in table.files] == [*rt.MNLI_JSONL, rt.HANS_FILE]


def test_read_mnli_glue_tsv_in_subdirs(tmp_path):
    _mnli_tsv(tmp_path / "MNLI")
    _hans(tmp_path / "hans" / rt.HANS_FILE)
    table = rt.read_mnli(tmp_path)
    assert table.train.y.tolist() == [0, 1, 2] and len(table.val) == 2 and len(table.tests["test"]) == 1
    assert table.val.text_b == ["dogs bark", "It is not sunny."]
    assert [p.name for p in table.files] == [*rt.MNLI_TSV, rt.HANS_FILE]


def test_read_qqp_with_paws(tmp_path):
    table = rt.read_qqp(_qqp(tmp_path))
    assert table.class_names == ["not_duplicate", "duplicate"] and table.attr_names == ["overlap"]
    assert table.broken == {"overlap": "paws"} and list(table.tests) == ["test", "paws"]
    assert table.train.y.tolist() == [1, 0, 1]  # the malformed row is skipped
    assert len(table.val) == 5 and len(table.tests["test"]) == 5
    assert sorted(table.val.text_a + table.tests["test"].text_a) == sorted(f"q{i} a b" for i in range(10))
    again = rt.read_qqp(tmp_path)
    assert again.val.text_a == table.val.text_a
    assert rt.read_qqp(tmp_path, split_seed=1).val.text_a != table.val.text_a
    paws = table.tests["paws"]
    assert paws.text_a[0] == "Flights from New York to Florida"  # b'...' unwrapped
    assert paws.y.tolist() == [0, 1] and paws.attrs[:, 0].tolist() == [1, 1]
    assert table.train.attrs[:, 0].tolist() == [1, 0, 1]
    assert [p.name for p in table.files] == ["train.tsv", "dev.tsv", "dev_and_test.tsv"]


def test_read_qqp_paws_wiki_layout(tmp_path):
    _qqp(tmp_path / "QQP", paws_dir="")
    for name in ("dev.tsv", "test.tsv"):
        _write(tmp_path / "final" / name, [PAWS_HEADER, "1\tA b c .\tC b a .\t0"])
    table = rt.read_qqp(tmp_path)
    assert len(table.tests["paws"]) == 2 and [p.parent.name for p in table.files[2:]] == ["final", "final"]


def _drop(path: Path) -> None:
    path.unlink()


def _replace(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


MNLI_BAD = {
    "hans absent": (lambda r: _drop(r / rt.HANS_FILE), [rt.HANS_FILE, "https://github.com/tommccoy1/hans"]),
    "mnli file absent": (lambda r: _drop(r / rt.MNLI_JSONL[2]),
                         [rt.MNLI_JSONL[2], "https://cims.nyu.edu/~sbowman/multinli/"]),
    "unknown label": (lambda r: _replace(r / rt.MNLI_JSONL[1], '"gold_label": "contradiction"',
                                         '"gold_label": "maybe"'),
                      [f"{rt.MNLI_JSONL[1]} line 2", "unknown gold_label 'maybe'"]),
    "missing field": (lambda r: _replace(r / rt.MNLI_JSONL[1], '"sentence2": "dogs bark"', '"s2": 1'),
                      [f"{rt.MNLI_JSONL[1]} line 1", "no field 'sentence2'"]),
    "malformed json": (lambda r: _replace(r / rt.MNLI_JSONL[0], '"gold_label": "neutral",', '"gold_label": '),
                       [f"{rt.MNLI_JSONL[0]} line 2 is not valid JSON"]),
    "empty split": (lambda r: _jsonl(r / rt.MNLI_JSONL[2], [("-", "a", "b")]),
                    [rt.MNLI_JSONL[2], "holds no labelled"]),
    "hans unknown label": (lambda r: _hans(r / rt.HANS_FILE, [("neutral", "a", "b")]),
                           [f"{rt.HANS_FILE} line 2", "unknown gold_label 'neutral'", "tommccoy1/hans"]),
    "hans missing column": (lambda r: _replace(r / rt.HANS_FILE, "sentence2\t", "hypothesis\t"),
                            [rt.HANS_FILE, "no column 'sentence2'"]),
    "hans empty": (lambda r: _write(r / rt.HANS_FILE, [HANS_HEADER]), [rt.HANS_FILE, "holds no labelled"]),
}


@pytest.mark.parametrize("case", sorted(MNLI_BAD))
def test_read_mnli_bad_inputs(tmp_path, case):
    _mnli_jsonl(tmp_path)
    spoil, expected = MNLI_BAD[case]
    spoil(tmp_path)
    with pytest.raises(DataFormatError) as exc:
        rt.read_mnli(tmp_path)
    text = _message(exc)
    for part in expected:
        assert part in text, text


def test_read_mnli_bad_tsv_and_nothing_there(tmp_path):
    _mnli_tsv(tmp_path)
    _hans(tmp_path / rt.HANS_FILE)
    _replace(tmp_path / "dev_matched.tsv", "\tsentence2\t", "\thypothesis\t")
    with pytest.raises(DataFormatError) as exc:
        rt.read_mnli(tmp_path)
    assert "dev_matched.tsv has no column 'sentence2'" in _message(exc)
    with pytest.raises(DataFormatError) as exc:
        rt.read_mnli(tmp_path / "nowhere")
    assert "does not exist" in _message(exc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError) as exc:
        rt.read_mnli(tmp_path / "empty")
    assert "multinli_1.0_train.jsonl" in _message(exc) and "gluebenchmark.com" in str(exc.value)


QQP_BAD = {
    "paws absent": (lambda r: _drop(r / "paws" / "dev_and_test.tsv"),
                    ["dev_and_test.tsv", "https://github.com/google-research-datasets/paws"]),
    "qqp dev absent": (lambda r: _drop(r / "dev.tsv"), ["dev.tsv", "gluebenchmark.com"]),
    "unknown label": (lambda r: _replace(r / "train.tsv", "Paris?\t0", "Paris?\t2"),
                      ["train.tsv line 3", "unknown is_duplicate '2'"]),
    "missing column": (lambda r: _replace(r / "dev.tsv", "question2", "q2"),
                       ["dev.tsv", "no column 'question2'"]),
    "empty split": (lambda r: _write(r / "paws" / "dev_and_test.tsv", [PAWS_HEADER]),
                    ["dev_and_test.tsv", "holds no labelled", "google-research-datasets/paws"]),
    "paws index file": (lambda r: _write(r / "paws" / "dev_and_test.tsv",
                                         [PAWS_HEADER, "1\t0/1/2\t2/1/0\t0"]),
                        ["dev_and_test.tsv", "qqp_generate_data.py"]),
    "too many malformed": (lambda r: _write(r / "dev.tsv",
                                            [QQP_HEADER, *["1\t2\tbroken"] * 12, "1\t1\t2\ta\tb\t0"]),
                           ["dev.tsv", "12 of 13 rows", "first: line 2"]),
}


@pytest.mark.parametrize("case", sorted(QQP_BAD))
def test_read_qqp_bad_inputs(tmp_path, case):
    _qqp(tmp_path)
    spoil, expected = QQP_BAD[case]
    spoil(tmp_path)
    with pytest.raises(DataFormatError) as exc:
        rt.read_qqp(tmp_path)
    text = _message(exc)
    for part in expected:
        assert part in text, text


# --------------------------------------------------------------------------- attributes


def test_nli_attributes_on_hand_written_sentences():
    pairs = [("The doctor saw the lawyer.", "The lawyer saw the doctor.", [1, 0]),
             ("The cat sat.", "A cat sat.", [0, 0]),
             ("Hello, World!", "world HELLO", [1, 0]),
             ("He does know it.", "He doesn't know.", [0, 1]),   # "n't" is not in the premise
             ("He does n't know .", "He doesn't know.", [1, 1]),
             ("Nobody came.", "Nobody came!", [1, 1]),
             ("Notably, it works.", "It works, notably.", [1, 0]),  # "notably" is no negation
             ("I know nothing.", "nothing", [1, 1]),
             ("It is never late.", "It is no problem", [0, 1]),
             ("Some words.", "...", [0, 0])]  # a hypothesis without words has no overlap
    got = rt.nli_attrs([a for a, _, _ in pairs], [b for _, b, _ in pairs])
    assert got.dtype == np.int64
    assert got.tolist() == [want for _, _, want in pairs]


def test_qqp_overlap_threshold():
    got = rt.qqp_attrs(["a b c d e", "a b c d e f", "What is AI?", ""],
                       ["a b c", "a b c", "what is ai", ""])
    assert rt.OVERLAP_JACCARD == 0.6
    assert got[:, 0].tolist() == [1, 0, 1, 0]  # 3/5 = 0.6, 3/6, 3/3, nothing


def test_split_words():
    assert rt.split_words("Don’t STOP, it's 2 fine.") == ["do", "n't", "stop", ",", "it", "'", "s", "2",
                                                          "fine", "."]


# --------------------------------------------------------------------------- tokenizer, encoding


def test_word_tokenizer_vocab_round_trip_and_save(tmp_path):
    tok = rt.WordTokenizer.from_texts(["the cat sat", "The cat ran!", "a dog"], min_count=1)
    assert tok.vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.vocab[5:7] == ["cat", "the"]  # most frequent first, ties alphabetical
    text = "The dog sat the cat ran!"
    assert tok.decode(tok.encode(text)) == " ".join(rt.split_words(text))
    assert tok.encode("zebra cat") == [rt.UNK, tok.index["cat"]]
    assert tok.decode([rt.CLS, tok.index["cat"], rt.SEP, rt.PAD]) == "cat"
    frequent = rt.WordTokenizer.from_texts(["the cat sat", "The cat ran!"], min_count=2)
    assert frequent.vocab[5:] == ["cat", "the"]
    assert len(rt.WordTokenizer.from_texts(["a b c d e f g"], max_vocab=7)) == 7
    tok.save(tmp_path / "vocab.json")
    assert rt.WordTokenizer.load(tmp_path / "vocab.json").vocab == tok.vocab
    with pytest.raises(UserError):
        rt.WordTokenizer(["a", "b"])


def test_encode_pairs_layout_and_single_texts():
    tok = rt.WordTokenizer.from_texts(["a b c d e"])
    a, b, c, d, e = (tok.index[w] for w in "abcde")
    out = rt.encode_pairs(tok, ["a b c"], ["d e"], 10)
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.dtype == torch.int64 and v.shape == (1, 10) for v in out.values())
    assert out["input_ids"][0].tolist() == [rt.CLS, a, b, c, rt.SEP, d, e, rt.SEP, rt.PAD, rt.PAD]
    assert out["attention_mask"][0].tolist() == [1] * 8 + [0] * 2
    assert out["token_type_ids"][0].tolist() == [0] * 5 + [1] * 3 + [0] * 2
    one = rt.encode_pairs(tok, ["a b c d e"], None, 5)
    assert one["input_ids"][0].tolist() == [rt.CLS, a, b, c, rt.SEP]
    assert one["token_type_ids"].sum() == 0 and one["attention_mask"].sum() == 5
    with pytest.raises(UserError):
        rt.encode_pairs(tok, ["a"], ["b"], 2)


def _reference_truncation(la: int, lb: int, budget: int) -> tuple[int, int]:
    while la + lb > budget:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return la, lb


def test_encode_pairs_truncates_the_longer_side_first():
    tok = rt.WordTokenizer.from_texts(["w"])
    w = tok.index["w"]
    rng = np.random.default_rng(0)
    lens = rng.integers(0, 14, size=(300, 2))
    texts_a = [" ".join(["w"] * int(n)) for n in lens[:, 0]]
    texts_b = [" ".join(["w"] * int(n)) for n in lens[:, 1]]
    max_len = 12
    out = rt.encode_pairs(tok, texts_a, texts_b, max_len)
    ids, types = out["input_ids"].numpy(), out["token_type_ids"].numpy()
    for i, (la, lb) in enumerate(lens):
        ta, tb = _reference_truncation(int(la), int(lb), max_len - 3)
        row = [rt.CLS] + [w] * ta + [rt.SEP] + [w] * tb + [rt.SEP]
        assert ids[i].tolist() == row + [rt.PAD] * (max_len - len(row)), (la, lb)
        assert types[i].sum() == tb + 1
        assert out["attention_mask"][i].sum() == len(row)


def _tiny_table(tmp_path: Path) -> RobustTable:
    def split(a: list[str], b: list[str]) -> Split:
        return Split(np.zeros(len(a), dtype=np.int64), np.zeros((len(a), 1), dtype=np.int64),
                     text_a=a, text_b=b)

    raw = _write(tmp_path / "raw.txt", ["raw"])
    return RobustTable("tiny", "text", ["x", "y"], ["overlap"], split(["the cat", "a dog"], ["cat", "dog"]),
                       split(["the bird"], ["cat"]), {"test": split(["dog"], ["the"]),
                                                       "broken": split(["cat cat"], ["dog dog"])},
                       files=[raw])


def test_encode_table_caches_tensors_and_vocabulary(tmp_path, monkeypatch):
    table = _tiny_table(tmp_path)
    cache = tmp_path / "cache"
    enc, size = rt.encode_table(table, None, 8, cache)
    assert list(enc) == ["train", "val", "test", "broken"] and size == 5 + 4  # specials + cat, dog, a, the
    assert enc["val"]["input_ids"].shape == (1, 8)
    vocab_files = list(cache.glob("tiny-vocab-*.json"))
    assert len(vocab_files) == 1 and "bird" not in json.loads(vocab_files[0].read_text())["vocab"]
    assert enc["val"]["input_ids"][0, 2].item() == rt.UNK  # "bird" is not a training word

    def boom(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(rt, "encode_pairs", boom)
    again, size2 = rt.encode_table(table, None, 8, cache)
    assert size2 == size and torch.equal(again["broken"]["input_ids"], enc["broken"]["input_ids"])
    with pytest.raises(AssertionError, match="encoded again"):
        rt.encode_table(table, None, 9, cache)  # another max_len: a new encoding
    monkeypatch.undo()
    rt.encode_table(table, None, 9, cache)
    assert len(list(cache.glob("tiny-encoded-*.pt"))) == 2 and len(list(cache.glob("tiny-vocab-*.json"))) == 1


def test_load_tokenizer_local_directory(tmp_path):
    with pytest.raises(UserError) as exc:
        rt.load_tokenizer(tmp_path)
    assert "has no tokenizer files" in _message(exc)
    with pytest.raises(UserError) as exc:
        rt.load_tokenizer(tmp_path / "absent")
    assert "does not exist" in _message(exc)

    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*rt.SPECIALS, "the", "cat", "dog"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", rt.CLS), ("[SEP]", rt.SEP)])
    saved = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                    cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    saved.save_pretrained(tmp_path)
    tok = rt.load_tokenizer(tmp_path)
    out = rt.encode_pairs(tok, ["the cat", "the dog"], ["dog", "cat cat"], 8)
    assert out["input_ids"][0].tolist() == [rt.CLS, 5, 6, rt.SEP, 7, rt.SEP, rt.PAD, rt.PAD]
    assert out["token_type_ids"][1].tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    assert all(v.dtype == torch.int64 for v in out.values())
    enc, size = rt.encode_table(_tiny_table(tmp_path), tmp_path, 8, tmp_path / "cache")
    assert size == 8 and enc["train"]["input_ids"].shape == (2, 8)


# --------------------------------------------------------------------------- synthetic NLI


def test_synthetic_nli_reads_back_with_its_shortcuts(tmp_path):
    cfg = rt.SyntheticText(n_train=600, n_val=150, n_test=150, n_hans=200, seed=3)
    out = rt.write_synthetic_nli(tmp_path / "syn", cfg)
    table = rt.read_mnli(out)
    assert (len(table.train), len(table.val), len(table.tests["test"]), len(table.tests["hans"])) == (
        600, 150, 150, 200)
    rec = json.loads((out / rt.MNLI_JSONL[0]).read_text().splitlines()[0])
    assert {"gold_label", "sentence1", "sentence2", "pairID", "genre", "sentence1_binary_parse",
            "sentence2_parse", "promptID"} <= set(rec)
    assert (out / rt.HANS_FILE).read_text().splitlines()[0] == HANS_HEADER
    for split in (table.train, table.val, table.tests["test"]):
        y, overlap, negation = split.y, split.attrs[:, 0], split.attrs[:, 1]
        assert np.bincount(y).tolist() == [len(y) // 3] * 3
        assert abs(np.mean((overlap == 1) == (y == 0)) - cfg.overlap_rate) < 0.02
        assert abs(np.mean((negation == 1) == (y == 2)) - cfg.negation_rate) < 0.02
    hans = table.tests["hans"]
    assert hans.attrs[:, 0].tolist() == [1] * 200 and np.bincount(hans.y).tolist() == [100, 100]
    for label in (0, 1):
        assert abs(hans.attrs[hans.y == label, 1].mean() - 0.5) < 0.05  # negation independent of the label
    def words(texts: list[str]) -> int:
        return max(len([w for w in rt.split_words(t) if w != "."]) for t in texts)

    assert words(table.train.text_a + table.tests["hans"].text_a) == 12
    assert words(table.train.text_b + table.tests["hans"].text_b) == 7
    enc, _ = rt.encode_table(table, None, 32, tmp_path / "cache")
    assert max(int(e["attention_mask"].sum(1).max()) for e in enc.values()) == 24  # nothing truncated


def test_synthetic_nli_is_seeded(tmp_path):
    cfg = rt.SyntheticText(n_train=30, n_val=6, n_test=6, n_hans=10)
    a = rt.write_synthetic_nli(tmp_path / "a", cfg)
    b = rt.write_synthetic_nli(tmp_path / "b", cfg)
    c = rt.write_synthetic_nli(tmp_path / "c", rt.SyntheticText(n_train=30, n_val=6, n_test=6, n_hans=10,
                                                                seed=1))
    for name in (*rt.MNLI_JSONL, rt.HANS_FILE):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / rt.MNLI_JSONL[0]).read_bytes() != (c / rt.MNLI_JSONL[0]).read_bytes()
    with pytest.raises(UserError):
        rt.SyntheticText(overlap_rate=1.5).check()
