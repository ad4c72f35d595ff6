"""Benchmark specifications: one YAML per benchmark, expanded into runs.

A benchmark YAML names the method rows (each an entry point plus parameters), the
datasets (each a dataset entry point plus parameters), the seeds, the validation
metric that selects checkpoints and hyperparameters, the table metrics, Trainer
settings, and profiles. A profile is a partial YAML deep-merged over the base:
that is the only layer of precedence, plus the few explicit command-line
overrides (seeds, data directory, Trainer settings). What a run will do is thus
readable from one file and the method's signature.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import registry
from harness.cache import stable_hash
from harness.errors import UserError

_TOP_KEYS = {
    "name", "description", "proposed", "methods", "datasets", "seeds", "monitor", "table",
    "trainer", "early_stopping", "profiles", "requires_data", "requires_backbone", "curves",
}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in; nested dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class RunSpec:
    """One run: a method row on one dataset with one seed."""

    benchmark: str
    label: str
    method: str
    params: dict[str, Any]
    group: str
    dataset_label: str
    dataset: str
    dataset_params: dict[str, Any]
    seed: int
    trainer: dict[str, Any]
    monitor: str
    mode: str
    early_stopping: dict[str, Any] | None = None

    def key(self, data_fingerprint: str, method_version: str = "1") -> str:
        """Hash of everything that determines the result (not tracking or display fields)."""
        return stable_hash({
            "method": self.method, "params": self.params, "dataset": self.dataset,
            "dataset_params": self.dataset_params, "data": data_fingerprint, "seed": self.seed,
            "trainer": self.trainer, "monitor": [self.monitor, self.mode],
            "early_stopping": self.early_stopping, "version": method_version,
        })

    @property
    def name(self) -> str:
        return f"{self.label} | {self.dataset_label} | seed {self.seed}"


@dataclass
class Benchmark:
    """A benchmark with one profile applied."""

    name: str
    profile: str
    config: dict[str, Any]
    path: Path
    runs: list[RunSpec] = field(default_factory=list)

    @property
    def proposed(self) -> list[str]:
        return list(self.config.get("proposed", []))

    @property
    def table(self) -> list[str]:
        return list(self.config["table"])

    @property
    def curves(self) -> dict[str, dict[str, Any]]:
        """Report plots of a metric family against x: ``{name: {metric: "rmse_zos_d{x}", xlabel}}``."""
        return dict(self.config.get("curves") or {})

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        return self.config["methods"]

    @property
    def datasets(self) -> list[str]:
        return list(self.config["datasets"])


def benchmarks_dir() -> Path:
    """``./benchmarks`` if it holds benchmark YAMLs, else the one beside the installed sources."""
    here = Path.cwd() / "benchmarks"
    if here.is_dir() and any(here.glob("*.yaml")):
        return here
    return Path(__file__).resolve().parents[1] / "benchmarks"


def available() -> list[str]:
    return sorted(p.stem for p in benchmarks_dir().glob("*.yaml"))


def load(
    name: str,
    profile: str = "default",
    seeds: int | None = None,
    data_dir: str | None = None,
    dataset: str | None = None,
    trainer: dict[str, Any] | None = None,
    tuned: bool = False,
    backbone: str | None = None,
) -> Benchmark:
    """Read ``benchmarks/<name>.yaml`` (or a YAML path), apply a profile and overrides, expand runs.

    ``data_dir`` / ``dataset``: real data, mapped onto each dataset's parameters as its class
    declares (:class:`harness.api.RealData`); ``dataset`` alone keeps one dataset label.
    ``tuned``: each row takes the parameters a sweep wrote for its final dataset label
    (:func:`tuned_path`). ``backbone`` (a local model directory) goes to the parameter each
    dataset names in ``backbone_param``.
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else benchmarks_dir() / f"{name}.yaml"
    if not path.exists():
        raise UserError(
            f"no benchmark {name!r} (looked for {path}); available: {', '.join(available())}"
        )
    raw = yaml.safe_load(path.read_text()) or {}
    for k in [k for k in raw if str(k).startswith("x-")]:  # anchors only (``x-name: &a {...}``)
        raw.pop(k)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise UserError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    profiles = raw.pop("profiles", {}) or {}
    if profile not in profiles and profile != "default":
        raise UserError(
            f"unknown profile {profile!r} for benchmark {path.stem}; "
            f"choose one of {', '.join(sorted(set(profiles) | {'default'}))}"
        )
    cfg = deep_merge(raw, profiles.get(profile) or {})
    cfg.setdefault("name", path.stem)
    for req in ("methods", "datasets", "monitor", "table"):
        if req not in cfg:
            raise UserError(f"{path}: missing required key {req!r}")
    if data_dir is not None:
        cfg["datasets"] = _real_data(cfg["datasets"], data_dir, dataset)
    elif dataset is not None:
        if dataset not in cfg["datasets"]:
            raise UserError(
                f"benchmark {cfg['name']} has no dataset {dataset!r}; it has "
                f"{', '.join(cfg['datasets'])} (give DATA=/path to read a real category)"
            )
        cfg["datasets"] = {dataset: cfg["datasets"][dataset]}
    elif cfg.get("requires_data"):
        raise UserError(
            f"profile {profile!r} of {cfg['name']} runs on real data: pass DATA=/path/to/dir "
            "(make; plus DATASET=<category> where a benchmark reads one category) or "
            "--data/--dataset (harness)"
        )
    if backbone is not None:
        cfg["datasets"] = _with_backbone(cfg["datasets"], backbone)
    elif cfg.get("requires_backbone"):
        raise UserError(
            f"profile {profile!r} of {cfg['name']} adapts a real LLM: pass "
            "BACKBONE=/path/to/Qwen2-7B-Instruct (make) or --backbone (harness), a local Hugging "
            "Face model directory (nothing is downloaded at run time)"
        )
    tuned_params = load_tuned(cfg["name"], list(cfg["datasets"])) if tuned else {}
    if seeds is not None:
        cfg["seeds"] = list(range(seeds))
    elif isinstance(cfg.get("seeds", 3), int):
        cfg["seeds"] = list(range(cfg.get("seeds", 3)))
    if trainer:
        cfg["trainer"] = deep_merge(cfg.get("trainer", {}), trainer)
    mon = cfg["monitor"]
    if not isinstance(mon, dict) or "metric" not in mon or mon.get("mode") not in ("max", "min"):
        raise UserError(f"{path}: monitor must be {{metric: val/<name>, mode: max|min}}")
    bench = Benchmark(name=cfg["name"], profile=profile, config=cfg, path=path)
    for ds_label, ds in cfg["datasets"].items():
        for label, m in cfg["methods"].items():
            if "method" not in m:
                raise UserError(f"{path}: method row {label!r} needs a 'method' entry point name")
            params = dict(m.get("params") or {})
            params.update(tuned_params.get(ds_label, {}).get(label) or {})
            ds_params = deep_merge(ds.get("params") or {}, m.get("data_params") or {})
            for seed in cfg["seeds"]:
                bench.runs.append(RunSpec(
                    benchmark=bench.name, label=label, method=m["method"], params=params,
                    group=m.get("group", label), dataset_label=ds_label,
                    dataset=ds["dataset"], dataset_params=ds_params, seed=int(seed),
                    trainer=dict(cfg.get("trainer") or {}), monitor=mon["metric"],
                    mode=mon["mode"], early_stopping=cfg.get("early_stopping"),
                ))
    return bench


