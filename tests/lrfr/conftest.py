"""Fixtures of the client and command-line tests: the reference model and a started app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.reference_model import build_reference_model
from service.settings import Settings
from tests.support.service import ADMIN_KEY, CLIENT_KEY


@pytest.fixture(scope="session")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The non-learned reference model (``service.reference_model``), built once."""
    path = tmp_path_factory.mktemp("model") / "reference.onnx"
    build_reference_model(path)
    return path


@pytest.fixture(scope="session")
def orl_dir(shared_data_dir: Path) -> Path:
    """``../shared/data/orl`` (a folder per subject); skips when absent."""
    orl = shared_data_dir / "orl"
    if not (orl / "s1" / "1.pgm").is_file():
        pytest.skip(f"ORL faces not found at {orl}")
    return orl


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
