"""A pair-space model served (models.comparison): /verify and /identify compare a sharp
face with a blurred one by the students' cosine and two sharp faces by dlib's, on both
vector backends, exactly as the model's two branches embed them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.backbones.gated import QualityGated
from models.embedder import OnnxEmbedder
from models.export import export_onnx
from models.quality import laplacian_score
from models.quantize import write_pair_space
from service.recognition import RecognitionService
from tests.models.conftest import TINY_GATE as GATE
from tests.support.service import (
    ADMIN,
    CLIENT,
    create_gallery,
    create_subject,
    encode,
    identify,
    post_identify,
)


def _pictures(seed: int) -> np.ndarray:
    """Two sharp pictures (noise at 112 px), then two blurred ones (7 px noise enlarged)."""
    rng = np.random.default_rng(seed)
    out = []
    for side in (112, 112, 7, 7):
        small = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((112, 112), Image.Resampling.BICUBIC)))
    return np.stack(out)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the gated tiny artifact, its pair-space form)."""
    from tests.models.conftest import make_tiny_backbone

    folder = tmp_path_factory.mktemp("pair")
    gated = QualityGated(make_tiny_backbone(seed=0), make_tiny_backbone(seed=1), gate=3.0)
    source = folder / "gated.onnx"
    export_onnx(gated, source, name="g", version="1.0.0", backbone_name="ir-tiny", gate=GATE)
    write_pair_space(source, folder / "pair.onnx", _pictures(0), version="2.0.0")
    return source, folder / "pair.onnx"


def test_the_pictures_fall_on_both_sides_of_the_gate() -> None:
    q = [laplacian_score(p).laplacian for p in _pictures(1)]
    assert min(q[:2]) >= 3.0 > max(q[2:])


def _expected(source: Path, pictures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gated embeddings as served before, the student's of every picture)."""
    return (OnnxEmbedder(source).embed_pixels(pictures),
            OnnxEmbedder(source, branch="blurred").embed_pixels(pictures))


def _verify(client: TestClient, first: np.ndarray, second: np.ndarray) -> float:
    files = {"image1": ("a.png", encode(Image.fromarray(first))),
             "image2": ("b.png", encode(Image.fromarray(second)))}
    response = client.post("/v1/verify", files=files, headers=CLIENT)
    assert response.status_code == 200, response.text
    return response.json()["similarity"]


def test_verify_compares_in_the_pairs_space(
    models: tuple[Path, Path], make_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, pair = models
    pictures = _pictures(1)
    served, student = _expected(source, pictures)
    calls: list[tuple[int, bool]] = []
    embed = OnnxEmbedder.embed_pixels

    def recording(self: OnnxEmbedder, pixels: np.ndarray, *, same_side: bool = False
                  ) -> np.ndarray:
        calls.append((len(pixels), same_side))
        return embed(self, pixels, same_side=same_side)

    monkeypatch.setattr(OnnxEmbedder, "embed_pixels", recording)
    with make_client(model_path=pair) as client:
        ready = client.get("/readyz").json()["model"]
        assert ready["version"] == "2.0.0" and ready["embedding_size"] == 48
        assert ready["comparison"] == "pair-space"
        # two sharp faces: dlib's (the sharp branch's) cosine, as before
        assert _verify(client, pictures[0], pictures[1]) == pytest.approx(
            float(served[0] @ served[1]), abs=1e-5)
        assert calls[-1] == (2, True)  # the gate does not split them: dlib's branch alone
        # a sharp face and a blurred one, either order: the students' cosine
        for a, b in ((0, 2), (3, 1)):
            assert _verify(client, pictures[a], pictures[b]) == pytest.approx(
                float(student[a] @ student[b]), abs=1e-5)
            assert calls[-1] == (2, False)  # split by the gate: the student on both
            assert not np.isclose(served[a] @ served[b], student[a] @ student[b], atol=1e-3)
        assert _verify(client, pictures[2], pictures[3]) == pytest.approx(
            float(student[2] @ student[3]), abs=1e-5)
        assert calls[-1] == (2, True)
        # had the service's q not seen the gate between two faces that the graph's q puts
        # on either side, the answer is recomputed in the full form
        monkeypatch.setattr(RecognitionService, "_same_side", lambda self, faces: True)
        assert _verify(client, pictures[0], pictures[2]) == pytest.approx(
            float(student[0] @ student[2]), abs=1e-5)
        assert calls[-2:] == [(2, True), (2, False)]


@pytest.mark.parametrize(
    "vector_backend", ["faiss", pytest.param("milvus", marks=pytest.mark.milvus)], indirect=True
)
def test_identify_searches_in_the_pairs_space(
    models: tuple[Path, Path], make_client, vector_backend: str
) -> None:
    source, pair = models
    gallery, probes = _pictures(2), _pictures(3)
    served_g, student_g = _expected(source, gallery)
    served_p, student_p = _expected(source, probes)
    names = ["sharp-a", "sharp-b", "blurred-c", "blurred-d"]
    with make_client(model_path=pair, min_enroll_quality="off") as client:
        create_gallery(client, "g")
        for name, picture in zip(names, gallery, strict=True):
            create_subject(client, "g", name, encode(Image.fromarray(picture)))
        for row, probe in enumerate(probes):
            found = identify(client, "g", encode(Image.fromarray(probe)), top_k=4)
            similarity = {m["subject"]: m["similarity"] for m in found["matches"]}
            probe_sharp = row < 2
            expected = {
                name: float(served_p[row] @ served_g[i]) if probe_sharp and i < 2
                else float(student_p[row] @ student_g[i])
                for i, name in enumerate(names)
            }
            assert similarity == pytest.approx(expected, abs=1e-5)
            ranked = [m["subject"] for m in found["matches"]]
            assert ranked == sorted(expected, key=expected.__getitem__, reverse=True)


def test_a_gallery_of_the_cosine_model_moves_to_the_pair_space_by_reembedding(
    models: tuple[Path, Path], make_client
) -> None:
    source, pair = models
    gallery, probes = _pictures(4), _pictures(5)
    served_g, student_g = _expected(source, gallery)
    served_p, student_p = _expected(source, probes)
    with make_client(model_path=source, min_enroll_quality="off") as client:
        create_gallery(client, "g")
        for i, picture in enumerate(gallery):
            create_subject(client, "g", f"s{i}", encode(Image.fromarray(picture)))
    with make_client(model_path=pair, min_enroll_quality="off") as client:
        assert post_identify(client, "g", encode(Image.fromarray(probes[2]))).status_code == 409
        moved = client.post("/v1/galleries/g/reembed", headers=ADMIN)
        assert moved.status_code == 200, moved.text
        assert moved.json()["model"]["version"] == "2.0.0"
        assert client.get("/v1/galleries/g", headers=CLIENT).json()["embedding_size"] == 48
        # a blurred probe against the sharp photos: the students' cosine, as in the rule
        found = identify(client, "g", encode(Image.fromarray(probes[2])), top_k=4)
        similarity = {m["subject"]: m["similarity"] for m in found["matches"]}
        assert similarity == pytest.approx(
            {f"s{i}": float(student_p[2] @ student_g[i]) for i in range(4)}, abs=1e-5)
        assert not np.isclose(served_p[2] @ served_g[0], student_p[2] @ student_g[0], atol=1e-3)
