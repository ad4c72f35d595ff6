"""Metric functions: small, pure, vectorised."""
