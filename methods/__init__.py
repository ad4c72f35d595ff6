"""Methods, installed as ``harness.methods``; each module is one method and its baselines."""
