"""Shared fixtures: every test that tracks runs gets its own directory and MLflow database."""

import logging
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/services.py


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory with its own sqlite MLflow store; returns its path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    return tmp_path


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server (SQLite backend, served artifacts) on a free port."""
    from services import MlflowServer

    server = MlflowServer(tmp_path)
    server.start()
    yield server
    server.kill()
