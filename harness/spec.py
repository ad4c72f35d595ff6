"""Benchmark specifications: one YAML per benchmark, expanded into runs.

A benchmark YAML names the method rows (each an entry point plus parameters), the
datasets (each a dataset entry point plus parameters), the seeds, the validation
metric that selects checkpoints and hyperparameters, the table metrics, Trainer
settings, and profiles. A profile is a partial YAML deep-merged over the base:
that is the only layer of precedence, plus the few explicit command-line
overrides (seeds, data directory, Trainer settings). What a run will do is thus
readable from one file and the method's signature.

Before anything runs, :func:`validate` checks the file in every profile: YAML syntax, types,
ranges, and every name it references (entry points and their parameters, Trainer and
EarlyStopping arguments, rows, the metrics the methods declare, the rows, metrics and datasets
the paper claims name: :mod:`harness.claims`); each problem is one line,
``<file>: <key path>: <problem>; <what to do>``.
"""

from __future__ import annotations

import builtins
import collections.abc
import copy
import difflib
import enum
import functools
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

import yaml

from harness import claims as claims_mod
from harness import registry
from harness.cache import stable_hash
from harness.errors import UserError

_TOP_KEYS = {
    "name", "description", "proposed", "methods", "datasets", "seeds", "monitor", "table",
    "trainer", "early_stopping", "profiles", "requires_data", "requires_backbone", "curves",
    "selection", "jobs", "paper", "claims", "claims_alpha",
}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in; nested dicts merge, everything else replaces,
    and ``null`` over a mapping removes it (a profile drops a dataset or row: ``text: null``)."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if v is None and isinstance(out.get(k), dict):
            del out[k]
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
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
    #: further model-selection criteria: (name, val metric, mode); the final stage keeps a best
    #: checkpoint per criterion and the test is repeated with each, as ``test/<name>/<metric>``
    selection: tuple[tuple[str, str, str], ...] = ()

    def key(self, data_fingerprint: str, method_version: str = "1") -> str:
        """Hash of everything that determines the result (not tracking or display fields)."""
        fields = {
            "method": self.method, "params": self.params, "dataset": self.dataset,
            "dataset_params": self.dataset_params, "data": data_fingerprint, "seed": self.seed,
            "trainer": self.trainer, "monitor": [self.monitor, self.mode],
            "early_stopping": self.early_stopping, "version": method_version,
        }
        if self.selection:  # only when set: the keys of benchmarks without it are unchanged
            fields["selection"] = [list(c) for c in self.selection]
        return stable_hash(fields)

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
    def selection(self) -> dict[str, dict[str, Any]]:
        """Further model-selection criteria: ``{name: {metric: val/..., mode, label}}``."""
        return dict(self.config.get("selection") or {})

    @property
    def jobs(self) -> int | None:
        """Runs at once when neither ``--jobs`` nor ``$JOBS`` says (``jobs:``), else None."""
        return self.config.get("jobs")

    @property
    def claims(self) -> list[claims_mod.Claim]:
        """The paper claims this benchmark declares (``claims:``; :mod:`harness.claims`)."""
        return claims_mod.parse(self.config)

    @property
    def claims_alpha(self) -> float:
        """Significance level of the claims' one-sided tests (``claims_alpha:``, default 0.05)."""
        return float(self.config.get("claims_alpha") or claims_mod.DEFAULT_ALPHA)

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
    dataset names in ``backbone_param``. The file is validated first (:func:`validate`), and so
    are ``seeds`` and the ``trainer`` overrides (:func:`trainer_problem`).
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else benchmarks_dir() / f"{name}.yaml"
    if not path.exists():
        raise UserError(
            f"no benchmark {name!r} (looked for {path}); available: {', '.join(available())}"
        )
    raw = read_yaml(path)
    if raw is None:
        raise UserError(f"{path}: the file is empty; write a benchmark ({', '.join(_MISSING_HINT.values())})")
    if isinstance(raw, dict):
        for k in [k for k in raw if str(k).startswith("x-")]:  # anchors only (``x-name: &a {...}``)
            raw.pop(k)
    validate(raw, path)
    if seeds is not None and (not _int(seeds) or seeds < 1):
        raise UserError(f"seeds must be a positive integer (SEEDS= / --seeds), got {seeds!r}")
    for k, v in (trainer or {}).items():
        issue = trainer_value_error(k, v)
        if issue:
            raise UserError(f"Trainer setting {k}={v!r} (command line): {issue}")
    profiles = raw.pop("profiles", {}) or {}
    if profile not in profiles and profile != "default":
        raise UserError(
            f"unknown profile {profile!r} for benchmark {path.stem}; "
            f"choose one of {', '.join(sorted(set(profiles) | {'default'}))}"
        )
    cfg = deep_merge(raw, profiles.get(profile) or {})
    cfg.setdefault("name", path.stem)
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
    selection = tuple((name, c["metric"], c["mode"]) for name, c in (cfg.get("selection") or {}).items())
    bench = Benchmark(name=cfg["name"], profile=profile, config=cfg, path=path)
    for ds_label, ds in cfg["datasets"].items():
        for label, m in cfg["methods"].items():
            # the dataset's settings for every row (e.g. a learning rate for a pretrained backbone),
            # then the row's own, then a sweep's
            params = {**(ds.get("method_params") or {}), **(m.get("params") or {})}
            params.update(tuned_params.get(ds_label, {}).get(label) or {})
            ds_params = deep_merge(ds.get("params") or {}, m.get("data_params") or {})
            for seed in cfg["seeds"]:
                bench.runs.append(RunSpec(
                    benchmark=bench.name, label=label, method=m["method"], params=params,
                    group=m.get("group", label), dataset_label=ds_label,
                    dataset=ds["dataset"], dataset_params=ds_params, seed=int(seed),
                    trainer=dict(cfg.get("trainer") or {}), monitor=mon["metric"],
                    mode=mon["mode"], early_stopping=cfg.get("early_stopping"),
                    selection=selection,
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
    if not (path / "config.json").is_file() and not (path / "model_index.json").is_file():
        raise UserError(f"backbone directory {backbone} has neither config.json (a Hugging Face model "
                        "directory) nor model_index.json (a diffusers pipeline directory)")
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


# ------------------------------------------------------------------ reading and validation
#
# Everything in a benchmark YAML is checked before any run starts: YAML syntax, types,
# ranges, and every name it references (entry points, their parameters, Trainer and
# EarlyStopping arguments, rows, metrics the methods declare). Each problem is one line,
# ``<file>: <key path>: <problem>; <what to do>``.

_ROW_KEYS = ("method", "params", "data_params", "group", "reference")
_DATASET_KEYS = ("dataset", "params", "method_params")
_CURVE_KEYS = ("metric", "xlabel", "log")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_YAML_NUMBER_AS_TEXT = re.compile(r"[-+]?(\d[\d_]*)?\.?\d*[eE][-+]?\d+")
# Trainer arguments the runner sets itself, and why
_HARNESS_TRAINER = {
    "logger": "the harness logs to MLflow itself",
    "callbacks": "the harness adds checkpointing (and early_stopping: in the YAML)",
    "default_root_dir": "checkpoints go under --run-dir",
    "enable_progress_bar": "use --no-progress to hide it",
}
_MISSING_HINT = {
    "methods": "methods: {row: {method: <entry point>, params: {...}}}",
    "datasets": "datasets: {label: {dataset: <entry point>, params: {...}}}",
    "monitor": "monitor: {metric: val/<name>, mode: max|min}",
    "table": "table: [<metric>, ...]",
}


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, line: int, first: int):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first = key, line, first


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            sig = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if sig in seen:
                raise _DuplicateKey(key_node.value, line, seen[sig])
            seen[sig] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; a syntax error is one line with ``file:line``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror}); check the path and its "
                        "permissions") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader)
    except _DuplicateKey as exc:
        raise UserError(f"{path}:{exc.line}: duplicate key {exc.key!r} (first at line {exc.first}); "
                        "keep one of them (YAML would silently use the last)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        lines = text.splitlines()
        tabbed = [n for n, ln in enumerate(lines, 1) if "\t" in ln[: len(ln) - len(ln.lstrip())]]
        if tabbed and ("\\t" in str(exc) or line in tabbed):
            at = line if line in tabbed else tabbed[0]
            raise UserError(f"{path}:{at}: a tab in the indentation; YAML allows spaces only, "
                            "indent with spaces") from None
        if mark is not None and line and re.search(r":\s*[<>]=?\s*(,|}|$)", lines[line - 1]
                                                   if line <= len(lines) else ""):
            raise UserError(f"{path}:{line}: a bare comparison ({lines[line - 1].strip()}); YAML "
                            'reads > as the start of a text block: quote it, direction: ">="') from None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        cmark = getattr(exc, "context_mark", None)
        if context and cmark is not None:
            context = f"{context} opened at line {cmark.line + 1}"
        where = f"{path}:{line}:{mark.column + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: invalid YAML: {problem}{f' ({context})' if context else ''}; "
                        "fix the syntax (quote values holding ': ' or ' #', close brackets and "
                        "quotes, indent with spaces)") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _describe(tp: Any) -> str:
    """An annotation in words: ``int | None`` -> ``an integer or null``."""
    if tp is Any:
        return "anything"
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        literals = [v for a in args if get_origin(a) is Literal for v in get_args(a)]
        parts = [f"one of {', '.join(map(repr, literals))}"] if literals else []
        parts += [_describe(a) for a in args if get_origin(a) is not Literal]
        return " or ".join(dict.fromkeys(parts))
    if origin is Literal:
        return f"one of {', '.join(map(repr, args))}"
    simple = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
              type(None): "null", list: "a list", tuple: "a list", dict: "a mapping"}
    if tp in simple:
        return simple[tp]
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values"
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args \
            else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether a YAML value fits an annotation (lists stand for tuples; unknown types pass)."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        return any(_type_ok(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp in (list, tuple):
        return isinstance(value, list | tuple)
    if tp is dict:
        return isinstance(value, dict)
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_type_ok, value, args))
        return not args or all(_type_ok(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict) and (len(args) != 2 or all(
            _type_ok(k, args[0]) and _type_ok(v, args[1]) for k, v in value.items()))
    if isinstance(tp, type):
        if isinstance(value, tp):
            return True
        if issubclass(tp, PurePath):
            return isinstance(value, str)
        if issubclass(tp, enum.Enum):
            return any(value in (m.value, m.name) for m in tp)
    return True  # a class YAML cannot express: left to the constructor


def _hints(func: Any) -> dict[str, Any]:
    """Resolved annotations of ``func``; one that cannot be resolved counts as ``Any``."""
    try:
        return typing.get_type_hints(func)
    except Exception:  # one unresolvable name: resolve the others by lookup, never by eval
        scope = {**vars(builtins), **getattr(func, "__globals__", {})}
        return {name: _lookup(ann, scope) if isinstance(ann, str) else ann
                for name, ann in getattr(func, "__annotations__", {}).items()}


def _lookup(name: str, scope: dict[str, Any]) -> Any:
    """A string annotation that is a (dotted) name in ``scope``; anything else counts as ``Any``."""
    head, *rest = name.strip().split(".")
    obj = scope.get(head, Any) if head.isidentifier() else Any
    for part in rest:
        obj = getattr(obj, part, Any) if part.isidentifier() and obj is not Any else Any
    return obj


@functools.cache
def _init_parameters(cls: type, skip: int = 0) -> tuple[dict[str, Any], bool]:
    """Keyword parameters ``cls(...)`` accepts (name -> annotation), and whether it takes any.

    Follows ``**kwargs`` up the MRO (a method's ``__init__(self, info, lam, **kw)`` passes
    ``kw`` to its base); ``skip`` leading parameters after ``self`` (a method's ``info``).
    """
    out: dict[str, Any] = {}
    for k in cls.__mro__:
        if "__init__" not in k.__dict__:
            continue
        if k is object or k.__module__.split(".")[0] in ("lightning", "pytorch_lightning", "torch"):
            return out, True  # **kwargs reach the framework: not ours to check
        params = list(inspect.signature(k.__init__).parameters.values())[1 + skip:]
        hints = _hints(k.__init__)
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                out.setdefault(p.name, hints.get(p.name, Any))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return out, False
    return out, True


def _value_hint(value: Any, tp: Any) -> str:
    """What to do about a value of the wrong type."""
    numeric = any(_type_ok(x, tp) for x in (1, 1.5))
    if isinstance(value, str) and numeric and _YAML_NUMBER_AS_TEXT.fullmatch(value):
        return (f"YAML reads {value} as text (a float needs a dot and a signed exponent): "
                f"write {float(value)!r}")
    if isinstance(value, str) and numeric:
        try:
            float(value)
            return "remove the quotes"
        except ValueError:
            pass
    described = _describe(tp)
    return "change it to one of those" if " or " in described or "one of" in described \
        else f"give {described}"


def _type_issue(value: Any, tp: Any) -> tuple[str, str]:
    """(problem, what to do) for a value that does not fit annotation ``tp``."""
    return f"{value!r} is {_kind(value)}, not {_describe(tp)}", _value_hint(value, tp)


@functools.cache
def _trainer_hints() -> dict[str, Any]:
    from lightning.pytorch import Trainer

    return {k: v for k, v in _hints(Trainer.__init__).items() if k != "return"}


@functools.cache
def _early_stopping_hints() -> dict[str, Any]:
    from lightning.pytorch.callbacks import EarlyStopping

    return {k: v for k, v in _hints(EarlyStopping.__init__).items()
            if k not in ("return", "monitor", "mode")}


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction_or_count(value: Any) -> bool:
    return (_int(value) and value >= 0) or (isinstance(value, float) and 0.0 <= value <= 1.0)


_TRAINER_RANGES: dict[str, tuple[Any, str]] = {
    "max_epochs": (lambda v: v is None or v == -1 or v >= 1, ">= 1 (or -1 for no limit)"),
    "min_epochs": (lambda v: v is None or v >= 0, ">= 0"),
    "max_steps": (lambda v: v >= -1, ">= 1 (or -1 for no limit)"),
    "min_steps": (lambda v: v is None or v >= 0, ">= 0"),
    "num_nodes": (lambda v: v >= 1, ">= 1"),
    "accumulate_grad_batches": (lambda v: v >= 1, ">= 1"),
    "check_val_every_n_epoch": (lambda v: v is None or v >= 1, ">= 1"),
    "log_every_n_steps": (lambda v: v is None or v >= 1, ">= 1"),
    "num_sanity_val_steps": (lambda v: v is None or v >= -1, ">= 0 (or -1 for all)"),
    "reload_dataloaders_every_n_epochs": (lambda v: v >= 0, ">= 0"),
    "gradient_clip_val": (lambda v: v is None or v >= 0, ">= 0"),
    "gradient_clip_algorithm": (lambda v: v in (None, "norm", "value"), "'norm' or 'value'"),
    "fast_dev_run": (lambda v: v >= 0, ">= 0 (or true/false)"),
    **{k: (lambda v: v is None or _fraction_or_count(v), "a count >= 0 or a fraction in [0, 1]")
       for k in ("limit_train_batches", "limit_val_batches", "limit_test_batches",
                 "limit_predict_batches", "overfit_batches")},
}


def _devices_ok(v: Any) -> bool:
    if _int(v):
        return v >= 1 or v == -1
    if isinstance(v, str):
        s = v.strip()
        return s == "auto" or bool(re.fullmatch(r"-1|[1-9]\d*|\d+(,\s*\d+)*,?", s))
    return isinstance(v, list) and bool(v) and all(_int(i) and i >= 0 for i in v) and \
        len(set(v)) == len(v)


def _registered(kind: str) -> list[str]:
    if kind == "accelerator":
        from lightning.pytorch.accelerators import AcceleratorRegistry

        return ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry.available_strategies()]


