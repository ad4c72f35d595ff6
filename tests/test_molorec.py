"""MoLoRec: the per-layer mixture, its entropy training, and the merge into one LoRA."""

import torch
from helpers import run_bench, tiny_seq_bench

from harness.api import StageData
from harness.datasets.amazon_seq import AmazonSeqDataModule
from harness.methods.molorec import MoLoRec

DATA = {"domains": ("Beauty", "Toys"), "target": "Toys", "n_candidates": 10,
        "synthetic": {"n_users": 60, "n_items": 50}, "pretrain": {"steps": 20}}


def prepared(workdir):
    dm = AmazonSeqDataModule(**DATA)
    model = MoLoRec(dm.info, temperature=0.7)
    torch.manual_seed(0)
    for stage in ("general", "specific"):
        model.begin_stage(stage)
        for n, p in model.model.named_parameters():
            if "lora_B" in n and p.requires_grad:
                torch.nn.init.normal_(p, std=0.05)
    with torch.no_grad():
        model.mix_logits.normal_()  # distinct weights per layer
    model.begin_stage("mixture")
    return dm, model.eval()


def test_merged_adapter_reproduces_the_mixture_at_one_lora_cost(workdir):
    dm, model = prepared(workdir)
    ids = torch.tensor([[2, 5, 6, 7, 4, 8, 9, 4]])
    with torch.no_grad():
        mixed = model.model(input_ids=ids).logits
        model.finish_stages()
        merged = model.model(input_ids=ids).logits
    assert torch.allclose(mixed, merged, atol=1e-5)
    assert model.model.active_adapters == ["merged"]
    # inference cost: one adapter per layer, with the parameters of one rank-2r LoRA
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1))
             for layer in model.lora_layers for m in layer.lora_B.values()]
    with torch.no_grad():
        model.model(input_ids=ids)
    for h in hooks:
        h.remove()
    assert len(calls) == len(model.lora_layers)
    n_merged = sum(layer.lora_A["merged"].weight.numel() + layer.lora_B["merged"].weight.numel()
                   for layer in model.lora_layers)
    n_each = sum(layer.lora_A["default"].weight.numel() + layer.lora_B["default"].weight.numel()
                 for layer in model.lora_layers)
    assert n_merged == 2 * n_each


def test_each_stage_asks_for_its_data(workdir):
    dm = AmazonSeqDataModule(**DATA)
    model = MoLoRec(dm.info)
    expected = {"general": StageData(domains=("Beauty", "Toys")),
                "specific": StageData(domains=("Toys",)), "mixture": StageData(part="unlabelled")}
    for stage in model.stages:
        model.begin_stage(stage)
        assert model.stage_data(stage) == expected[stage]
        dm.use_stage_data(model.stage_data(stage))
    prompt, cands = next(iter(dm.train_dataloader()))[0]  # mixture: prompts and candidates
    assert isinstance(prompt[0], int) and len(cands) == 10


def test_mixture_training_lowers_entropy_on_unlabelled_prompts(workdir):
    dm, model = prepared(workdir)  # eval mode: no LoRA dropout, so the entropy is exact
    split = dm.info.splits["Toys"]
    batch = [(dm.encode_prompt(split, h), [dm.encode_title(split, c) for c in cands])
             for _, h, _, cands, _ in split.valid[:8]]
    model.log = lambda *a, **k: None
    opt = model.configure_optimizers()
    assert opt.param_groups[0]["params"] == [model.mix_logits]
    first = model.training_step(batch, 0).item()
    for _ in range(15):
        loss = model.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.training_step(batch, 0).item() < first


BENCH = tiny_seq_bench("molo", "molorec", "molorec", 0.003, "[ndcg_3]")


def test_molorec_runs_through_the_runner(workdir):
    run = run_bench(workdir, BENCH, "molo")
    assert {"mixture/val/ndcg_3", "general/val/ndcg_3", "test/ndcg_3"} <= set(run.data.metrics)


def test_avg_mix_and_molorec_train_their_loras_once(workdir):
    """Rows differing only in mixture parameters share the general and specific stages; a
    row with another learning rate does not."""
    from harness import tracking
    from harness.cli import main

    bench = tiny_seq_bench("share", "avg-mix", "molorec", 0.003, "[ndcg_3]").replace(
        "  avg-mix: {method: molorec, params: {lr: 0.003}}",
        "  avg-mix: {method: molorec, params: {lr: 0.003, learn_mixture: false}}\n"
        "  molorec: {method: molorec, params: {lr: 0.003, temperature: 0.5}}\n"
        "  molorec-lr: {method: molorec, params: {lr: 0.001}}")
    (workdir / "share.yaml").write_text(bench)
    assert main(["bench", str(workdir / "share.yaml"), "--no-progress", "--no-report"]) == 0
    shared = sorted(p.name for p in (workdir / "runs" / "share" / "stages").glob("*/*")
                    if p.is_dir())
    assert shared == ["general", "general", "specific", "specific"]  # lr 0.003 and lr 0.001
    for stage in ("general", "specific"):  # trained (done marker written) exactly once each
        assert len(list((workdir / "runs" / "share" / "stages").glob(f"*/{stage}/done"))) == 2
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("share")
    runs = {r.data.tags["method"]: r for r in mlf.search_runs(
        [exp.experiment_id], filter_string="tags.`harness.complete` = '1'")}
    assert runs["avg-mix"].data.tags["harness.stage.general"] == \
        runs["molorec"].data.tags["harness.stage.general"]
    assert runs["molorec-lr"].data.tags["harness.stage.general"] != \
        runs["molorec"].data.tags["harness.stage.general"]
    assert "mixture/val/ndcg_3" in runs["molorec"].data.metrics
    assert "mixture/val/ndcg_3" not in runs["avg-mix"].data.metrics
