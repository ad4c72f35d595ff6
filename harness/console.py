"""Console hygiene shared by the CLI and worker processes: quiet known-noise warnings."""

import logging
import warnings

_NOISE = (
    ".*does not have many workers.*",
    ".*GPU available but not used.*",
    ".*isinstance.treespec, LeafSpec.*",
    ".*smaller than the logging interval.*",
    ".*Sparse CSR tensor support is in beta.*",
)


def quiet() -> None:
    """Silence warnings that say nothing actionable about a harness run."""
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch", "lightning.fabric", "alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