def trainer_problem(name: str, value: Any) -> tuple[str, str] | None:
    """(problem, what to do) if ``lightning.pytorch.Trainer(name=value)`` cannot work, else None.

    Checks the name against ``Trainer.__init__``, the value against its annotation, and the
    ranges, accelerators, strategies and device specs Lightning accepts.
    """
    hints = _trainer_hints()
    if name in _HARNESS_TRAINER:
        return "set by the harness", f"remove it ({_HARNESS_TRAINER[name]})"
    if name not in hints:
        close = difflib.get_close_matches(str(name), hints, n=1)
        return ("not an argument of lightning.pytorch.Trainer",
                f"did you mean {close[0]!r}?" if close else "see Trainer's documented arguments")
    tp = hints[name]
    if name == "devices":
        if not _devices_ok(value):
            return (f"{value!r} is not a device count or list",
                    "give a count >= 1, -1 (all), 'auto', a list of indices [0, 1] or '0,1'")
        return None
    if not _type_ok(value, tp):
        return _type_issue(value, tp)
    if name in ("accelerator", "strategy") and isinstance(value, str):
        names = _registered(name)
        if (value.lower() if name == "strategy" else value) not in names:
            close = difflib.get_close_matches(value.lower(), names, n=1)
            return (f"{value!r} is not a Lightning {name}",
                    f"did you mean {close[0]!r}?" if close else
                    f"use one of {', '.join(sorted(names, key=len)[:8])}"
                    f"{', ...' if len(names) > 8 else ''}")
    check = _TRAINER_RANGES.get(name)
    if check is not None and not check[0](value):
        return f"{value!r} is out of range", f"give {check[1]}"
    return None


