"""RecBole side of scripts/recbole_side_by_side.py; runs inside the throwaway RecBole 1.2.1 venv.

    python _recbole_side.py quality --model LightGCN --data-path D --out r.json
    python _recbole_side.py timing  --model BPR --data-path D --epochs 4 --out t.json
    python _recbole_side.py metrics --data-path D --ranking-py harness/metrics/ranking.py --out m.json

Drives RecBole's own pieces (``Config``, ``create_dataset``, ``data_preparation``,
``get_model``, ``get_trainer``) as ``run_recbole`` does, without importing
``recbole.quick_start`` (it imports ``ray``, which is not installed). The data are the
benchmark files ``<dataset>.train/valid/test.inter`` the caller wrote
(``benchmark_filename``). Compatibility with torch 2.13, applied here only: the best
model is kept in memory instead of RecBole's checkpoint file (RecBole 1.2.1 pickles its
``Config`` into it, which ``torch.load`` refuses to read back by default since torch 2.6,
and we never unpickle files); numpy needs < 2 (RecBole uses ``np.float`` & co., which its
``Config`` re-creates as aliases).
Writes one JSON file; prints short progress lines.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODELS = ("BPR", "LightGCN")


class BestInMemory:
    """Replace ``trainer._save_checkpoint`` with a copy of the weights held in memory.

    RecBole saves its best model (best valid score) with ``_save_checkpoint`` and reloads it
    in ``evaluate(load_best_model=True)``; here the same weights are kept and restored
    before ``evaluate(load_best_model=False)``, so no file is written or unpickled.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.state: dict[str, Any] | None = None
        self.epoch: int | None = None
        trainer._save_checkpoint = self.save

    def save(self, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
        """Same trigger as RecBole's checkpoint; copies ``state_dict`` and ``other_parameter``."""
        model = self.trainer.model
        self.state = {
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "other_parameter": copy.deepcopy(model.other_parameter()),
        }
        self.epoch = epoch

    def restore(self) -> None:
        """Load the best weights back, as ``evaluate(load_best_model=True)`` does."""
        if self.state is None:
            raise RuntimeError("RecBole never saved a best model (no validation epoch ran)")
        model = self.trainer.model
        model.load_state_dict(self.state["state_dict"])
        model.load_other_parameter(self.state["other_parameter"])


def numpy_aliases() -> None:
    """The aliases RecBole's ``Config.compatibility_settings`` sets (needed before a Config)."""
    for name, value in (("bool", np.bool_), ("int", np.int_), ("float", np.float64),
                        ("long", np.int_)):
        if name not in np.__dict__:
            setattr(np, name, value)


def recbole_config(model: str, data_path: str, dataset: str, workdir: str,
                   extra: dict[str, Any]) -> Any:
    """RecBole's Config: its defaults plus the side-by-side settings (full ranking, same split)."""
    from recbole.config import Config

    cfg: dict[str, Any] = {
        "data_path": data_path,
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id"]},
        "eval_args": {"group_by": "user", "order": "RO", "split": {"RS": [0.8, 0.1, 0.1]},
                      "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [20],
        "valid_metric": "Recall@20",
        "metric_decimal_place": 6,
        "use_gpu": False,
        "gpu_id": "",
        "checkpoint_dir": os.path.join(workdir, "saved"),
        "show_progress": False,
        "state": "WARNING",
        "train_batch_size": 2048,
        "embedding_size": 64,
    }
    if model == "LightGCN":
        cfg["n_layers"] = 3
    cfg.update(extra)
    return Config(model=model, dataset=dataset, config_dict=cfg)


def build(model: str, args: argparse.Namespace, extra: dict[str, Any]) -> tuple[Any, ...]:
    """Config, data loaders, model and trainer, in ``run_recbole``'s order (seeds included)."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    extra = {"train_batch_size": args.batch_size, **extra}
    config = recbole_config(model, args.data_path, args.dataset, args.workdir, extra)
    torch.set_num_threads(args.threads)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    return config, dataset, train_data, valid_data, test_data, trainer


class EpochTimer:
    """Wraps a trainer's ``_train_epoch`` and ``_valid_epoch`` to time them as ``fit`` calls them."""

    def __init__(self, trainer: Any, every: int = 10, label: str = "") -> None:
        self.train: list[float] = []
        self.valid: list[float] = []
        self.scores: list[float] = []
        self.every, self.label = every, label
        tr, va = trainer._train_epoch, trainer._valid_epoch

        def train_epoch(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            out = tr(*a, **k)
            self.train.append(time.perf_counter() - t)
            return out

        def valid_epoch(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            score, result = va(*a, **k)
            self.valid.append(time.perf_counter() - t)
            self.scores.append(float(score))
            n = len(self.scores)
            if self.every and n % self.every == 0:
                print(f"  [RecBole {self.label}] epoch {n}: valid Recall@20 {score:.4f}, "
                      f"best {max(self.scores):.4f} (epoch {int(np.argmax(self.scores)) + 1})",
                      flush=True)
            return score, result

        trainer._train_epoch, trainer._valid_epoch = train_epoch, valid_epoch


def cmd_quality(args: argparse.Namespace) -> dict[str, Any]:
    """RecBole's default training (lr 1e-3, <= 300 epochs or ``--max-epochs``), then its test."""
    extra: dict[str, Any] = {"epochs": args.max_epochs} if args.max_epochs else {}
    if args.stopping_step:
        extra["stopping_step"] = args.stopping_step
    config, dataset, train_data, valid_data, test_data, trainer = build(args.model, args, extra)
    timer = EpochTimer(trainer, every=10, label=args.model)
    t0 = time.perf_counter()
    best = BestInMemory(trainer)
    best_valid, best_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_s = time.perf_counter() - t0
    best.restore()
    again = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    if abs(float(again["recall@20"]) - float(best_valid)) > 1e-6:
        raise RuntimeError(f"restored model scores valid Recall@20 {again['recall@20']}, "
                           f"not the best {best_valid}: the in-memory best model is wrong")
    test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return {
        "model": args.model,
        "users": dataset.user_num - 1, "items": dataset.item_num - 1, "inter": dataset.inter_num,
        "split": [int(d._dataset.inter_num) for d in (train_data, valid_data, test_data)],
        "settings": {k: config[k] for k in ("learning_rate", "epochs", "stopping_step",
                                            "train_batch_size", "embedding_size", "seed",
                                            "learner", "weight_decay", "train_neg_sample_args",
                                            "eval_batch_size", "valid_metric")}
        | ({"n_layers": config["n_layers"], "reg_weight": config["reg_weight"]}
           if args.model == "LightGCN" else {}),
        "epochs_run": len(timer.scores),
        "best_epoch": int(np.argmax(timer.scores)) + 1 if timer.scores else None,
        "best_valid_recall_20": float(best_valid),
        "test": {k: float(v) for k, v in test.items()},
        "fit_s": fit_s,
    }


def cmd_timing(args: argparse.Namespace) -> dict[str, Any]:
    """``fit`` for warm-up + ``--epochs`` epochs without saving; seconds per train / valid epoch."""
    extra = {"epochs": args.warmup + args.epochs, "stopping_step": 10**6}
    config, dataset, train_data, valid_data, test_data, trainer = build(args.model, args, extra)
    timer = EpochTimer(trainer, every=0)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    train, valid = timer.train[args.warmup:], timer.valid[args.warmup:]
    return {"model": args.model, "train_s": train, "valid_s": valid,
            "train_median": statistics.median(train), "valid_median": statistics.median(valid),
            "threads": torch.get_num_threads(),
            "train_batches": len(train_data), "valid_users": int(valid_data.user_df.length)
            if hasattr(valid_data, "user_df") else None}


def _load_ranking(path: str) -> Any:
    """The harness's harness/metrics/ranking.py (pure torch), loaded by file path."""
    spec = importlib.util.spec_from_file_location("harness_ranking", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cmd_metrics(args: argparse.Namespace) -> dict[str, Any]:
    """RecBole's Recall/NDCG@20 against harness/metrics/ranking.py on the same score matrices."""
    from recbole.evaluator import Collector, Evaluator
    from recbole.evaluator.metrics import NDCG, Recall

    numpy_aliases()
    rk = _load_ranking(args.ranking_py)
    root = Path(args.data_path) / args.dataset

    def pairs(part: str) -> tuple[list[str], list[str]]:
        rows = (root / f"{args.dataset}.{part}.inter").read_text().splitlines()[1:]
        cols = [r.split("\t") for r in rows]
        return [c[0] for c in cols], [c[1] for c in cols]

    tu, ti = pairs("train")
    vu, vi = pairs("valid")
    users = {u: k for k, u in enumerate(sorted(set(tu) | set(vu)))}
    items = {i: k for k, i in enumerate(sorted(set(ti) | set(vi)))}
    n_u, n_i = len(users), len(items)
    train = torch.zeros(n_u, n_i, dtype=torch.bool)
    train[[users[u] for u in tu], [items[i] for i in ti]] = True
    truth = torch.zeros(n_u, n_i, dtype=torch.bool)
    truth[[users[u] for u in vu], [items[i] for i in vi]] = True
    keep = truth.any(1)
    train, truth = train[keep], truth[keep]
    k = 20
    cfg = {"metrics": ["Recall", "NDCG"], "topk": [k], "metric_decimal_place": 12,
           "eval_args": {"mode": {"valid": "full", "test": "full"}}, "device": torch.device("cpu")}
    gen = torch.Generator().manual_seed(0)
    matrices = {
        "random normal": torch.randn(len(truth), n_i, generator=gen),
        "item popularity (ties)": train.sum(0, dtype=torch.float32).expand(len(truth), -1).clone(),
    }
    out: dict[str, Any] = {"users": int(len(truth)), "items": n_i, "k": k, "cases": {}}
    for name, scores in matrices.items():
        # RecBole: history items to -inf, then its Collector (topk, gather) and Evaluator
        masked = scores.masked_fill(train, -np.inf)
        pu, pi = torch.nonzero(truth, as_tuple=True)
        col = Collector(cfg)
        col.eval_batch_collect(masked, None, pu, pi)
        res = Evaluator(cfg).evaluate(col.get_data_struct())
        rec_mat = col.data_struct.get("rec.topk") if "rec.topk" in col.data_struct else None
        # harness: topk with the exclusion mask, hits, per-user recall / ndcg
        top = rk.topk_items(scores, k, train)
        hit = rk.hits(top, truth)
        n = truth.sum(1)
        h_rec, h_ndcg = rk.recall_at_k(hit, n), rk.ndcg_at_k(hit, n)
        # per user, RecBole's metric_info on the same hit matrix it collected
        _, topk_idx = torch.topk(masked, k, dim=-1)
        pos_idx = torch.gather(truth.int(), 1, topk_idx).bool().numpy()
        pos_len = n.numpy()
        r_rec = Recall(cfg).metric_info(pos_idx, pos_len)[:, k - 1]
        r_ndcg = NDCG(cfg).metric_info(pos_idx, pos_len)[:, k - 1]
        out["cases"][name] = {
            "recbole": {"recall@20": float(res["recall@20"]), "ndcg@20": float(res["ndcg@20"])},
            "harness": {"recall@20": float(h_rec.nanmean()), "ndcg@20": float(h_ndcg.nanmean())},
            "max_abs_diff_mean": max(abs(float(res["recall@20"]) - float(h_rec.nanmean())),
                                     abs(float(res["ndcg@20"]) - float(h_ndcg.nanmean()))),
            "max_abs_diff_per_user": float(max(np.abs(r_rec - h_rec.numpy()).max(),
                                               np.abs(r_ndcg - h_ndcg.numpy()).max())),
            "same_topk_hits": bool(rec_mat is None or torch.equal(
                rec_mat[:, :k].bool(), torch.from_numpy(pos_idx))),
        }
    return out


def main() -> None:
    """Parse arguments, run one command, write its JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("command", choices=("quality", "timing", "metrics"))
    p.add_argument("--model", choices=MODELS, default="BPR")
    p.add_argument("--data-path", required=True, help="folder holding <dataset>/<dataset>.*.inter")
    p.add_argument("--dataset", default="ml100k")
    p.add_argument("--workdir", default=".")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2048, help="train_batch_size")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max-epochs", type=int, default=0, help="quality: cap on epochs (0: 300)")
    p.add_argument("--stopping-step", type=int, default=0,
                   help="quality: RecBole's stopping_step (0: its default 10)")
    p.add_argument("--ranking-py", default=None)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    for name in ("data_path", "out", "ranking_py", "workdir"):  # before the chdir below
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    os.makedirs(args.workdir, exist_ok=True)
    os.chdir(args.workdir)  # RecBole writes log/ and log_tensorboard/ into the working directory
    torch.set_num_threads(args.threads)
    fn = {"quality": cmd_quality, "timing": cmd_timing, "metrics": cmd_metrics}[args.command]
    result = fn(args)
    result["recbole"] = __import__("recbole").__version__
    result["torch"] = torch.__version__
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
