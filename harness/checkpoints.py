"""The runner's checkpoints: written atomically, read without running code, set aside when bad.

A checkpoint is written to ``<name>.tmp`` (flushed to disk) and renamed over ``<name>``, so a
kill at any moment leaves either the previous file or the new one, never half of one.
Every checkpoint is read with ``torch.load(weights_only=True)``: tensors, containers and
plain values only, so a file planted under ``runs/`` cannot execute a pickled payload. A
file that fails that load (truncated, not a checkpoint, or asking for code) is renamed to
``<name>.corrupt-<time>`` with a line naming it, and its stage restarts.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class CorruptCheckpoint(Exception):
    """A checkpoint file that cannot be loaded safely."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path


def load(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` loaded with ``weights_only=True``; :class:`CorruptCheckpoint`
    if it is truncated, not a torch file, or needs anything beyond tensors and plain values."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's weights-only unpickler refused a global
        raise CorruptCheckpoint(path, "holds objects beyond tensors and plain values (refused: "
                                "loading it could run code)") from None
    except Exception as exc:  # RuntimeError (truncated zip), EOFError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CorruptCheckpoint(path, f"unreadable ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CorruptCheckpoint(path, "not a Lightning checkpoint (no state_dict)")
    return state


def set_aside(path: str | Path) -> Path:
    """Rename a bad checkpoint to ``<name>.corrupt-<time>`` (kept for inspection); its new path."""
    path = Path(path)
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, dest)
    return dest


def best_score(state: dict[str, Any], monitor: str | None = None) -> float | None:
    """The best score of the ModelCheckpoint monitoring ``monitor`` (any monitor if None)
    stored inside a loaded checkpoint."""
    for cb in state.get("callbacks", {}).values():
        if (isinstance(cb, dict) and cb.get("monitor") and cb.get("best_model_score") is not None
                and monitor in (None, cb["monitor"])):
            return float(cb["best_model_score"])
    return None


def remove_partial(root: Path) -> None:
    """Delete ``*.tmp`` files a kill left in a stage directory mid-write."""
    for tmp in root.glob("*.ckpt.tmp"):
        tmp.unlink(missing_ok=True)


class AtomicCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint writing each file through a temporary file and a rename.

    The runner uses two: ``best`` (``monitor`` set, ``save_top_k=1``) and ``last``
    (``monitor=None``, written after every validation). Lightning 2.6's own ``save_last``
    writes ``last.ckpt`` only in an epoch that saved a new best, so a resumed run repeated
    the epochs since its best one and logged them twice; ``last`` here is the last finished
    epoch, with the early-stopping and best-checkpoint state of that moment.
    """

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)  # every rank calls; rank 0 writes
        if trainer.is_global_zero:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, filepath)
        trainer.strategy.barrier()
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
