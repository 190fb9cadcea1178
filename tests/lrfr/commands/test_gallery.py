"""``lrfr gallery import|export`` against ``lrfr serve`` (the bundled model) as a process:
the 40 ORL subjects enrolled with a progress bar, nothing new on a second run, identify
working afterwards; refused images reported with the service's reason; an export read
back in."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageFilter, ImageOps

from lrfr.client import Client
from tests.support.service import ADMIN_KEY, CLIENT_KEY, REPO_ROOT, encode, serve_bundled


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``lrfr serve`` with the bundled model on a fresh SQLite database."""
    with serve_bundled(tmp_path_factory.mktemp("live")) as base:
        yield base


def lrfr(*arguments: str, key: str = ADMIN_KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LRFR_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "lrfr.cli", *arguments],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_orl_is_enrolled_once_and_identified(live: str, orl_dir: Path) -> None:
    first = lrfr("gallery", "import", str(orl_dir), "--gallery", "orl", "--url", live)
    assert first.returncode == 0, first.stderr
    assert "400/400" in first.stderr  # the progress bar
    assert "40 subjects (40 new), 400 images enrolled, 0 already enrolled" in first.stdout
    again = lrfr("gallery", "import", str(orl_dir), "--gallery", "orl", "--url", live)
    assert again.returncode == 0, again.stderr
    assert "(0 new), 0 images enrolled, 400 already enrolled, 0 refused" in again.stdout

    client = Client(live, CLIENT_KEY)
    gallery = client.get_gallery("orl")
    assert (gallery.subjects, gallery.faces) == (40, 400)
    for subject in (3, 17, 40):
        # a mirrored image is no file that was enrolled
        mirrored = ImageOps.mirror(Image.open(orl_dir / f"s{subject}" / "5.pgm"))
        found = client.identify(encode(mirrored), gallery="orl")
        assert found.decision == "match", found
        assert found.matches[0].subject == f"s{subject}"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_refusals_resuming_and_a_round_trip(live: str, orl_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "people"
    for subject in ("s1", "s2"):
        (source / subject).mkdir(parents=True)
        for image in (1, 2, 3):
            data = (orl_dir / subject / f"{image}.pgm").read_bytes()
            (source / subject / f"{image}.pgm").write_bytes(data)
    face = Image.open(orl_dir / "s1" / "4.pgm")
    (source / "s1" / "blurred.png").write_bytes(_png(face.filter(ImageFilter.GaussianBlur(4))))
    (source / "s1" / "notes.png").write_bytes(b"not an image at all")
    (source / "s2" / "wall.png").write_bytes(_png(Image.new("L", (200, 200), 120)))
    (source / "s2" / "copy.pgm").write_bytes((source / "s2" / "1.pgm").read_bytes())
    (source / "bad name!").mkdir()
    (source / "bad name!" / "1.pgm").write_bytes((orl_dir / "s3" / "1.pgm").read_bytes())
    report = tmp_path / "report.json"

    run = lrfr(
        "gallery", "import", str(source), "--gallery", "people", "--url", live,
        "--report", str(report), "--workers", "3",
    )
    assert run.returncode == 0, run.stderr
    assert "2 subjects (2 new), 6 images enrolled, 1 already enrolled, 4 refused" in run.stdout
    outcomes = {
        Path(record["path"]).relative_to(source).as_posix(): (record["outcome"], record["code"])
        for record in json.loads(report.read_text())["records"]
    }
    assert outcomes["s1/blurred.png"] == ("refused", "quality_refused")
    assert outcomes["s1/notes.png"] == ("refused", "unsupported_media_type")
    assert outcomes["s2/wall.png"] == ("refused", "no_face")
    assert outcomes["s2/copy.pgm"] == ("skipped", None)  # the same content as 1.pgm
    assert outcomes["bad name!/1.pgm"] == ("refused", "invalid_subject_id")
    assert outcomes["s2/1.pgm"] == ("enrolled", None)
    assert "under the enrollment floor" in run.stdout

    admin = Client(live, ADMIN_KEY)
    first = admin.get_subject("people", "s1").faces[0]
    admin.delete_face("people", "s1", first.id)
    resumed = lrfr("gallery", "import", str(source), "--gallery", "people", "--url", live)
    assert "1 images enrolled, 6 already enrolled" in resumed.stdout, resumed.stdout

    admin.delete_subject("people", "s2")
    admin.create_subject("people", "s2", name="Second", metadata={"team": "blue"})
    exported = tmp_path / "exported"
    out = lrfr(
        "gallery", "export", str(exported), "--gallery", "people", "--url", live, "--images",
        key=CLIENT_KEY,
    )
    assert out.returncode == 0, out.stderr
    assert "people: 2 subjects, 3 faces, 3 images" in out.stdout
    manifest = json.loads((exported / "lrfr-gallery.json").read_text())
    assert [s["id"] for s in manifest["subjects"]] == ["s1", "s2"]
    assert len(list((exported / "s1").glob("*.png"))) == 3

    again = lrfr(
        "gallery", "import", str(exported), "--gallery", "copy", "--url", live,
        "--face", "aligned",
    )
    assert "2 subjects (2 new), 3 images enrolled, 0 already" in again.stdout, again.stdout
    copied = admin.get_subject("copy", "s2")
    assert (copied.name, copied.metadata, copied.face_count) == ("Second", {"team": "blue"}, 0)
    assert admin.get_subject("copy", "s1").face_count == 3


def test_import_without_a_key_says_so(tmp_path: Path) -> None:
    run = lrfr("gallery", "import", str(tmp_path), "--gallery", "g", key="")
    assert run.returncode == 2
    assert "LRFR_API_KEY" in run.stderr
