"""Helpers of the service tests (images, keys, API calls); `tests.support.service`."""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.settings import BUNDLED_MODEL_PATH

ADMIN_KEY = "admin-key-0123456789abcdef"
CLIENT_KEY = "client-key-0123456789abcdef"
METRICS_KEY = "metrics-key-0123456789abcdef"
REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"X-API-Key": ADMIN_KEY}
CLIENT = {"X-API-Key": CLIENT_KEY}


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def face_png(seed: int = 0, size: tuple[int, int] = (48, 56)) -> bytes:
    """A random but structured grey-ish picture (smooth blobs), PNG-encoded."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(7, 6, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    return encode(image)


def orl_bytes(orl: Path, subject: int, image: int) -> bytes:
    return (orl / f"s{subject}" / f"{image}.pgm").read_bytes()


def create_gallery(client: TestClient, name: str = "g") -> None:
    response = client.post("/v1/galleries", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text


def create_subject(client: TestClient, gallery: str, subject: str, *images: bytes) -> list[int]:
    """Creates ``subject`` in ``gallery``, enrolled with ``images`` if any; their face ids."""
    response = client.post(f"/v1/galleries/{gallery}/subjects", json={"id": subject}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return enroll(client, gallery, subject, *images) if images else []


def enroll(client: TestClient, gallery: str, subject: str, *images: bytes) -> list[int]:
    files = [
        ("images", (f"{i}.png", data, "application/octet-stream")) for i, data in enumerate(images)
    ]
    response = client.post(
        f"/v1/galleries/{gallery}/subjects/{subject}/faces", files=files, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    return [face["id"] for face in response.json()["faces"]]


def populate(
    client: TestClient, faces: Mapping[str, Sequence[bytes]], gallery: str = "g"
) -> dict[str, list[int]]:
    """Creates ``gallery`` and in it one subject per key of ``faces``, enrolled with its
    images; the ids of each subject's faces."""
    create_gallery(client, gallery)
    return {
        subject: create_subject(client, gallery, subject, *images)
        for subject, images in faces.items()
    }


def post_identify(
    client: TestClient, gallery: str, image: bytes, **form: object
) -> httpx.Response:
    """POST /v1/identify of ``image`` against ``gallery``, as a client; any answer."""
    return client.post(
        "/v1/identify",
        files={"image": ("probe.png", image)},
        data={"gallery": gallery, **{k: str(v) for k, v in form.items()}},
        headers=CLIENT,
    )


def identify(client: TestClient, gallery: str, image: bytes, **form: object) -> dict:
    response = post_identify(client, gallery, image, **form)
    assert response.status_code == 200, response.text
    return response.json()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grey pixels, with no pixel data:
    a decompression bomb's header without the memory cost of making one."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_settings(data_dir: Path, **settings: str) -> dict[str, str]:
    """The ``LRFR_*`` settings of a test service: its data in ``data_dir``, the test admin
    and client keys, and ``settings`` (e.g. ``LRFR_MODEL_PATH=...``)."""
    return {
        "LRFR_DATA_DIR": str(data_dir),
        "LRFR_ADMIN_KEYS": ADMIN_KEY,
        "LRFR_CLIENT_KEYS": CLIENT_KEY,
        **settings,
    }


def serve_env(settings: dict[str, str]) -> dict[str, str]:
    """The caller's environment less its ``LRFR_*`` variables, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LRFR_")}
    env.update(settings)
    return env


def wait_ready(
    process: subprocess.Popen[bytes], base: str, log: Path, *, timeout: float = 60
) -> None:
    """Returns once ``base``/readyz answers 200.

    Raises:
        RuntimeError: the process exited, or was not ready within ``timeout`` s (either
            with its output, ``log``).
    """
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited: {log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready in {timeout} s: {log.read_text()}")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes], *, timeout: float = 20) -> int:
    """Stops ``process``: SIGTERM, then a kill after ``timeout`` s; its exit status."""
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def start(
    settings: dict[str, str], log: Path, *, port: int, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """``lrfr serve`` started as a process on ``port``, configured by ``settings`` (``LRFR_*``
    variables; those of the caller's environment are dropped), once /readyz answers 200.
    Its output goes to ``log``; stopping it is the caller's (``stop``).

    Raises:
        RuntimeError: the process exited, or was not ready within ``timeout`` s.
    """
    command = [sys.executable, "-m", "lrfr.cli", "serve", "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "--log-level", "warning"],
            env=serve_env(settings),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(process, f"http://127.0.0.1:{port}", log, timeout=timeout)
    except BaseException:
        stop(process)
        raise
    return process


@contextmanager
def serve(
    settings: dict[str, str],
    log: Path,
    *,
    timeout: float = 60,
    port: int | None = None,
    stop_timeout: float = 20,
) -> Iterator[str]:
    """``start``, on a free port unless given, as a context: yields the service's base URL
    and stops it on leaving (SIGTERM, then a kill after ``stop_timeout`` s).

    Raises:
        RuntimeError: the process exited, or was not ready within ``timeout`` s.
    """
    port = free_port() if port is None else port
    process = start(settings, log, port=port, timeout=timeout)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process, timeout=stop_timeout)


@contextmanager
def serve_bundled(folder: Path) -> Iterator[str]:
    """``serve`` with the bundled model on a fresh SQLite database in ``folder`` and the
    test keys; skips the test when there is no bundled model."""
    if not BUNDLED_MODEL_PATH.is_file():
        pytest.skip(f"no bundled model at {BUNDLED_MODEL_PATH}")
    with serve(serve_settings(folder / "data"), folder / "serve.log") as base:
        yield base
