"""Fixtures of the client and command-line tests: a started app (the reference model is
tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.support.service import ADMIN_KEY, CLIENT_KEY


@pytest.fixture
def app_client(tmp_path: Path, reference_model: Path) -> Iterator[TestClient]:
    """A started app on SQLite with the reference model; uploads read as aligned crops."""
    settings = Settings(
        model_path=reference_model,
        data_dir=tmp_path / "data",
        admin_keys=[ADMIN_KEY],
        client_keys=[CLIENT_KEY],
        batch_window_ms=1.0,
        index_flush_seconds=3600.0,
        default_face="aligned",
    )
    with TestClient(create_app(settings)) as client:
        yield client
