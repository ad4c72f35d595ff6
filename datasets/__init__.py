"""Dataset families, installed as ``harness.datasets`` (never a top-level ``datasets``)."""
