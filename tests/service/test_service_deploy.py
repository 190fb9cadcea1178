"""What the container runs: `lrfr serve` as a process against the test database, its
startup errors, the compose file, and the no-torch promise."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.service import (
    ADMIN,
    ADMIN_KEY,
    CLIENT,
    face_png,
    free_port,
    serve_env,
    serve_settings,
    stop,
    wait_ready,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
COMPOSE_ENV = {"POSTGRES_PASSWORD": "compose-test-password", "LRFR_ADMIN_KEYS": ADMIN_KEY}


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``command`` run in the repository root, its output captured as text."""
    return subprocess.run(
        command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )


def _lrfr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "lrfr.cli", *args], env)


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``docker-compose`` on COMPOSE_FILE (the test is skipped without it), with ``env``
    over the caller's environment less its ``LRFR_*`` and ``POSTGRES_*`` variables."""
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LRFR_", "POSTGRES_"))}
    command = [executable, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE)]
    return _run([*command, *args], {**base, **env})


@pytest.mark.slow
def test_lrfr_serve_runs_the_service(model_path: Path, database_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = serve_settings(
        tmp_path / "data", LRFR_MODEL_PATH=str(model_path), LRFR_DATABASE_URL=database_url
    )
    env = serve_env(settings)
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "lrfr.cli", "serve", "--host", "127.0.0.1"]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base, log)
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.post("/v1/galleries", json={"name": "g"}, headers=ADMIN).status_code == 201
            assert (
                http.post("/v1/galleries/g/subjects", json={"id": "a"}, headers=ADMIN).status_code
                == 201
            )
            enrolled = http.post(
                "/v1/galleries/g/subjects/a/faces",
                files=[("images", ("a.png", face_png(1)))],
                headers=ADMIN,
            )
            assert enrolled.status_code == 201, enrolled.text
            found = http.post(
                "/v1/identify",
                files={"image": ("p.png", face_png(1))},
                data={"gallery": "g"},
                headers=CLIENT,
            )
            assert found.json()["matches"][0]["subject"] == "a"
            assert found.json()["decision"] == "match"
    finally:
        returncode = stop(process)  # SIGTERM
    output = log.read_text()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why
    assert returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert list((tmp_path / "data" / "index").glob("gallery-*.faiss"))  # flushed at shutdown


def test_serve_refuses_to_start_without_keys(model_path: Path) -> None:
    result = _lrfr("serve", env=serve_env({"LRFR_MODEL_PATH": str(model_path)}))
    assert result.returncode == 2
    assert "LRFR_ADMIN_KEYS" in result.stderr and "LRFR_DEV_MODE" in result.stderr


def test_serve_refuses_a_missing_model(tmp_path: Path) -> None:
    missing = tmp_path / "absent.onnx"
    env = serve_env({"LRFR_MODEL_PATH": str(missing), "LRFR_ADMIN_KEYS": ADMIN_KEY})
    result = _lrfr("serve", env=env)
    assert result.returncode == 2
    assert f"cannot serve model {missing}" in result.stderr
    assert "model file not found" in result.stderr


def test_the_service_never_imports_torch(model_path: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from service.app import create_app\n"
        "from service.settings import Settings\n"
        f"settings = Settings(model_path={str(model_path)!r}, data_dir={str(tmp_path)!r},"
        " dev_mode=True)\n"
        "with TestClient(create_app(settings)) as client:\n"
        "    assert client.get('/readyz').status_code == 200\n"
        "print('torch' in sys.modules)\n"
    )
    result = _run([sys.executable, "-c", code], serve_env({}))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_compose_file_structure() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    service, db = compose["services"]["lrfr"], compose["services"]["db"]
    assert service["command"][:2] == ["lrfr", "serve"]
    assert service["depends_on"]["db"]["condition"] == "service_healthy"
    assert "healthcheck" in service and "healthcheck" in db
    model_mount = next(v for v in service["volumes"] if v["target"] == "/models")
    assert model_mount["read_only"] is True
    assert any(v["target"] == "/var/lib/postgresql/data" for v in db["volumes"])
    assert {"pgdata", "lrfr-index"} <= set(compose["volumes"])
    environment = service["environment"]
    assert environment["LRFR_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert ":?" in environment["LRFR_ADMIN_KEYS"]  # no default key in deployment
    assert environment["LRFR_WORKERS"] == "${LRFR_WORKERS:-1}"  # lrfr serve --workers


def test_compose_file_is_valid_for_docker_compose(tmp_path: Path) -> None:
    valid = _compose("config", "-q", env=COMPOSE_ENV)
    assert valid.returncode == 0, valid.stderr
    resolved = _compose("config", env=COMPOSE_ENV)
    assert "compose-test-password" in resolved.stdout
    without_key = _compose("config", "-q", env={"POSTGRES_PASSWORD": "x"})
    assert without_key.returncode != 0
    assert "LRFR_ADMIN_KEYS" in without_key.stderr


def test_compose_milvus_profile() -> None:
    """``--profile milvus``: Milvus standalone with etcd and MinIO, all with healthchecks,
    and a service pointed at it; none of them starts without the profile."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    services = compose["services"]
    for name in ("lrfr-milvus", "milvus", "milvus-etcd", "milvus-minio"):
        assert services[name]["profiles"] == ["milvus"]
        assert "healthcheck" in services[name]
        assert "ports" not in services[name] or name == "lrfr-milvus"
    service = services["lrfr-milvus"]
    assert service["environment"]["LRFR_VECTOR_BACKEND"] == "milvus"
    assert service["environment"]["LRFR_MILVUS_URI"].endswith("//milvus:19530}")
    assert service["environment"]["LRFR_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert service["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert "milvus" in service["build"]["args"]["EXTRAS"]
    assert "profiles" not in services["lrfr"] and "profiles" not in services["db"]


def test_compose_milvus_profile_is_valid_for_docker_compose() -> None:
    resolved = _compose("--profile", "milvus", "config", env=COMPOSE_ENV)
    assert resolved.returncode == 0, resolved.stderr
    config = yaml.safe_load(resolved.stdout)
    assert config["services"]["lrfr-milvus"]["environment"]["LRFR_MILVUS_URI"] == (
        "http://milvus:19530"
    )
