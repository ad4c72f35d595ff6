"""Console hygiene shared by the CLI and worker processes: quiet known-noise warnings."""

import logging
import warnings

_NOISE = (
    ".*does not have many workers.*",
    ".*GPU available but not used.*",
    ".*isinstance.treespec, LeafSpec.*",
    ".*smaller than the logging interval.*",
    ".*Sparse CSR tensor support is in beta.*",
    ".*is_gradient_checkpointing. is deprecated.*",  # peft calls it, not us
    ".*module.s. in eval mode at the start of training.*",  # the frozen base LM, on purpose
)


def quiet() -> None:
    """Silence warnings that say nothing actionable about a harness run."""
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch", "lightning.fabric", "alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import os
    import sys

    # mlflow configures its own stderr handler at INFO on import ("Creating initial MLflow
    # database tables" on a fresh SQLite store): only warnings and errors reach the user
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights" bars per run
    if "transformers" in sys.modules:  # imported before the variable was set
        sys.modules["transformers"].utils.logging.disable_progress_bar()
