"""A benchmark harness: methods x datasets x seeds, tracked in MLflow."""

__version__ = "0.1.0"
