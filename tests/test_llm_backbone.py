"""The `paper` path of the LLM recommenders: a user's Hugging Face model directory (a tiny,
randomly initialised Qwen2 here), its own tokenizer, text prompts, bf16, real-format data."""

import pytest
import torch

from harness import tracking
from harness.backbones import TextCodec
from harness.cli import main
from harness.datasets.amazon_seq import AmazonSeqDataModule, MultiDomainConfig, write_multidomain
from harness.methods.llmrec import score_candidates

DOMAINS = ("Beauty", "Clothing_Shoes_and_Jewelry", "Sports_and_Outdoors")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """A Qwen2-shaped causal LM (random weights) and a fast tokenizer, saved as a model dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("qwen2-tiny")
    bpe = Tokenizer(models.BPE())  # byte-level BPE, as Qwen2's own tokenizer
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        [TextCodec.INSTRUCTION, "ba co di fu ga he ji ko lu me no pi ra su te vi wo xa yo zu"],
        trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("amazon")
    return write_multidomain(out, MultiDomainConfig(domains=DOMAINS, n_users=40, n_items=80))


def test_text_prompts_and_shared_prefix_scores_on_a_qwen2_backbone(backbone, data_dir, workdir):
    dm = AmazonSeqDataModule(data_dir=str(data_dir), domains=DOMAINS[:2], target=DOMAINS[1],
                             backbone=str(backbone), n_candidates=30)
    info = dm.info
    assert isinstance(info.codec, TextCodec) and info.base_dir == str(backbone)
    split = info.splits[DOMAINS[1]]
    _, history, target, cands, _ = split.valid[0]
    prompt = dm.encode_prompt(split, history)
    answer = dm.encode_title(split, target)
    assert answer[-1] == info.tokenizer.eos_token_id and len(cands) == 30
    assert info.tokenizer.decode(prompt).count('"') == 2 * min(len(history), dm.max_history)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(backbone).eval()
    titles = [dm.encode_title(split, c) for c in cands]
    shared = score_candidates(model, prompt, titles, share_prefix=True)
    full = score_candidates(model, prompt, titles, share_prefix=False)
    assert torch.allclose(shared, full, atol=1e-4)


def test_paper_profile_runs_on_a_local_backbone_in_bf16(backbone, data_dir, workdir):
    argv = ["bench", "weaverec", "--profile", "paper", "--data", str(data_dir), "--backbone",
            str(backbone), "--dataset", "single-source", "--seeds", "1", "--max-epochs", "1",
            "--no-progress", "--no-report"]
    # the paper's single-source pair is Beauty -> Sports_and_Outdoors
    assert main(argv) == 0
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("weaverec")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.complete` = '1'")
    assert {r.data.tags["method"] for r in runs} == {"target-lora", "joint-lora", "merge-linear",
                                                      "merge-ties", "weaverec"}
    for r in runs:
        p = r.data.params
        assert (p["method.lr"], p["method.lora_r"], p["method.dtype"]) == ("0.0002", "16", "bfloat16")
        assert p["data.n_candidates"] == "30" and p["data.backbone"] == str(backbone.resolve())
        assert "test/ndcg_3" in r.data.metrics


@pytest.mark.parametrize("make_dir, needle", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "has neither config.json"),
])
def test_bad_backbone_directories_are_one_line(workdir, capsys, tmp_path, make_dir, needle):
    argv = ["bench", "weaverec", "--profile", "quick", "--backbone", str(make_dir(tmp_path)),
            "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_paper_profile_without_backbone_says_what_to_pass(workdir, capsys, tmp_path):
    assert main(["bench", "molorec", "--profile", "paper", "--data", str(tmp_path)]) == 2
    assert "BACKBONE=/path/to/Qwen2-7B-Instruct" in capsys.readouterr().err
