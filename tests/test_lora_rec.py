"""The LoRA sequential recommender through the runner; only LoRA parameters train."""

import torch
from helpers import run_bench, tiny_seq_bench

from harness import checkpoints
from harness.datasets.amazon_seq import AmazonSeqDataModule
from harness.methods.llmrec import LoRARec

BENCH = tiny_seq_bench("lorarec", "target-lora", "lora-rec", 0.003, "[hr_1, ndcg_3, mrr]")


def test_lora_rec_runs_and_trains_only_the_adapter(workdir):
    run = run_bench(workdir, BENCH, "lorarec")
    assert {"test/hr_1", "test/ndcg_3", "test/mrr"} <= set(run.data.metrics)
    # checkpoints keep the adapter only, never the frozen base LM
    (ckpt,) = workdir.glob("runs/lorarec/*/fit/best.ckpt")
    keys = checkpoints.load(ckpt)["state_dict"].keys()  # weights only, as the runner reads it
    assert keys and all("lora_" in k for k in keys)

    dm = AmazonSeqDataModule(domains=("Beauty", "Toys"), target="Toys", n_candidates=10,
                             synthetic={"n_users": 80, "n_items": 60}, pretrain={"steps": 30})
    model = LoRARec(dm.info, lr=0.01)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from harness.datasets.amazon_seq import collate_lm

    batch = collate_lm(dm._train_examples(["Toys"])[:8])
    opt = model.configure_optimizers()
    model.log = lambda *a, **k: None
    for _ in range(3):
        loss = model.training_step(batch, 0)
        loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k for k in changed)
