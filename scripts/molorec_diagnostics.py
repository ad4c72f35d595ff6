"""MoLoRec diagnostics over a finished default-profile ``molorec`` benchmark (docs/llmrec.md).

    .venv/bin/python scripts/molorec_diagnostics.py --root . [--seeds 3]

1. On the validation prompts: entropy and ndcg_3 of uniform mixtures (general weight g in
   every layer) against the learned mixture (the run's mixture-stage best checkpoint).
2. Without label-based selection: the mixture re-learned from zero for 3 epochs on the
   unlabelled validation prompts (the harness's protocol) or on the unlabelled test prompts
   (the public code's transductive protocol), last epoch kept, scored on test. A diagnostic
   only: no benchmark row is ever fit on test prompts.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from harness import console, registry, tracking
from harness import spec as S
from harness.methods.llmrec import score_candidates
from harness.metrics.candidates import candidate_metrics
from harness.runner import make_model


def _scores(model, rows):
    """(mean entropy over candidates, mean ndcg_3) of the model on (prompt, candidates) rows."""
    ent, nd = [], []
    with torch.no_grad():
        for prompt, cands in rows:
            s = score_candidates(model.model, prompt, cands)
            lp = torch.log_softmax(s, 0)
            ent.append(-(lp.exp() * lp).sum().item())
            nd.append(candidate_metrics(s[None], torch.zeros(1, dtype=torch.long))["ndcg_3"].item())
    return sum(ent) / len(ent), sum(nd) / len(nd)


def _set_uniform(model, g: float) -> None:
    g = min(max(g, 1e-4), 1 - 1e-4)
    with torch.no_grad():
        t = model.hparams.temperature
        model.mix_logits[:, 0] = torch.log(torch.tensor(g)) * t
        model.mix_logits[:, 1] = torch.log(torch.tensor(1 - g)) * t


def _adapt(model, rows, seed: int, epochs: int = 3, batch: int = 8) -> None:
    """Entropy minimisation of the mixture logits from zero (MoLoRec's mixture stage)."""
    rng = random.Random(seed)
    with torch.no_grad():
        model.mix_logits.zero_()
    opt = torch.optim.Adam([model.mix_logits], lr=model.hparams.mix_lr)
    model.train()
    for _ in range(epochs):
        order = rows[:]
        rng.shuffle(order)
        for i in range(0, len(order), batch):
            loss = model.training_step(order[i : i + batch], 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def _fresh(sp, dm, ckpt: Path, seed: int):
    """The run's MoLoRec model with its mixture-stage checkpoint, mixture stage active."""
    torch.manual_seed(seed)
    model = make_model(sp, dm)
    # weights_only: a checkpoint is plain tensors and numbers; unpickling may never run code
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state, strict=False)
    model.begin_stage("mixture")
    model.log = model.log_dict = lambda *a, **k: None
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=".", help="directory where `make bench METHOD=molorec` ran")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    root = Path(args.root).resolve()
    console.quiet()
    mlf = tracking.client(f"sqlite:///{root / 'mlflow.db'}")
    exp = mlf.get_experiment_by_name("molorec")
    bench = S.load("molorec")
    for ds in ("cold", "warm"):
        adapted: dict[str, list[float]] = {"validation": [], "test": []}
        for seed in range(args.seeds):
            (run,) = mlf.search_runs([exp.experiment_id], filter_string=(
                f"tags.method = 'molorec' and tags.dataset = '{ds}' and tags.seed = '{seed}' "
                "and tags.`harness.complete` = '1'"))
            sp = next(x for x in bench.runs
                      if x.label == "molorec" and x.dataset_label == ds and x.seed == seed)
            dm = registry.load("dataset", sp.dataset)(
                **dict(sp.dataset_params, seed=seed, cache_dir=str(root / ".cache" / "harness")))
            dm.setup()
            split = dm.info.splits[dm.target]
            val, test = dm._eval_rows(split.valid), dm._eval_rows(split.test)
            ckpt = root / "runs" / "molorec" / run.data.tags["harness.run_key"] / "mixture" / "best.ckpt"

            model = _fresh(sp, dm, ckpt, seed)
            learned = model.mix_logits.detach().clone()
            cells = []
            for g in (0.0, 0.5, 1.0):
                _set_uniform(model, g)
                h, n = _scores(model, val)
                cells.append(f"g={g:.1f} H {h:.2f} ndcg_3 {n:.3f}")
            with torch.no_grad():
                model.mix_logits.copy_(learned)
            h, n = _scores(model, val)
            w = model.mixture_weights()[:, 0]
            print(f"{ds} seed {seed} validation ({len(val)} prompts): " + " | ".join(cells)
                  + f" | learned H {h:.2f} ndcg_3 {n:.3f} (g mean {w.mean():.2f})", flush=True)
            for src, rows in (("validation", val), ("test", test)):
                model = _fresh(sp, dm, ckpt, seed)
                _adapt(model, rows, seed)
                adapted[src].append(_scores(model, test)[1])
                print(f"{ds} seed {seed}: adapted on {src} prompts -> test ndcg_3 "
                      f"{adapted[src][-1]:.4f}", flush=True)
        for src, vals in adapted.items():
            print(f"{ds}: adapted on {src} prompts, mean test ndcg_3 {sum(vals) / len(vals):.4f}")


if __name__ == "__main__":
    main()
