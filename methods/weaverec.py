"""WeaveRec (arXiv 2510.27157) and the per-domain LoRA merging baselines.

WeaveRec trains a target-only LoRA and one "hybrid" LoRA per source domain on the
target's data mixed with that source's (the weave), then merges all of them in weight
space into one LoRA: the default merge is the uniform average of the delta weights,
Delta W = (1/n) sum_k B_k A_k s_k, exact through peft's ``cat`` combination, so
inference costs one LoRA. The baselines ``merge-linear`` / ``merge-ties`` train one LoRA
per domain on that domain alone and merge them (task arithmetic, TIES) with the same
peft operations.

Each LoRA is one stage of the runner's stage protocol (its own checkpoint, metrics
prefixed with the stage name, selected on the target's validation set; its training
domains asked of the dataset through ``stage_data``); the merge runs after the last
stage, before the test.
"""

from __future__ import annotations

from typing import Any

from harness.api import choice
from harness.methods.llmrec import LoRARec

#: the ``combination_type`` values of peft's ``add_weighted_adapter`` used here (``density``
#: applies to ``ties``)
COMBINATIONS = ("cat", "linear", "svd", "ties")


class _MergedLoRAs(LoRARec):
    """Several LoRAs on one base, each trained in its own stage, merged before testing."""

    def __init__(self, info: Any, combination: str = "cat", density: float = 0.5, **kw: Any):
        choice("combination", combination, COMBINATIONS)
        super().__init__(info, **kw)
        self.target = info.target
        self.sources = [d for d in info.splits if d != info.target]
        self.stage_domains = self._stage_domains()
        self.stages = tuple(self.stage_domains)
        # the combination acts only in finish_stages: merge-linear and merge-ties share LoRAs
        self.stage_independent = {s: ("combination", "density") for s in self.stages}

    def _stage_domains(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def _adapter(self, stage: str) -> str:
        return "default" if stage == self.stages[0] else stage

    def begin_stage(self, stage: str) -> None:
        """Create (if needed) and activate this stage's LoRA; train it on its domains."""
        name = self._adapter(stage)
        if name not in self.model.peft_config:
            self.model.add_adapter(name, self.model.peft_config["default"])
        self.model.set_adapter(name)
        self.domains = self.stage_domains[stage]

    def finish_stages(self) -> None:
        """Merge every stage's LoRA into one adapter with uniform weights and activate it."""
        names = [self._adapter(s) for s in self.stages]
        weights = [1.0 / len(names)] * len(names)
        kwargs = {"density": self.hparams.density} if self.hparams.combination == "ties" else {}
        if "merged" not in self.model.peft_config:
            self.model.add_weighted_adapter(names, weights, "merged",
                                            combination_type=self.hparams.combination, **kwargs)
        self.model.set_adapter("merged")


class WeaveRec(_MergedLoRAs):
    """Target LoRA + one hybrid LoRA per source (target data mixed with that source's),
    merged by the uniform average of their deltas (row ``weaverec``)."""

    def _stage_domains(self) -> dict[str, list[str]]:
        out = {"target": [self.target]}
        out.update({f"hybrid-{s}": [self.target, s] for s in self.sources})
        return out


class MergeLoRA(_MergedLoRAs):
    """One LoRA per domain, each on its own data, merged (rows ``merge-linear``,
    ``merge-ties`` with ``combination: ties``)."""

    def _stage_domains(self) -> dict[str, list[str]]:
        out = {"target": [self.target]}
        out.update({f"domain-{s}": [s] for s in self.sources})
        return out
