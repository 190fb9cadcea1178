"""The branch-only rewrite of gated graphs (models.branch_only): the same embeddings as the
graph that runs both branches, for mixed, one-sided, single and empty batches, while each
face goes through one branch only; and the blurred branch cut out of either form, which
embeds every face by the student (``OnnxEmbedder(..., branch="blurred")``); and the
pair-space graph, which gives dlib's descriptor of the sharp faces and the student's z
of every face as three blocks (``models.comparison``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.artifact import ArtifactError, write_metadata
from models.backbones.gated import QualityGated
from models.branch_only import (
    GraphRewriteError,
    blurred_branch,
    find_gate,
    is_gated_both_branches,
    make_branch_only,
    pair_space_graph,
    same_side_graph,
)
from models.comparison import normalise
from models.embedder import OnnxEmbedder, to_tensor
from models.export import export_onnx
from tests.models.conftest import TINY_GATE as GATE


def _inputs(amplitudes: list[float], seed: int = 0) -> np.ndarray:
    """Normalised noise images; a large amplitude has a high Laplacian q, a tiny one a low q."""
    rng = np.random.default_rng(seed)
    images = [rng.uniform(-a, a, (3, 112, 112)) for a in amplitudes]
    return np.asarray(images, dtype=np.float32).reshape(len(amplitudes), 3, 112, 112)


@pytest.fixture(scope="module")
def gated_module() -> QualityGated:
    from tests.models.conftest import make_tiny_backbone

    return QualityGated(make_tiny_backbone(seed=0), make_tiny_backbone(seed=1), gate=3.0).eval()


@pytest.fixture(scope="module")
def gated_graph(gated_module: QualityGated, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gated") / "g.onnx"
    export_onnx(gated_module, path, name="g", version="0", backbone_name="ir-tiny", gate=GATE,
                branch_only=False)  # the graph as exported before: both branches, a Where
    return path


def _run(model: onnx.ModelProto | Path, batch: np.ndarray) -> np.ndarray:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch})[0]


@pytest.mark.parametrize("amplitudes", [
    [1.0, 0.001, 0.5, 0.002, 1.0],  # mixed, interleaved
    [1.0, 1.0, 0.8],  # sharp only
    [0.001, 0.002],  # blurred only
    [1.0],
    [0.001],
])
def test_same_embeddings_as_both_branches(gated_graph: Path, amplitudes: list[float]) -> None:
    batch = _inputs(amplitudes)
    rewritten = make_branch_only(onnx.load(str(gated_graph)))
    np.testing.assert_allclose(_run(rewritten, batch), _run(gated_graph, batch), atol=1e-6)


def test_the_gate_really_splits_the_batch(gated_graph: Path) -> None:
    # the test inputs do reach both branches: the two branches' outputs differ
    batch = _inputs([1.0, 0.001])
    out = _run(gated_graph, batch)
    rewritten = _run(make_branch_only(onnx.load(str(gated_graph))), batch)
    swapped = _run(make_branch_only(onnx.load(str(gated_graph))), batch[::-1].copy())
    np.testing.assert_allclose(swapped[::-1], rewritten, atol=1e-6)
    assert not np.allclose(out[0], out[1], atol=1e-3)


def test_an_empty_batch_is_answered(gated_graph: Path) -> None:
    rewritten = make_branch_only(onnx.load(str(gated_graph)))
    assert _run(rewritten, _inputs([])).shape == (0, 16)


def test_each_branch_runs_once(gated_graph: Path) -> None:
    model = onnx.load(str(gated_graph))
    rewritten = make_branch_only(model)
    convs = sum(node.op_type == "Conv" for node in model.graph.node)
    # the same convolutions (both branches and the Laplacian), each fed its own rows
    assert sum(node.op_type == "Conv" for node in rewritten.graph.node) == convs
    assert not any(node.op_type == "Where" for node in rewritten.graph.node)
    assert is_gated_both_branches(model) and not is_gated_both_branches(rewritten)


def test_refuses_a_graph_that_is_not_gated(tiny_artifact: Path) -> None:
    with pytest.raises(GraphRewriteError, match="not a gated graph"):
        make_branch_only(onnx.load(str(tiny_artifact)))
    with pytest.raises(GraphRewriteError):
        find_gate(onnx.load(str(tiny_artifact)).graph)


def _student(gated: QualityGated, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.nn.functional.normalize(gated.blurred(torch.from_numpy(batch)), dim=1).numpy()


@pytest.fixture(params=[False, True], ids=["both-branches", "branch-only"])
def either_form(request: pytest.FixtureRequest, gated_graph: Path) -> onnx.ModelProto:
    """The gated graph as exported (both branches, a Where) or rewritten branch-only."""
    model = onnx.load(str(gated_graph))
    return make_branch_only(model) if request.param else model


#: Sharp and blurred faces, interleaved, and which is which.
MIXED_AMPLITUDES, MIXED_SHARP = [1.0, 0.001, 0.5, 0.002], np.array([True, False, True, False])


def test_the_blurred_branch_embeds_every_face_by_the_student(
    gated_module: QualityGated, gated_graph: Path, either_form: onnx.ModelProto
) -> None:
    branch = blurred_branch(either_form)
    assert [i.name for i in branch.graph.input] == ["input"]
    assert [o.name for o in branch.graph.output] == ["embedding"]
    batch, sharp = _inputs(MIXED_AMPLITUDES), MIXED_SHARP
    served, student = _run(gated_graph, batch), _run(branch, batch)
    np.testing.assert_allclose(student, _student(gated_module, batch), atol=1e-5)
    np.testing.assert_allclose(student[~sharp], served[~sharp], atol=1e-6)
    # sharp faces: the gated graph answers by the other branch, the cut-out one by the student
    assert not np.allclose(student[sharp], served[sharp], atol=1e-3)
    assert _run(branch, _inputs([])).shape == (0, 16)


def test_the_shut_gate_sends_no_row_to_the_sharp_branch(gated_graph: Path) -> None:
    rewritten = make_branch_only(onnx.load(str(gated_graph)))
    mask = next(node for node in rewritten.graph.node if node.name == "gate/not").input[0]
    branch = blurred_branch(rewritten)
    readers = [node for node in branch.graph.node if mask in node.input]
    assert [node.name for node in readers] == ["gate/shut"]  # NonZero and Not read the shut one
    sharp_rows = next(node for node in branch.graph.node if node.name == "gate/sharp_nonzero")
    assert list(sharp_rows.input) == ["gate/shut"]
    with pytest.raises(GraphRewriteError, match="already shut"):
        blurred_branch(branch)


def test_a_graph_without_branches_has_no_blurred_branch(tiny_artifact: Path) -> None:
    with pytest.raises(GraphRewriteError, match="not a gated graph"):
        blurred_branch(onnx.load(str(tiny_artifact)))
    with pytest.raises(ArtifactError, match="not a gated model"):
        OnnxEmbedder(tiny_artifact, branch="blurred")


def test_the_embedder_runs_the_blurred_branch_of_an_artifact(
    gated_module: QualityGated, tmp_path: Path
) -> None:
    path = tmp_path / "gated.onnx"
    export_onnx(gated_module, path, name="g", version="0", backbone_name="ir-tiny", gate=GATE)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    served = OnnxEmbedder(path).embed_pixels(pixels)
    student = OnnxEmbedder(path, branch="blurred")
    assert student.branch == "blurred"
    np.testing.assert_allclose(
        student.embed_pixels(pixels),
        _student(gated_module, to_tensor(pixels, student.metadata)), atol=1e-5,
    )
    # noise pictures are sharp: the artifact as served answers by the other branch
    assert not np.allclose(served, student.embed_pixels(pixels), atol=1e-3)
    with pytest.raises(ValueError, match="unknown branch"):
        OnnxEmbedder(path, branch="sharp")  # type: ignore[arg-type]


def test_a_gated_artifact_whose_graph_is_unreadable_is_an_artifact_error(
    gated_module: QualityGated, tmp_path: Path
) -> None:
    path = tmp_path / "gated.onnx"
    metadata = export_onnx(gated_module, path, name="g", version="0", backbone_name="ir-tiny",
                           gate=GATE)
    path.write_bytes(b"not a graph")
    write_metadata(path, metadata)  # its checksum now that of the broken file
    with pytest.raises(ArtifactError, match="cannot read the graph"):
        OnnxEmbedder(path, branch="blurred")


def test_the_pair_space_graph_gives_both_networks_blocks(
    gated_module: QualityGated, gated_graph: Path, either_form: onnx.ModelProto
) -> None:
    pair = pair_space_graph(either_form)
    assert [o.name for o in pair.graph.output] == ["embedding"]
    batch, sharp = _inputs(MIXED_AMPLITUDES), MIXED_SHARP
    served = _run(gated_graph, batch)
    blocks = normalise(_run(pair, batch), "pair-space").reshape(4, 3, 16)
    student = _student(gated_module, batch)
    np.testing.assert_allclose(blocks[sharp, 0], served[sharp] / np.linalg.norm(
        served[sharp], axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(blocks[~sharp, 1], student[~sharp], atol=1e-5)
    np.testing.assert_allclose(blocks[:, 2], student, atol=1e-5)
    assert not blocks[~sharp, 0].any() and not blocks[sharp, 1].any()
    assert _run(pair, _inputs([])).shape == (0, 48)
    # the sharp branch still runs on the sharp rows only, the student on every row
    sharp_rows = next(n for n in pair.graph.node if n.name == "gate/sharp_nonzero")
    assert "pair/every_row" not in sharp_rows.input


def test_a_pair_space_graph_is_not_rewritten_again(gated_graph: Path) -> None:
    pair = pair_space_graph(onnx.load(str(gated_graph)))
    with pytest.raises(GraphRewriteError, match="already gives pair-space"):
        pair_space_graph(pair)
    with pytest.raises(GraphRewriteError, match="third block"):
        blurred_branch(pair)
    with pytest.raises(GraphRewriteError, match="shut"):
        pair_space_graph(blurred_branch(onnx.load(str(gated_graph))))


def test_a_graph_without_branches_has_no_pair_space(tiny_artifact: Path) -> None:
    with pytest.raises(GraphRewriteError, match="not a gated graph"):
        pair_space_graph(onnx.load(str(tiny_artifact)))


def test_the_same_side_graph_runs_the_student_on_blurred_faces_only(gated_graph: Path) -> None:
    pair = pair_space_graph(onnx.load(str(gated_graph)))
    same = same_side_graph(pair)
    batch, sharp = _inputs(MIXED_AMPLITUDES), MIXED_SHARP
    full = normalise(_run(pair, batch), "pair-space").reshape(4, 3, 16)
    cheap = normalise(_run(same, batch), "pair-space").reshape(4, 3, 16)
    np.testing.assert_allclose(cheap[~sharp], full[~sharp], atol=1e-6)
    np.testing.assert_allclose(cheap[sharp, 0], full[sharp, 0], atol=1e-6)
    np.testing.assert_allclose(cheap[sharp, 2], full[sharp, 0], atol=1e-6)  # g, not z
    assert not cheap[sharp, 1].any()
    mask = next(n for n in pair.graph.node if n.name == "pair/every_row").input[0]
    negation = next(n for n in same.graph.node if n.name == "gate/not")
    assert list(negation.input) == [mask]  # the student's rows: the blurred ones
    assert not any(n.name == "pair/every_row" for n in same.graph.node)
    with pytest.raises(GraphRewriteError, match="not a pair-space graph"):
        same_side_graph(onnx.load(str(gated_graph)))
