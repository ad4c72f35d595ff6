"""How much InvDiff's identification can see: the minority signal in the biased model's
denoising losses per timestep, and what the group inference makes of it. It reads the true
groups (which the method never does), so it is a diagnostic, not part of any row.

    python scripts/invdiff_identification.py [--run-dir runs] [--profile default]

For each seed of the benchmark's ``invdiff`` row whose ``biased`` stage has finished under
``--run-dir``: per timestep, the mean loss, the AUROC of the loss for "the example is in its
class's rare background group" and the minority / majority loss ratio (one fixed noise per
example); then the identification as the row runs it (its timesteps, G, keep_weight, seed):
the group sizes, the minority share of the highest-loss group, and the effective weight the
group-balanced loss gives the minority (the mean over groups of their minority share: 0.05 is
the plain loss on a 95/5 mix, 0.5 the group oracle's).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchmetrics.functional.classification import binary_auroc

from harness import checkpoints, spec
from harness.methods.invdiff import identify_groups
from harness.runner import make_datamodule, make_model, run_key, stage_dir

TIMESTEPS = (50, 100, 200, 300, 400, 500, 600, 700, 800, 900)


def losses_by_timestep(model: torch.nn.Module, loader: object,
                       timesteps: tuple[int, ...]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Each training example's loss at each timestep (the identification's noises) and its
    true class x attribute group."""
    out: dict[int, list[torch.Tensor]] = {t: [] for t in timesteps}
    truth = []
    with torch.no_grad():
        for batch in loader():
            z = model.den.encode(batch["x"], sample=False)
            for k, t in enumerate(timesteps):
                noise = model._fixed_draws(batch["idx"], k, salt=11)
                tt = torch.full((len(z),), t, dtype=torch.long)
                out[t].append(model._per_example_loss(batch, tt, noise, z))
            truth.append(model._true_groups(batch["y"], batch["g"]))
    return {t: torch.cat(v) for t, v in out.items()}, torch.cat(truth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs")
    ap.add_argument("--profile", default="default")
    args = ap.parse_args()
    torch.set_num_threads(2)
    bench = spec.load("invdiff", profile=args.profile)
    for run in (r for r in bench.runs if r.params.get("mode") == "invdiff"):
        dm = make_datamodule(run)
        key = run_key(run, dm)
        dm.setup("fit")
        torch.manual_seed(run.seed)
        model = make_model(run, dm)
        ckpt = stage_dir(Path(args.run_dir), run, key, dm, model, "biased") / "last.ckpt"
        if not ckpt.exists():
            print(f"seed {run.seed}: no {ckpt}; run the benchmark first")
            continue
        model.load_state_dict(checkpoints.load(ckpt)["state_dict"])
        model.eval()
        model.begin_stage("identify")
        print(f"\nseed {run.seed}: {ckpt}")
        print("| timestep | mean loss | AUROC (minority) | minority / majority loss |")
        print("|---|---|---|---|")
        by_t, groups = losses_by_timestep(model, dm.info.train_eval_loader, TIMESTEPS)
        minority = model._minority(groups)
        for t in TIMESTEPS:
            loss = by_t[t]
            auroc = float(binary_auroc(loss, minority.long()))
            ratio = float(loss[minority].mean() / loss[~minority].mean())
            print(f"| {t} | {float(loss.mean()):.4f} | {auroc:.3f} | {ratio:.3f} |")
        hp = model.hparams
        used = tuple(int(t) for t in hp.identify_timesteps)
        per, _ = losses_by_timestep(model, dm.info.train_eval_loader, used)
        loss = torch.stack([per[t] for t in used]).mean(0)  # exactly what the identify stage records
        print(f"identify_timesteps {list(used)}: AUROC {float(binary_auroc(loss, minority.long())):.3f}")
        w = identify_groups(loss, hp.groups, hp.identify_steps, hp.identify_lr, hp.keep_weight,
                            torch.Generator().manual_seed(run.seed))
        size = w.sum(0).double()
        alive = size > 1e-6
        means = (loss.double()[:, None] * w).sum(0) / size.clamp_min(1e-12)
        means = means.masked_fill(~alive, float("-inf"))
        top = int(means.argmax())
        share = w[minority].sum(0).double() / size.clamp_min(1e-12)
        print(f"groups (G={hp.groups}): sizes {[round(float(s)) for s in size]}; the highest-loss group "
              f"holds {round(float(size[top]))} examples, {float(share[top]):.2f} of them minority; "
              f"effective minority weight {float(share[alive].mean()):.3f}")


if __name__ == "__main__":
    main()
