"""The model artifact (models.artifact) and its ONNX Runtime loader (models.embedder):
what the service accepts, what it refuses, and that it embeds like torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.artifact import (
    ArtifactError,
    GateBranch,
    GateInfo,
    ModelMetadata,
    file_sha256,
    load_metadata,
    metadata_path,
    update_thresholds,
    write_metadata,
)
from models.embedder import OnnxEmbedder, resize_to_input

TINY_DIM = 16  # tests/models/conftest.py builds ir-tiny at this size


def torch_unit_embeddings(model: nn.Module, pixels: np.ndarray) -> np.ndarray:
    """The contract by hand: RGB uint8 (N, H, W, 3) -> (x − 127.5) / 127.5, NCHW -> z/||z||."""
    x = (torch.from_numpy(pixels).float() - 127.5) / 127.5
    with torch.no_grad():
        z = model(x.permute(0, 3, 1, 2).contiguous()).double()
    return (z / z.norm(dim=1, keepdim=True)).numpy()


def rewrite_json(onnx_path: Path, change: Callable[[dict], None]) -> None:
    meta = metadata_path(onnx_path)
    raw = json.loads(meta.read_text())
    change(raw)
    meta.write_text(json.dumps(raw))


# --- metadata ---------------------------------------------------------------------------


def test_metadata_round_trip_stamps_the_sha256(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"not really onnx, metadata does not parse it")
    written = ModelMetadata(name="m", version="1", embedding_size=8, backbone="ir50")
    assert written.onnx_sha256 is None
    write_metadata(onnx_path, written)
    loaded = load_metadata(onnx_path)
    assert loaded.onnx_sha256 == file_sha256(onnx_path)
    assert loaded.model_copy(update={"onnx_sha256": None}) == written
    assert loaded.thresholds == {"1e-2": None, "1e-3": None, "1e-4": None}
    assert loaded.default_threshold(0.3) == 0.3


GATE = GateInfo(
    threshold=4.5,
    sharp=GateBranch(name="released-net", source="released weights (public domain)"),
    blurred=GateBranch(name="student", source="configs/s.yaml, step 10", head="arcface+distill"),
    chosen_on="100 toy pairs",
)


def test_gated_metadata_round_trips(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"x")
    written = ModelMetadata(name="m", version="1", embedding_size=8, backbone="b-gated",
                            head=GATE.head_label(), gate=GATE)
    write_metadata(onnx_path, written)
    raw = json.loads(metadata_path(onnx_path).read_text())
    assert raw["gate"]["version"] == 1 and raw["gate"]["quality"] == "laplacian"
    assert raw["gate"]["blurred"] == {"name": "student", "source": "configs/s.yaml, step 10",
                                      "head": "arcface+distill"}
    loaded = load_metadata(onnx_path)
    assert loaded.gate == GATE
    assert loaded.head == "gated(sharp: released weights | blurred: arcface+distill)"


def test_metadata_without_a_gate_still_loads(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"x")
    write_metadata(onnx_path, ModelMetadata(name="m", version="1", embedding_size=8, backbone="b"))
    rewrite_json(onnx_path, lambda r: r.pop("gate"))  # as written before the field existed
    assert "gate" not in json.loads(metadata_path(onnx_path).read_text())
    assert load_metadata(onnx_path).gate is None


def test_the_comparison_defaults_to_cosine_and_pair_space_needs_a_gate(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"x")
    write_metadata(onnx_path, ModelMetadata(name="m", version="1", embedding_size=8, backbone="b"))
    rewrite_json(onnx_path, lambda r: r.pop("comparison"))  # as written before the field
    assert load_metadata(onnx_path).comparison == "cosine"
    gated = {"name": "m", "version": "1", "backbone": "b", "gate": GATE}
    assert ModelMetadata(**gated, embedding_size=24, comparison="pair-space").comparison == (
        "pair-space")
    with pytest.raises(ValueError, match="not a multiple"):
        ModelMetadata(**gated, embedding_size=8, comparison="pair-space")
    with pytest.raises(ValueError, match="needs a gated model"):
        ModelMetadata(name="m", version="1", backbone="b", embedding_size=24,
                      comparison="pair-space")
    with pytest.raises(ValueError, match="comparison"):
        ModelMetadata(**gated, embedding_size=24, comparison="euclidean")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": -1.0}, "greater than or equal to 0"),
        ({"threshold": float("nan")}, "finite number"),
        ({"version": 2}, "version"),
        ({"quality": "variance"}, "quality"),
        ({"chosen_on": ""}, "chosen_on"),
        ({"sharp": {"name": "x"}}, "source"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_gates_are_refused(change: dict, message: str) -> None:
    raw = {**GATE.model_dump(), **change}
    with pytest.raises(ValueError, match=message):
        GateInfo.model_validate(raw)


def test_update_thresholds_keeps_the_pair_valid(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"x")
    write_metadata(onnx_path, ModelMetadata(name="m", version="1", embedding_size=8, backbone="b"))
    update_thresholds(onnx_path, {"1e-3": 0.42})
    loaded = load_metadata(onnx_path)
    assert loaded.thresholds["1e-3"] == 0.42 and loaded.default_threshold(0.3) == 0.42
    with pytest.raises(ValueError, match="unknown FAR keys"):
        update_thresholds(onnx_path, {"1e-7": 0.5})


INVALID_FIELDS: dict[str, tuple[Callable[[dict], None], str]] = {
    "zero embedding size": (lambda r: r.update(embedding_size=0), "embedding_size"),
    "missing name": (lambda r: r.pop("name"), "name"),
    "unknown key": (lambda r: r.update(mystery=1), "mystery"),
    "colour order": (lambda r: r.update(colour_order="RGBA"), "colour_order"),
    "zero std": (lambda r: r.update(std=[127.5, 0, 127.5]), "std must not contain zeros"),
    "empty input": (lambda r: r.update(input_size=[0, 112]), "input_size must be positive"),
    "old opset": (lambda r: r.update(opset=11), "opset"),
    "schema version": (lambda r: r.update(schema_version=2), "schema_version"),
    "unknown FAR": (lambda r: r.update(thresholds={"1e-9": 0.5}), "unknown FAR keys"),
    "threshold range": (lambda r: r.update(thresholds={"1e-3": 1.5}), "must be a cosine"),
}


def _break(kind: str, onnx_path: Path) -> str:
    """Breaks the artifact at ``onnx_path`` in one way; returns the expected message."""
    meta = metadata_path(onnx_path)
    if kind == "no metadata":
        meta.unlink()
        return "has no metadata"
    if kind == "malformed JSON":
        meta.write_text('{"name": "m", "version": ', encoding="utf-8")
        return "is not valid JSON"
    if kind == "invalid field":
        rewrite_json(onnx_path, lambda r: r.update(embedding_size=-3))
        return "is invalid"
    if kind == "sha256 mismatch":
        with open(onnx_path, "ab") as handle:
            handle.write(b"\0")
        return "does not match its metadata"
    if kind == "missing model":
        onnx_path.unlink()
        return "model file not found"
    raise AssertionError(kind)


BREAKAGES = ["no metadata", "malformed JSON", "invalid field", "sha256 mismatch", "missing model"]


@pytest.mark.parametrize("kind", BREAKAGES)
def test_load_metadata_refuses_broken_artifacts(
    kind: str, artifact_copy: Callable[[], Path]
) -> None:
    onnx_path = artifact_copy()
    load_metadata(onnx_path)  # valid before
    message = _break(kind, onnx_path)
    with pytest.raises(ArtifactError, match=message):
        load_metadata(onnx_path)


@pytest.mark.parametrize("case", sorted(INVALID_FIELDS))
def test_load_metadata_names_the_invalid_field(
    case: str, artifact_copy: Callable[[], Path]
) -> None:
    onnx_path = artifact_copy()
    change, message = INVALID_FIELDS[case]
    rewrite_json(onnx_path, change)
    with pytest.raises(ArtifactError, match="is invalid") as info:
        load_metadata(onnx_path)
    assert message in str(info.value)


# --- the ONNX Runtime loader ------------------------------------------------------------


@pytest.mark.parametrize("kind", BREAKAGES)
def test_embedder_refuses_broken_artifacts(kind: str, artifact_copy: Callable[[], Path]) -> None:
    onnx_path = artifact_copy()
    message = _break(kind, onnx_path)
    with pytest.raises(ArtifactError, match=message):
        OnnxEmbedder(onnx_path)


def test_embedder_refuses_metadata_naming_another_input(
    artifact_copy: Callable[[], Path],
) -> None:
    onnx_path = artifact_copy()
    rewrite_json(onnx_path, lambda r: r.update(input_name="pixels"))
    with pytest.raises(ArtifactError, match=r"has inputs \['input'\].*'pixels'"):
        OnnxEmbedder(onnx_path)


def test_embedder_refuses_a_wrong_embedding_size(artifact_copy: Callable[[], Path]) -> None:
    onnx_path = artifact_copy()
    rewrite_json(onnx_path, lambda r: r.update(embedding_size=TINY_DIM + 1))
    embedder = OnnxEmbedder(onnx_path, threads=1)
    with pytest.raises(ArtifactError, match=f"{TINY_DIM}-d embeddings"):
        embedder.embed_pixels(np.zeros((1, 112, 112, 3), dtype=np.uint8))


def test_embedder_refuses_an_onnx_file_that_is_not_onnx(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"garbage")
    write_metadata(onnx_path, ModelMetadata(name="m", version="1", embedding_size=8, backbone="b"))
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load"):
        OnnxEmbedder(onnx_path)


def test_embedder_matches_torch_normalised_embeddings(
    tiny_artifact: Path, tiny_backbone: nn.Module
) -> None:
    embedder = OnnxEmbedder(tiny_artifact, threads=1)
    assert embedder.metadata.embedding_size == TINY_DIM
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    pixels[2] = 200  # a flat image as well
    got = embedder.embed_pixels(pixels)
    assert got.shape == (3, TINY_DIM) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got, torch_unit_embeddings(tiny_backbone, pixels), atol=2e-5)
    assert embedder.embed_pixels(pixels[:0]).shape == (0, TINY_DIM)


def test_embedder_on_real_faces_of_other_sizes(
    tiny_artifact: Path, tiny_backbone: nn.Module, lfw_face_paths: list[Path]
) -> None:
    embedder = OnnxEmbedder(tiny_artifact, threads=1)
    images = [Image.open(path).convert("RGB") for path in lfw_face_paths[:3]]  # 250x250
    got = embedder.embed_images(images)
    prepared = np.stack([resize_to_input(image, (112, 112)) for image in images])
    np.testing.assert_allclose(got, torch_unit_embeddings(tiny_backbone, prepared), atol=2e-5)
    # different faces, different embeddings: the model is not collapsed
    assert float(got[0] @ got[1]) < 0.9999
