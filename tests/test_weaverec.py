"""WeaveRec: hybrid LoRAs per source, merged adapter = average of deltas, via the stage protocol."""

import torch
from helpers import run_bench, tiny_seq_bench

from harness.api import StageData
from harness.datasets.amazon_seq import AmazonSeqDataModule
from harness.methods.weaverec import MergeLoRA, WeaveRec

DATA = {"domains": ("Beauty", "Sports", "Toys"), "target": "Toys", "n_candidates": 10,
        "synthetic": {"n_users": 60, "n_items": 50}, "pretrain": {"steps": 20}}


def deltas(model, name):
    out = {}
    for mod_name, mod in model.model.named_modules():
        if hasattr(mod, "lora_A") and name in mod.lora_A:
            out[mod_name] = mod.lora_B[name].weight @ mod.lora_A[name].weight * mod.scaling[name]
    return out


def test_weave_stages_and_merge_is_the_average_of_deltas(workdir):
    dm = AmazonSeqDataModule(**DATA)
    model = WeaveRec(dm.info)
    assert model.stages == ("target", "hybrid-Beauty", "hybrid-Sports")
    assert model.stage_domains["hybrid-Beauty"] == ["Toys", "Beauty"]
    for stage in model.stages:
        model.begin_stage(stage)
        assert model.stage_data(stage) == StageData(domains=tuple(model.stage_domains[stage]))
        for n, p in model.model.named_parameters():  # give every adapter a non-zero delta
            if "lora_B" in n and p.requires_grad:
                torch.nn.init.normal_(p, std=0.05)
    names = ["default", "hybrid-Beauty", "hybrid-Sports"]
    parts = [deltas(model, n) for n in names]
    model.finish_stages()
    merged = deltas(model, "merged")
    assert merged and model.model.active_adapters == ["merged"]
    for key, d in merged.items():
        assert torch.allclose(d, sum(p[key] for p in parts) / 3, atol=1e-6)
    base = MergeLoRA(dm.info)
    assert base.stage_domains == {"target": ["Toys"], "domain-Beauty": ["Beauty"],
                                  "domain-Sports": ["Sports"]}


BENCH = tiny_seq_bench("weave", "weaverec", "weaverec", 0.003, "[ndcg_3]")


def test_weaverec_runs_its_stages_through_the_runner(workdir):
    run = run_bench(workdir, BENCH, "weave")
    keys = set(run.data.metrics)
    assert {"target/val/ndcg_3", "hybrid-Beauty/val/ndcg_3", "test/ndcg_3"} <= keys
    assert list((workdir / "runs" / "weave").glob("**/hybrid-Beauty/done"))