def trainer_value_error(name: str, value: Any) -> str | None:
    """:func:`trainer_problem` as one phrase (for command-line flags), or None."""
    issue = trainer_problem(name, value)
    return None if issue is None else f"{issue[0]}; {issue[1]}"


def _fmt_keys(keys: tuple[Any, ...]) -> str:
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) and not isinstance(k, bool) else f"{'.' if out else ''}{k}"
    return out


def _in_overlay(overlay: Any, keys: tuple[Any, ...]) -> bool:
    """Whether the value at ``keys`` comes from the profile ``overlay`` (deep-merged over the base)."""
    node = overlay
    for k in keys:
        if not isinstance(node, dict):
            return True  # the profile replaced this whole subtree
        if k not in node:
            return False
        node = node[k]
    return True


class _Check:
    """Validation of one benchmark configuration (the base with one profile merged)."""

    def __init__(self, path: Path, profile: str, overlay: dict[str, Any] | None,
                 classes: dict[tuple[str, str], Any]):
        self.path, self.profile, self.overlay, self.classes = path, profile, overlay, classes

    def fail(self, keys: tuple[Any, ...], problem: str, todo: str = "") -> NoReturn:
        if self.overlay is not None and keys and _in_overlay(self.overlay, keys):
            where = _fmt_keys(("profiles", self.profile, *keys))
        else:
            where = _fmt_keys(keys) or "(top level)"
            if self.profile != "default":
                problem += f" (with profile {self.profile})"
        raise UserError(f"{self.path}: {where}: {problem}{'; ' + todo if todo else ''}")

    def load(self, kind: str, name: Any, keys: tuple[Any, ...]) -> Any:
        if not isinstance(name, str) or not name:
            self.fail(keys, f"{name!r} is {_kind(name)}, not a {kind} name",
                      f"name a {kind} entry point (see `harness list`)")
        if (kind, name) not in self.classes:
            try:
                self.classes[kind, name] = registry.load(kind, name)
            except UserError as exc:
                self.fail(keys, str(exc))
        return self.classes[kind, name]

    def mapping(self, keys: tuple[Any, ...], value: Any, what: str, allow_none: bool = True,
                allowed: tuple[str, ...] = ()) -> dict[str, Any]:
        if value is None and allow_none:
            return {}
        if not isinstance(value, dict):
            self.fail(keys, f"{_kind(value)}, not a mapping", f"write it as {what}")
        for k in value:
            if not isinstance(k, str):
                self.fail((*keys, k), f"key {k!r} is {_kind(k)}", "keys must be strings: quote it")
            if allowed and k not in allowed:
                close = difflib.get_close_matches(k, allowed, n=1)
                self.fail((*keys, k), "unknown key", f"did you mean {close[0]!r}?" if close else
                          f"allowed: {', '.join(allowed)}")
        return value

    def params(self, keys: tuple[Any, ...], params: Any, cls: type, what: str, skip: int) -> None:
        params = self.mapping(keys, params, "{name: value, ...}")
        accepted, open_ = _init_parameters(cls, skip)
        for name, value in params.items():
            if name not in accepted:
                if open_:
                    continue
                close = difflib.get_close_matches(name, accepted, n=1)
                self.fail((*keys, name), f"{what} takes no parameter {name!r}",
                          f"did you mean {close[0]!r}?" if close else
                          f"it takes {', '.join(sorted(accepted)) or 'none'}")
            tp = accepted[name]
            if not _type_ok(value, tp):
                problem, todo = _type_issue(value, tp)
                self.fail((*keys, name), f"{problem} ({what})", todo)

    def run(self, cfg: dict[str, Any]) -> None:
        for req in ("methods", "datasets", "monitor", "table"):
            if req not in cfg:
                self.fail((req,), "missing", f"add {_MISSING_HINT[req]}")
        self.scalars(cfg)
        rows = self.methods(cfg)
        self.datasets(cfg, rows)
        self.references(cfg, rows)
        self.trainer(cfg)

    def scalars(self, cfg: dict[str, Any]) -> None:
        name = cfg.get("name")
        if name is not None and not (isinstance(name, str) and _NAME.fullmatch(name)):
            self.fail(("name",), f"{name!r} is not a benchmark name",
                      "use letters, digits and _ . + - (it names the MLflow experiment and files)")
        if "description" in cfg and not isinstance(cfg["description"], str | None):
            self.fail(("description",), f"{_kind(cfg['description'])}, not a string", "write a string")
        for flag in ("requires_data", "requires_backbone"):
            if flag in cfg and not isinstance(cfg[flag], bool):
                self.fail((flag,), f"{cfg[flag]!r} is {_kind(cfg[flag])}", "write true or false")
        if "jobs" in cfg and not (_int(cfg["jobs"]) and cfg["jobs"] >= 1):
            self.fail(("jobs",), f"{cfg['jobs']!r} is not a number of runs at once",
                      "give an integer >= 1 (JOBS= / --jobs override it)")
        if "seeds" in cfg:
            s = cfg["seeds"]
            if _int(s):
                if s < 1:
                    self.fail(("seeds",), f"{s} is not a number of seeds",
                              "give 1 or more (or a list of seeds)")
            elif isinstance(s, list) and s:
                for i, v in enumerate(s):
                    if not _int(v) or not 0 <= v < 2**32:
                        self.fail(("seeds", i), f"{v!r} is not a seed",
                                  "seeds are integers in [0, 2**32)")
                if len(set(s)) != len(s):
                    self.fail(("seeds",), f"{s} repeats a seed", "list each seed once")
            else:
                self.fail(("seeds",), f"{s!r} is {_kind(s)}",
                          "give a number of seeds >= 1 or a non-empty list of integer seeds")

    def methods(self, cfg: dict[str, Any]) -> dict[str, type]:
        methods = cfg["methods"]
        if not isinstance(methods, dict) or not methods:
            self.fail(("methods",), f"{_kind(methods) if methods != {} else 'empty'}, not a mapping of rows",
                      f"write {_MISSING_HINT['methods']}")
        self.mapping(("methods",), methods, _MISSING_HINT["methods"])
        rows = {}
        for label, row in methods.items():
            keys = ("methods", label)
            row = self.mapping(keys, row, "{method: <entry point>, params: {...}, data_params: "
                               "{...}, group: <name>, reference: <why>}", allow_none=False,
                               allowed=_ROW_KEYS)
            if "method" not in row:
                self.fail(keys, "no 'method'", "name the method's entry point (see `harness list`)")
            rows[label] = cls = self.load("method", row["method"], (*keys, "method"))
            if "reference" in row and not (isinstance(row["reference"], str) and row["reference"]):
                self.fail((*keys, "reference"), f"{row['reference']!r} is not a text",
                          "say why the row is only a reference, e.g. 'uses training group labels'")
            if "group" in row and not isinstance(row["group"], str):
                self.fail((*keys, "group"), f"{row['group']!r} is {_kind(row['group'])}",
                          "name the group of rows a proposed row is tested against")
            self.params((*keys, "params"), row.get("params"), cls, f"method {row['method']!r}", 1)
        return rows

    def datasets(self, cfg: dict[str, Any], rows: dict[str, type]) -> None:
        datasets = cfg["datasets"]
        if not isinstance(datasets, dict) or not datasets:
            self.fail(("datasets",), f"{_kind(datasets) if datasets != {} else 'empty'}, not a "
                      "mapping of datasets", f"write {_MISSING_HINT['datasets']}")
        self.mapping(("datasets",), datasets, _MISSING_HINT["datasets"])
        for label, ds in datasets.items():
            keys = ("datasets", label)
            ds = self.mapping(keys, ds, "{dataset: <entry point>, params: {...}}",
                              allow_none=False, allowed=_DATASET_KEYS)
            if "dataset" not in ds:
                self.fail(keys, "no 'dataset'", "name the dataset's entry point (see `harness list`)")
            cls = self.load("dataset", ds["dataset"], (*keys, "dataset"))
            what = f"dataset {ds['dataset']!r}"
            self.params((*keys, "params"), ds.get("params"), cls, what, 0)
            for label_row, row in cfg["methods"].items():
                self.params(("methods", label_row, "data_params"), row.get("data_params"), cls,
                            f"{what} (of dataset {label!r})", 0)
                if label_row in rows:  # the dataset's method_params go to every row's method
                    self.params((*keys, "method_params"), ds.get("method_params"), rows[label_row],
                                f"method {row['method']!r} (row {label_row!r})", 1)

    def references(self, cfg: dict[str, Any], rows: dict[str, type]) -> None:
        declared: dict[str, str] = {}
        for cls in rows.values():
            declared.update(cls.metrics)

        def logs(cls: type, metric: str) -> bool:
            return metric in cls.metrics or any(metric.startswith(p) for p in cls.metric_prefixes)

        def choices() -> str:
            prefixes = sorted({f"{p}..." for c in rows.values() for p in c.metric_prefixes})
            return ", ".join(sorted(declared) + prefixes)

        proposed = cfg.get("proposed")
        if proposed is not None:
            if not isinstance(proposed, list):
                self.fail(("proposed",), f"{_kind(proposed)}, not a list", "list method rows: [row, ...]")
            for i, row in enumerate(proposed):
                if row not in rows:
                    self.fail(("proposed", i), f"{row!r} is not a method row",
                              f"name one of {', '.join(rows)}")
        mon = self.mapping(("monitor",), cfg["monitor"], _MISSING_HINT["monitor"], allow_none=False,
                           allowed=("metric", "mode", "label"))
        metric, mode = mon.get("metric"), mon.get("mode")
        if not (isinstance(metric, str) and metric.startswith("val/") and len(metric) > 4):
            self.fail(("monitor", "metric"), f"{metric!r} is not a validation metric",
                      "name one as val/<metric>, e.g. val/" + next(iter(declared), "loss"))
        if mode not in ("max", "min"):
            self.fail(("monitor", "mode"), f"{mode!r} is neither max nor min",
                      "use max (higher is better) or min")
        for label, cls in rows.items():
            stages = getattr(cls, "stages", ("fit",))
            trains = bool(stages) if isinstance(stages, tuple | list) else True
            if trains and not logs(cls, metric[4:]):
                self.fail(("monitor", "metric"), f"{metric} is not declared by method row "
                          f"{label!r} ({cls.__name__}), whose checkpoints it selects",
                          f"name one of its metrics: {', '.join(sorted(cls.metrics)) or 'none'}")
        criteria = self.mapping(("selection",), cfg.get("selection"),
                                "{name: {metric: val/<name>, mode: max|min, label: ...}}")
        for name, crit in criteria.items():
            keys = ("selection", name)
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in ("val", "test", "train"):
                self.fail(keys, f"{name!r} is not a criterion name",
                          "use lower-case letters, digits and _ (it prefixes test metrics: test/<name>/...)")
            crit = self.mapping(keys, crit, "{metric: val/<name>, mode: max|min, label: ...}",
                                allow_none=False, allowed=("metric", "mode", "label"))
            c_metric, c_mode = crit.get("metric"), crit.get("mode")
            if not (isinstance(c_metric, str) and c_metric.startswith("val/") and len(c_metric) > 4):
                self.fail((*keys, "metric"), f"{c_metric!r} is not a validation metric",
                          "name one as val/<metric>")
            if c_mode not in ("max", "min"):
                self.fail((*keys, "mode"), f"{c_mode!r} is neither max nor min", "use max or min")
            if c_metric == metric or c_metric in [c.get("metric") for n, c in criteria.items()
                                                  if n != name and isinstance(c, dict)]:
                self.fail((*keys, "metric"), f"{c_metric} already selects checkpoints here",
                          "give each criterion its own validation metric")
            if not isinstance(crit.get("label", ""), str):
                self.fail((*keys, "label"), f"{_kind(crit['label'])}, not a string", "write a string")
            for label, cls in rows.items():
                stages = getattr(cls, "stages", ("fit",))
                trains = bool(stages) if isinstance(stages, tuple | list) else True
                if trains and not logs(cls, c_metric[4:]):
                    self.fail((*keys, "metric"), f"{c_metric} is not declared by method row {label!r} "
                              f"({cls.__name__}), whose checkpoints it selects",
                              f"name one of its metrics: {', '.join(sorted(cls.metrics)) or 'none'}")

        def logs_table(m: str) -> bool:  # `<criterion>/<metric>`: a test metric under a criterion
            head, _, rest = m.partition("/")
            if rest and head in criteria:
                m = rest
            return any(logs(cls, m) for cls in rows.values())

        table = cfg["table"]
        if not isinstance(table, list) or not table:
            self.fail(("table",), f"{_kind(table) if table != [] else 'empty'}, not a list of metrics",
                      "list the test metrics to tabulate: [recall_20, ...]")
        for i, m in enumerate(table):
            if not isinstance(m, str):
                self.fail(("table", i), f"{m!r} is {_kind(m)}", "name a metric")
            if not logs_table(m):
                bare = m.split("/", 1)[1] if m.startswith(("test/", "val/")) else None
                self.fail(("table", i), f"metric {m!r} is declared by none of the method rows",
                          f"write {bare!r} (without the prefix)" if bare and any(
                              logs(c, bare) for c in rows.values()) else f"use one of {choices()}")
        if len(set(table)) != len(table):
            self.fail(("table",), "names a metric twice", "list each metric once")
        curves = self.mapping(("curves",), cfg.get("curves"), "{name: {metric: <name>_d{x}, xlabel: ...}}")
        for name, curve in curves.items():
            curve = self.mapping(("curves", name), curve, "{metric: rmse_d{x}, xlabel: lead day}",
                                 allow_none=False, allowed=_CURVE_KEYS)
            pattern = curve.get("metric")
            if not isinstance(pattern, str) or pattern.count("{x}") != 1:
                self.fail(("curves", name, "metric"), f"{pattern!r} has no single {{x}}",
                          "write the metric key with {x} where the number stands, e.g. rmse_d{x}")
            if not any(logs(cls, pattern.replace("{x}", "1")) for cls in rows.values()):
                self.fail(("curves", name, "metric"), f"{pattern!r} matches no metric the method "
                          "rows declare", f"use one of {choices()}")
            if not isinstance(curve.get("xlabel", ""), str):
                self.fail(("curves", name, "xlabel"), f"{_kind(curve['xlabel'])}, not a string",
                          "write a string")
            if not isinstance(curve.get("log", False), bool):
                self.fail(("curves", name, "log"), f"{_kind(curve['log'])}, not a boolean",
                          "write true or false")
        claims_mod.validate(cfg, rows, set(criteria), self.fail)

    def trainer(self, cfg: dict[str, Any]) -> None:
        trainer = self.mapping(("trainer",), cfg.get("trainer"), "{max_epochs: 10, accelerator: cpu}")
        for name, value in trainer.items():
            issue = trainer_problem(name, value)
            if issue:
                self.fail(("trainer", name), *issue)
        es = self.mapping(("early_stopping",), cfg.get("early_stopping"), "{patience: 10}")
        hints = _early_stopping_hints()
        for name, value in es.items():
            if name in ("monitor", "mode"):
                self.fail(("early_stopping", name), "set by monitor: (metric and mode)", "remove it here")
            if name not in hints:
                close = difflib.get_close_matches(name, hints, n=1)
                self.fail(("early_stopping", name), "not an argument of EarlyStopping",
                          f"did you mean {close[0]!r}?" if close else f"use {', '.join(hints)}")
            if not _type_ok(value, hints[name]):
                self.fail(("early_stopping", name), *_type_issue(value, hints[name]))
            if name in ("patience", "min_delta") and value < 0:
                self.fail(("early_stopping", name), f"{value!r} is negative", "give a value >= 0")


def validate(raw: dict[str, Any], path: Path) -> None:
    """Check a benchmark YAML (anchors ``x-*`` removed) in every profile; a UserError otherwise.

    The base merged with each profile (``default`` first) must be a complete, valid benchmark;
    an error names the profile key when the bad value comes from the profile.
    """
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the file is {_kind(raw)}, not a mapping of benchmark keys; "
                        f"write name:, methods:, datasets:, ... ({', '.join(sorted(_TOP_KEYS))})")
    top = _Check(path, "default", None, {})
    top.mapping((), raw, "a mapping", allowed=tuple(sorted(_TOP_KEYS)))
    profiles = top.mapping(("profiles",), raw.get("profiles"), "{quick: {...}, paper: {...}}")
    allowed = tuple(sorted(_TOP_KEYS - {"profiles"}))
    for name, overlay in profiles.items():
        top.mapping(("profiles", name), overlay, "a mapping of benchmark keys", allowed=allowed)
    base = {k: v for k, v in raw.items() if k != "profiles"}
    classes: dict[tuple[str, str], Any] = {}
    names = ["default", *[p for p in profiles if p != "default"]]
    for name in names:
        overlay = profiles.get(name) or {}
        _Check(path, name, overlay, classes).run(deep_merge(base, overlay))
