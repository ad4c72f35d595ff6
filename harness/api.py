"""The engine's contract: what a method is, what a dataset is, and how a stage gets its data.

A **dataset** is a :class:`DataModule`. It provides

* ``fingerprint()``: a short hash of its raw files (part of every run key);
* ``info``: the metadata object a method is built from (users and items, grids, tokenizer...);
* ``train_dataloader`` / ``val_dataloader`` / ``test_dataloader`` (Lightning's);
* optionally ``stats()`` (logged as ``data.<name>`` tags), ``use_stage_data(request)`` (the
  data of a method's stage, below), and the class attributes that say how ``DATA=``,
  ``DATASET=`` and ``BACKBONE=`` map onto its parameters (``real_data``, ``backbone_param``;
  a dataset without ``real_data`` is synthetic only).

A **method** is a :class:`Method` (a LightningModule). Its constructor is
``__init__(self, info, **hyperparameters)``: the dataset's ``info`` first, then keyword
hyperparameters with defaults, all saved with ``self.save_hyperparameters(ignore=["info"])``
(the runner logs ``model.hparams`` to MLflow and refuses a method that hides one). It logs
``val/<metric>`` and ``test/<metric>`` and may declare, as class attributes:

* ``metrics``: ``{name: "max" | "min"}``, the direction of each metric it logs;
  ``metric_prefixes`` the same for families of names (``rmse_``);
* ``search_space``: ``{param: ("float" | "log" | "int", low, high) | ("cat", [choices])}``;
* ``version``: bump it when a code change alters results (it is part of the run key);
* ``stages``: the names of its stages, one ``Trainer.fit`` each, in order (default one stage,
  ``fit``; ``()`` for a method that trains nothing); ``stage_independent``:
  ``{stage: (param, ...)}``, the row parameters a stage's weights do not depend on, so rows
  differing only in them train that stage once; ``last_epoch_stages``: stages whose weights
  are their last epoch's (a fixed training length), not the best validation epoch's;
* hooks: ``begin_stage(stage)`` before a stage's fit, ``stage_data(stage)`` the data it asks
  for (a :class:`StageData`), ``finish_stages()`` after the last stage, before the test;
  figures go to the run with ``self.log_figure(fig, "name.png")``.

Data flow is one way: before each stage the runner calls ``model.begin_stage(stage)``, then
``dm.use_stage_data(model.stage_data(stage))``; no dataset reads the model.

User mistakes (arguments, files, formats) raise :class:`~harness.errors.UserError`; the CLI
prints its message as one line. :func:`check_method` and :func:`check_dataset` are run when
a plugin is loaded (``harness list``, ``make bench``), and say what a class lacks.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning.pytorch as L

from harness.errors import UserError

Direction = Literal["max", "min"]
SPACE_KINDS = ("float", "log", "int", "cat")


@dataclass(frozen=True)
class StageData:
    """The training data a stage asks for; the runner hands it to the dataset.

    ``part``: a name the dataset understands (``"train"``, the default, is every dataset's
    training split; e.g. ``"base"``, ``"update"``, ``"all"`` for an evolving set, or
    ``"unlabelled"`` for validation prompts without labels). ``domains``: the domains the
    examples come from (``None``: the dataset's default). ``options``: values the method
    computed for the dataset to apply (e.g. which past interactions each user keeps).
    """

    part: str = "train"
    domains: tuple[str, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RealData:
    """How ``DATA=<dir>`` and ``DATASET=<name>`` map onto a dataset's parameters.

    ``dir_param`` receives the resolved directory; ``category_param`` (if any) receives
    ``DATASET``, and the benchmark's datasets are then replaced by that one category;
    without it ``DATASET`` picks one of the benchmark's dataset labels. ``synthetic_params``
    are dropped on real data (they describe the generator).
    """

    dir_param: str = "data_dir"
    category_param: str | None = None
    synthetic_params: tuple[str, ...] = ("synthetic",)


class DataModule(L.LightningDataModule):
    """A dataset: raw-format readers (real or synthetic written in the real format) + loaders."""

    real_data: ClassVar[RealData | None] = None  # None: it reads no real files (DATA= refused)
    backbone_param: ClassVar[str | None] = None  # the parameter BACKBONE= sets, if any
    shards_itself: ClassVar[bool] = False  # its loaders split the data across ranks themselves

    @property
    def info(self) -> Any:
        """The metadata a method is built from (a subclass's property, set up on first use,
        or a value assigned in ``__init__``)."""
        if "_api_info" not in self.__dict__:
            raise UserError(f"dataset {type(self).__name__} provides no `info` (the metadata "
                            "a method is built from)")
        return self.__dict__["_api_info"]

    @info.setter
    def info(self, value: Any) -> None:
        self.__dict__["_api_info"] = value

    def fingerprint(self) -> str:
        """Short hash of the raw files read (:func:`harness.cache.fingerprint`)."""
        raise NotImplementedError

    def stats(self) -> Mapping[str, Any]:
        """Numbers worth a tag on every run (``data.<name>``): sizes, shares."""
        return {}

    def use_stage_data(self, request: StageData) -> None:
        """Serve ``request`` from ``train_dataloader`` until the next call. A dataset that has
        only one training set accepts the default request alone."""
        if request != StageData():
            raise UserError(f"dataset {type(self).__name__} serves only the default training data, "
                            f"not {request.part!r} (domains {request.domains}); the method asks "
                            "for data this dataset does not have")

    @classmethod
    def for_real_data(cls, params: Mapping[str, Any], data_dir: Path,
                      category: str | None = None) -> dict[str, Any]:
        """The parameters that read real files in ``data_dir`` (and ``category``)."""
        rd = cls.real_data
        if rd is None:
            raise UserError(f"dataset {cls.__name__} reads no real data; DATA= / --data is for the "
                            "benchmarks whose datasets declare real_data")
        out = {k: v for k, v in params.items() if k not in rd.synthetic_params}
        out[rd.dir_param] = str(data_dir)
        if category is not None and rd.category_param is not None:
            out[rd.category_param] = category
        return out


class Method(L.LightningModule):
    """A method row's model: ``__init__(info, **hyperparameters)``; see the module docstring."""

    version: ClassVar[str] = "1"
    metrics: ClassVar[Mapping[str, Direction]] = {}
    metric_prefixes: ClassVar[Mapping[str, Direction]] = {}
    search_space: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    stages: tuple[str, ...] = ("fit",)
    stage_independent: Mapping[str, tuple[str, ...]] = {}
    #: stages trained for a fixed length whose weights are their last epoch's, not the best
    #: validation epoch's (JTT's identification model, MiMu's source): no selection there
    last_epoch_stages: tuple[str, ...] = ()

    def begin_stage(self, stage: str) -> None:
        """Called before each stage's fit (also when it resumes)."""

    def stage_data(self, stage: str) -> StageData:
        """The training data ``stage`` asks for (after :meth:`begin_stage`)."""
        return StageData()

    def finish_stages(self) -> None:
        """Called once after the last stage, before the test (e.g. merge adapters)."""

    def log_figure(self, fig: Any, artifact_file: str) -> bool:
        """Log a matplotlib figure to this run (closed either way); False outside a run."""
        from harness import tracking

        return tracking.log_figure(self, fig, artifact_file)


def choice(name: str, value: Any, options: tuple[Any, ...]) -> Any:
    """``value`` if it is one of ``options``, else a :class:`UserError` naming them. The one
    idiom for a variant chosen by a parameter (``mode: evorec``, ``constraint: hard``)."""
    if value not in options:
        raise UserError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


# --------------------------------------------------------------------------- checks


def _target(cls: Any) -> str:
    return f"{cls.__module__}:{cls.__qualname__}" if isinstance(cls, type) else repr(cls)


def _defines(cls: type, name: str, base: type) -> bool:
    """Whether a class between ``cls`` and ``base`` (excluded) defines ``name``."""
    mro = cls.__mro__
    return any(name in k.__dict__ for k in mro[: mro.index(base)])


def validate_space(space: Mapping[str, Any], where: str) -> None:
    """Refuse a search space that would draw invalid values."""
    for name, spec in space.items():
        kind = spec[0] if isinstance(spec, tuple | list) and spec else None
        if kind not in SPACE_KINDS:
            raise UserError(f"{where}.search_space[{name!r}] = {spec!r}: the kind must be one of "
                            f"{SPACE_KINDS}, e.g. ('log', 1e-4, 1e-2)")
        if kind == "cat":
            if len(spec) != 2 or not list(spec[1]):
                raise UserError(f"{where}.search_space[{name!r}]: use ('cat', [choice, ...])")
            continue
        if len(spec) != 3 or not all(isinstance(v, int | float) for v in spec[1:]):
            raise UserError(f"{where}.search_space[{name!r}] = {spec!r}: use (kind, low, high)")
        low, high = spec[1], spec[2]
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise UserError(f"{where}.search_space[{name!r}]: low {low} must be below high {high}")
        if kind == "log" and low <= 0:
            raise UserError(f"{where}.search_space[{name!r}]: a log range needs low > 0, got {low}")


def _check_directions(value: Any, attr: str, where: str) -> None:
    if not isinstance(value, Mapping) or any(d not in ("max", "min") for d in value.values()):
        raise UserError(f"{where}.{attr} must map metric names to 'max' or 'min', got {value!r}")


def check_method(cls: Any, name: str = "") -> None:
    """Raise a :class:`UserError` saying what ``cls`` lacks to be a method."""
    where = f"method {name!r} ({_target(cls)})" if name else _target(cls)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError(f"{where} is not a harness.api.Method: subclass it (it is a "
                        "LightningModule with the contract's declarations)")
    _check_directions(cls.metrics, "metrics", where)
    _check_directions(cls.metric_prefixes, "metric_prefixes", where)
    validate_space(cls.search_space, where)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise UserError(f"{where}: __init__ must take the dataset's metadata first: "
                        "def __init__(self, info, **hyperparameters)")
    missing = [p.name for p in params[1:] if p.kind == p.POSITIONAL_OR_KEYWORD
               and p.default is inspect.Parameter.empty]
    if missing:
        raise UserError(f"{where}: hyperparameters {missing} need defaults (a benchmark row "
                        "may leave any of them out)")


def check_dataset(cls: Any, name: str = "") -> None:
    """Raise a :class:`UserError` saying what ``cls`` lacks to be a dataset."""
    where = f"dataset {name!r} ({_target(cls)})" if name else _target(cls)
    if not (isinstance(cls, type) and issubclass(cls, DataModule)):
        raise UserError(f"{where} is not a harness.api.DataModule: subclass it")
    lacks = [m for m in ("fingerprint", "train_dataloader", "val_dataloader", "test_dataloader")
             if not _defines(cls, m, DataModule)]
    if lacks:
        raise UserError(f"{where} does not define {', '.join(lacks)}")
    takes = set(inspect.signature(cls.__init__).parameters)
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    rd = cls.real_data
    if rd is not None and not isinstance(rd, RealData):
        raise UserError(f"{where}.real_data must be a harness.api.RealData or None, got {rd!r}")
    wanted = [rd.dir_param if rd else None, rd.category_param if rd else None, cls.backbone_param]
    absent = [p for p in wanted if p is not None and p not in takes and not accepts_any]
    if absent:
        raise UserError(f"{where}: real_data / backbone_param name parameters {absent} that "
                        "__init__ does not take")


def hidden_hyperparameters(model: Method) -> list[str]:
    """Constructor keywords of ``model`` missing from ``model.hparams`` (should be none)."""
    params = list(inspect.signature(type(model).__init__).parameters.values())[2:]
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [n for n in named if n not in model.hparams]