def tuned_path(bench: str, dataset: str) -> Path:
    """``benchmarks/tuned/<bench>-<dataset label>.yaml`` under the working directory: written by
    a sweep, read by ``--tuned``; the label is the final one (a real category's name on real data)."""
    return Path.cwd() / "benchmarks" / "tuned" / f"{bench}-{dataset}.yaml"


def load_tuned(bench: str, datasets: list[str]) -> dict[str, dict[str, Any]]:
    """dataset label -> row -> parameters, from the tuned YAMLs of these dataset labels."""
    out = {}
    for ds in datasets:
        path = tuned_path(bench, ds)
        if path.exists():
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); rerun "
                                "the sweep or fix the file") from None
            if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                raise UserError(f"{path} must map method rows to parameters; rerun the sweep")
            out[ds] = data
    if not out:
        raise UserError(f"no tuned parameters for {bench} (looked for "
                        f"{', '.join(str(tuned_path(bench, d)) for d in datasets)}); run "
                        "`make sweep` with the same DATA / DATASET first")
    return out


def _dataset_class(label: str, ds: dict[str, Any]) -> Any:
    if not isinstance(ds, dict) or "dataset" not in ds:
        raise UserError(f"dataset {label!r} needs a 'dataset' entry point name")
    return registry.load("dataset", ds["dataset"])


def _with_backbone(datasets: dict[str, Any], backbone: str) -> dict[str, Any]:
    """Every dataset's ``backbone_param`` set to the resolved local model directory."""
    params = {}
    for label, ds in datasets.items():
        param = _dataset_class(label, ds).backbone_param
        if param is None:
            raise UserError(f"dataset {label!r} ({ds['dataset']}) takes no backbone; "
                            "BACKBONE / --backbone is for the methods built on a local model")
        params[label] = param
    path = Path(backbone).expanduser()
    if not path.is_dir():
        raise UserError(f"backbone directory {backbone} does not exist (BACKBONE / --backbone)")
    if not (path / "config.json").is_file():
        raise UserError(f"backbone directory {backbone} has no config.json: not a Hugging Face "
                        "model directory")
    return {label: {**ds, "params": {**(ds.get("params") or {}), params[label]: str(path.resolve())}}
            for label, ds in datasets.items()}


def _real_data(datasets: dict[str, Any], data_dir: str, category: str | None) -> dict[str, Any]:
    """Point the benchmark's datasets at real files in ``data_dir``, as each class declares.

    If a dataset takes a category (``real_data.category_param``), the benchmark's datasets
    are replaced by the one category ``category`` names, with the first dataset's
    parameters. Otherwise every dataset keeps its label and parameters and reads from
    ``data_dir``; ``category`` then optionally picks one of the labels.
    """
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise UserError(f"data directory {data_dir} does not exist")
    resolved = path.resolve()
    classes = {label: _dataset_class(label, ds) for label, ds in datasets.items()}
    if not any(cls.real_data and cls.real_data.category_param for cls in classes.values()):
        if category is not None and category not in datasets:
            raise UserError(f"DATASET={category} is none of this benchmark's datasets "
                            f"({', '.join(datasets)})")
        chosen = [category] if category else list(datasets)
        return {label: {**datasets[label], "params": classes[label].for_real_data(
            datasets[label].get("params") or {}, resolved)} for label in chosen}
    if not category:
        raise UserError("DATA was given without DATASET: name the category, e.g. DATASET=Books")
    label, first = next(iter(datasets.items()))
    params = classes[label].for_real_data(first.get("params") or {}, resolved, category)
    return {category: {"dataset": first["dataset"], "params": params}}
