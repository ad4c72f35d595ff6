"""The LoRA sequential recommender through the runner; only LoRA parameters train."""

import torch

from harness import tracking
from harness.cli import main
from harness.datasets.amazon_seq import AmazonSeqDataModule
from harness.methods.llmrec import LoRARec

BENCH = """
name: lorarec
methods:
  target-lora: {method: lora-rec, params: {lr: 0.003}}
datasets:
  tiny: {dataset: amazon-seq, params: {domains: [Beauty, Toys], target: Toys, n_candidates: 10,
         synthetic: {n_users: 80, n_items: 60}, pretrain: {steps: 30}}}
seeds: 1
monitor: {metric: val/ndcg_3, mode: max}
table: [hr_1, ndcg_3, mrr]
trainer: {max_epochs: 1, accelerator: cpu, devices: 1}
"""


def test_lora_rec_runs_and_trains_only_the_adapter(workdir):
    (workdir / "b.yaml").write_text(BENCH)
    assert main(["bench", str(workdir / "b.yaml"), "--no-progress", "--no-report"]) == 0
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("lorarec")
    (run,) = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.complete` = '1'")
    assert {"test/hr_1", "test/ndcg_3", "test/mrr"} <= set(run.data.metrics)

    dm = AmazonSeqDataModule(domains=("Beauty", "Toys"), target="Toys", n_candidates=10,
                             synthetic={"n_users": 80, "n_items": 60}, pretrain={"steps": 30})
    model = LoRARec(dm.info, lr=0.01)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from harness.datasets.amazon_seq import _collate_lm

    batch = _collate_lm(dm._train_examples(["Toys"])[:8])
    opt = model.configure_optimizers()
    model.log = lambda *a, **k: None
    for _ in range(3):
        loss = model.training_step(batch, 0)
        loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k for k in changed)
