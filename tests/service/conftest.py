"""Fixtures of the service tests: the reference ONNX model, settings, a running app on
SQLite and (when ``LRFR_TEST_POSTGRES_URL`` is set) PostgreSQL, and image helpers.

The gallery suites (``BACKEND_MODULES``) run on both vector backends: FAISS and Milvus
(embedded milvus-lite, one file per test; skipped when ``lrfr[milvus]`` is not installed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.app import create_app
from service.settings import Settings
from tests.support.service import ADMIN_KEY, CLIENT_KEY

POSTGRES_ENV = "LRFR_TEST_POSTGRES_URL"
#: test modules whose every test runs on each vector backend
BACKEND_MODULES = {"test_service_api_galleries", "test_service_backends"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    chosen = any(  # a test that names its backend itself
        "vector_backend" in str(mark.args[0]) for mark in metafunc.definition.iter_markers(
            "parametrize")
    )
    if "vector_backend" in metafunc.fixturenames and module in BACKEND_MODULES and not chosen:
        metafunc.parametrize(
            "vector_backend",
            ["faiss", pytest.param("milvus", marks=pytest.mark.milvus)],
            indirect=True,
        )


@pytest.fixture
def vector_backend(request: pytest.FixtureRequest) -> str:
    """``faiss``, or ``milvus`` in the gallery suites (``BACKEND_MODULES``)."""
    backend = getattr(request, "param", "faiss")
    if backend == "milvus":
        pytest.importorskip("pymilvus", reason="pip install 'lrfr[milvus]' for the Milvus tests")
        pytest.importorskip("milvus_lite", reason="pip install 'lrfr[milvus]'")
    return backend


@pytest.fixture(scope="session")
def model_path(reference_model: Path) -> Path:
    """The non-learned reference model (``reference_model`` of tests/conftest.py)."""
    return reference_model


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("DROP TABLE IF EXISTS faces, subjects, galleries, alembic_version CASCADE")
        )
    engine.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: SQLite in the test's folder, or the CI PostgreSQL, reset."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lrfr.sqlite3'}"
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set (start one with scripts/start-postgres.sh)")
    _reset_postgres(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lrfr.sqlite3'}"


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(
    tmp_path: Path, model_path: Path, sqlite_url: str, vector_backend: str
) -> SettingsFactory:
    """Settings with keys, a data folder under ``tmp_path``, the reference model and the
    test's vector backend."""

    def factory(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "model_path": model_path,
            "data_dir": tmp_path / "data",
            "database_url": sqlite_url,
            "admin_keys": [ADMIN_KEY],
            "client_keys": [CLIENT_KEY],
            "batch_window_ms": 1.0,
            "index_flush_seconds": 3600.0,
            # the synthetic pictures of most tests are no faces: read them as template
            # crops unless a test asks for face finding (test_service_faces.py)
            "default_face": "aligned",
            "vector_backend": vector_backend,
        }
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
def make_client(make_settings: SettingsFactory) -> Callable[..., object]:
    """``with make_client(**settings) as client``: a started app; leaving it shuts down."""

    @contextmanager
    def factory(**overrides: object) -> Iterator[TestClient]:
        app = create_app(make_settings(**overrides))
        with TestClient(app) as client:
            yield client

    return factory


@pytest.fixture
def client(make_client: Callable[..., object]) -> Iterator[TestClient]:
    """A started app on SQLite."""
    with make_client() as started:  # type: ignore[attr-defined]
        yield started


@pytest.fixture
def db_client(make_client: Callable[..., object], database_url: str) -> Iterator[TestClient]:
    """A started app on each database backend."""
    with make_client(database_url=database_url) as started:  # type: ignore[attr-defined]
        yield started
