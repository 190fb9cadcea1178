"""int8 and fp16 copies of an artifact (models.quantize, lrfr quantize): the metadata they
carry, the gate kept in float32, and their agreement with the fp32 graph; and the
pair-space form of a gated artifact, in any precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from lrfr.cli import app
from models.artifact import ArtifactError, load_metadata, write_metadata
from models.backbones.gated import QualityGated
from models.comparison import pair_similarity
from models.embedder import OnnxEmbedder
from models.export import export_onnx
from models.quality import laplacian_score
from models.quantize import convert_fp16, quantize_int8, write_branch_only, write_pair_space
from tests.models.conftest import TINY_GATE as GATE


def _crops(count: int, seed: int = 0) -> np.ndarray:
    """Random pictures, every other one smooth (low q: the blurred branch)."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        side = 112 if i % 2 == 0 else 7
        small = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((112, 112), Image.Resampling.BICUBIC)
        crops.append(np.asarray(image))
    return np.stack(crops)


@pytest.fixture(scope="module")
def gated_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.models.conftest import make_tiny_backbone

    gated = QualityGated(make_tiny_backbone(seed=0), make_tiny_backbone(seed=1), gate=3.0)
    path = tmp_path_factory.mktemp("gated") / "g.onnx"
    export_onnx(gated, path, name="g", version="0", backbone_name="ir-tiny", gate=GATE,
                branch_only=False)  # as older exports were: both branches on every face
    return path


def test_the_crops_reach_both_branches() -> None:
    q = [laplacian_score(crop).laplacian for crop in _crops(4)]
    assert q[0] >= 3.0 > q[1]


def test_int8_copy(gated_artifact: Path, tmp_path: Path) -> None:
    metadata, check = quantize_int8(gated_artifact, tmp_path / "g.int8.onnx", _crops(32), batch=8)
    assert metadata == load_metadata(tmp_path / "g.int8.onnx")  # sha256 of the new graph
    assert metadata.precision == "int8" and metadata.gate == GATE
    assert metadata.extra["gate_graph"].startswith("branch-only")
    assert check.faces == 32 and check.min_cosine > 0.95
    graph = onnx.load(str(tmp_path / "g.int8.onnx")).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    quantized_inputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    # the Laplacian of the gate reads float32 pixels: no dequantized input
    gate_convs = [n for n in graph.node if n.op_type == "Conv" and not n.name.startswith(
        ("sharp_rows/", "blurred_rows/"))]
    assert gate_convs and not set(gate_convs[0].input) & quantized_inputs
    embedder = OnnxEmbedder(tmp_path / "g.int8.onnx")
    assert embedder.embed_pixels(_crops(3)).shape == (3, 16)
    _blurred_branch_agrees(tmp_path / "g.int8.onnx", gated_artifact, min_cosine=0.95)


def _blurred_branch_agrees(path: Path, source: Path, *, min_cosine: float) -> None:
    """The converted graph's student, its gate shut, answers its blurred faces as the graph
    does, and its sharp ones close to the float32 student's answers."""
    crops = _crops(4)  # sharp, blurred, sharp, blurred
    served = OnnxEmbedder(path).embed_pixels(crops)
    student = OnnxEmbedder(path, branch="blurred").embed_pixels(crops)
    np.testing.assert_allclose(student[1::2], served[1::2], atol=1e-5)
    assert not np.allclose(student[::2], served[::2], atol=1e-3)
    reference = OnnxEmbedder(source, branch="blurred").embed_pixels(crops)
    assert np.min(np.sum(student * reference, axis=1)) > min_cosine


def test_int8_ranges_default_to_percentile_and_settings_apply(gated_artifact: Path,
                                                              tmp_path: Path) -> None:
    crops = _crops(16)
    cache = tmp_path / "ranges.json"
    default, _ = quantize_int8(gated_artifact, tmp_path / "p.onnx", crops, batch=4,
                               calibration_cache=cache)
    assert default.extra["int8_conversion"]["calibration"] == "16 crops, percentile 99.999"
    assert cache.is_file()  # the histogram ranges, written one batch at a time
    minmax, _ = quantize_int8(gated_artifact, tmp_path / "m.onnx", crops, batch=4,
                              calibrate_method="minmax")
    assert minmax.extra["int8_conversion"]["calibration"] == "16 crops, minmax"

    def scales(path: Path) -> dict[str, float]:
        graph = onnx.load(str(path)).graph
        values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
        return {n.output[0]: float(values[n.input[1]]) for n in graph.node
                if n.op_type == "QuantizeLinear" and values[n.input[1]].size == 1}

    # percentile ranges clip the extremes: no activation scale wider than minmax's
    narrow, wide = scales(tmp_path / "p.onnx"), scales(tmp_path / "m.onnx")
    shared = narrow.keys() & wide.keys()
    assert shared and all(narrow[k] <= wide[k] * (1 + 1e-6) for k in shared)
    assert any(narrow[k] < wide[k] * 0.999 for k in shared)


def test_int8_float_nodes_stay_float(gated_artifact: Path, tmp_path: Path) -> None:
    cache = tmp_path / "ranges.json"
    quantize_int8(gated_artifact, tmp_path / "a.onnx", _crops(16), batch=4,
                  calibration_cache=cache)
    convs = [n for n in onnx.load(str(tmp_path / "a.onnx")).graph.node
             if n.op_type == "Conv" and n.name.startswith("blurred_rows/")]
    middle = convs[1].name  # not the first convolution, which is float anyway
    metadata, _ = quantize_int8(gated_artifact, tmp_path / "b.onnx", _crops(16), batch=4,
                                float_nodes=[middle], calibration_cache=cache)
    assert middle in metadata.extra["int8_conversion"]["method"]
    graph = onnx.load(str(tmp_path / "b.onnx")).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    node = next(n for n in graph.node if n.name == middle)
    assert not set(node.input) & dequantized  # float weights and input
    with pytest.raises(ValueError, match="not in the graph"):
        quantize_int8(gated_artifact, tmp_path / "c.onnx", _crops(16), batch=4,
                      float_nodes=["no/such/Conv"], calibration_cache=cache)


def test_fp16_copy_keeps_the_float32_contract(gated_artifact: Path, tmp_path: Path) -> None:
    metadata, check = convert_fp16(gated_artifact, tmp_path / "g.fp16.onnx", _crops(8))
    assert metadata.precision == "fp16" and check.min_cosine > 0.999
    graph = onnx.load(str(tmp_path / "g.fp16.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    _blurred_branch_agrees(tmp_path / "g.fp16.onnx", gated_artifact, min_cosine=0.999)


def test_branch_only_copy_is_the_same_function(gated_artifact: Path, tmp_path: Path) -> None:
    metadata, check = write_branch_only(gated_artifact, tmp_path / "g.bo.onnx", _crops(8))
    assert check.min_cosine >= 0.99999 and check.max_abs_diff < 1e-5
    assert metadata.precision == "fp32" and metadata.gate == GATE
    with pytest.raises(ValueError, match="not a gated graph"):
        write_branch_only(tmp_path / "g.bo.onnx", tmp_path / "again.onnx", _crops(2))


def test_refuses_to_convert_a_converted_model(gated_artifact: Path, tmp_path: Path) -> None:
    convert_fp16(gated_artifact, tmp_path / "g.fp16.onnx", _crops(4))
    with pytest.raises(ValueError, match="already fp16"):
        quantize_int8(tmp_path / "g.fp16.onnx", tmp_path / "x.onnx", _crops(8))


def test_int8_calibration_needs_both_sides_of_the_gate(gated_artifact: Path,
                                                        tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both sides of the gate"):
        quantize_int8(gated_artifact, tmp_path / "x.onnx", _crops(8)[::2])


def test_lrfr_quantize_on_lfw_crops(gated_artifact: Path, tmp_path: Path,
                                    shared_data_dir: Path) -> None:
    lfw = shared_data_dir / "lfw"
    if not (lfw / "peopleDevTrain.txt").is_file():
        pytest.skip("LFW peopleDevTrain.txt not found")
    model = tmp_path / "g.onnx"
    for suffix in (".onnx", ".json"):
        model.with_suffix(suffix).write_bytes(gated_artifact.with_suffix(suffix).read_bytes())
    result = CliRunner().invoke(app, ["quantize", str(model), "--to", "int8", "--data", str(lfw),
                                      "--crops", "48"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and load_metadata(tmp_path / "g.int8.onnx").precision == "int8"
    result = CliRunner().invoke(app, ["quantize", str(model), "--to", "int4", "--data", str(lfw)])
    assert result.exit_code == 1 and "--to must be one of" in result.output
    result = CliRunner().invoke(app, ["quantize", str(model), "--data", str(lfw), "--crops",
                                      "48", "--calibration", "minmax", "--out",
                                      str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    calibration = load_metadata(tmp_path / "m.onnx").extra["int8_conversion"]["calibration"]
    assert calibration == "48 crops, minmax"
    assert load_metadata(tmp_path / "g.int8.onnx").extra["int8_conversion"]["calibration"] == (
        "48 crops, percentile 99.999")
    result = CliRunner().invoke(app, ["quantize", str(model), "--data", str(lfw),
                                      "--calibration", "kl"])
    assert result.exit_code == 1 and "--calibration must be one of" in result.output
    result = CliRunner().invoke(app, ["quantize", str(model), "--to", "pair-space", "--data",
                                      str(lfw), "--version", "2.0.0", "--check-crops", "16"])
    assert result.exit_code == 0, result.output
    assert "no thresholds yet: lrfr calibrate" in result.output
    assert load_metadata(tmp_path / "g.pair-space.onnx").version == "2.0.0"
    result = CliRunner().invoke(app, ["quantize", str(model), "--to", "int8", "--data",
                                      str(lfw), "--version", "2.0.0"])
    assert result.exit_code == 1 and "--version goes with --to pair-space" in result.output


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_pair_space_copy(gated_artifact: Path, tmp_path: Path, precision: str) -> None:
    source = gated_artifact
    if precision == "int8":
        source = tmp_path / "g.int8.onnx"
        quantize_int8(gated_artifact, source, _crops(16), batch=4)
    elif precision == "fp16":
        source = tmp_path / "g.fp16.onnx"
        convert_fp16(gated_artifact, source, _crops(4))
    metadata, check = write_pair_space(source, tmp_path / "g.pair.onnx", _crops(8))
    assert metadata == load_metadata(tmp_path / "g.pair.onnx")
    assert metadata.comparison == "pair-space" and metadata.embedding_size == 48
    assert metadata.version == "0+pair-space" and metadata.precision == precision
    assert metadata.quality_calibration is None
    assert set(metadata.thresholds.values()) == {None}  # calibrated for the cosine model
    assert check.min_cosine >= 0.99999
    assert metadata.extra["pair_space_parity"]["sharp_faces"] == 4
    assert metadata.extra["pair_space_parity"]["student_min_cosine"] >= 0.99999
    assert metadata.extra["gate_graph"].startswith("pair-space: the student runs on every face")
    crops = _crops(4)  # sharp, blurred, sharp, blurred
    pair = OnnxEmbedder(tmp_path / "g.pair.onnx")
    stored = pair.embed_pixels(crops)
    served = OnnxEmbedder(source).embed_pixels(crops)
    student = OnnxEmbedder(source, branch="blurred").embed_pixels(crops)
    first, second = [0, 0, 1, 2], [2, 1, 3, 3]  # sharp-sharp, sharp-blurred, ...
    expected = [served[0] @ served[2], student[0] @ student[1],
                student[1] @ student[3], student[2] @ student[3]]
    np.testing.assert_allclose(pair_similarity(stored[first], stored[second], "pair-space"),
                               expected, atol=1e-5)
    np.testing.assert_allclose(stored @ pair.queries(stored).T,
                               (stored @ pair.queries(stored).T).T, atol=1e-6)
    # two faces on one side of the gate: the one-network form gives the same similarity
    cheap = pair.embed_pixels(crops, same_side=True)
    for a, b in ((0, 2), (1, 3)):
        assert float(cheap[a] @ pair.queries(cheap[b:b + 1])[0]) == pytest.approx(
            float(stored[a] @ pair.queries(stored[b:b + 1])[0]), abs=1e-6)
    np.testing.assert_allclose(cheap[1::2], stored[1::2], atol=1e-6)  # blurred: unchanged
    with pytest.raises(ArtifactError, match="pair-space model"):
        OnnxEmbedder(tmp_path / "g.pair.onnx", branch="blurred")


def test_pair_space_copy_refusals(gated_artifact: Path, tiny_artifact: Path,
                                  tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="version other than"):
        write_pair_space(gated_artifact, tmp_path / "a.onnx", _crops(4), version="0")
    with pytest.raises(ValueError, match="not a gated model"):
        write_pair_space(tiny_artifact, tmp_path / "b.onnx", _crops(4))
    write_pair_space(gated_artifact, tmp_path / "c.onnx", _crops(4), version="1.0.0")
    assert load_metadata(tmp_path / "c.onnx").version == "1.0.0"
    with pytest.raises(ValueError, match="already a pair-space"):
        write_pair_space(tmp_path / "c.onnx", tmp_path / "d.onnx", _crops(4))
    with pytest.raises(ValueError, match="pair-space artifact"):
        quantize_int8(tmp_path / "c.onnx", tmp_path / "e.onnx", _crops(8))


def test_an_artifact_saying_pair_space_over_another_graph_is_refused_at_load(
    gated_artifact: Path, tmp_path: Path
) -> None:
    metadata, _ = write_pair_space(gated_artifact, tmp_path / "p.onnx", _crops(4))
    (tmp_path / "p.onnx").write_bytes(gated_artifact.read_bytes())  # the cosine graph
    write_metadata(tmp_path / "p.onnx", metadata)  # its checksum now that graph's
    with pytest.raises(ArtifactError, match="says comparison 'pair-space'"):
        OnnxEmbedder(tmp_path / "p.onnx")


def test_a_pair_space_rewrite_that_disagrees_is_refused_and_removed(
    gated_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.quantize as quantize

    rewrite = quantize.pair_space_graph

    def broken(model: onnx.ModelProto) -> onnx.ModelProto:
        """The rewrite with the third block taken from the blurred faces only: sharp faces
        get [g, 0, 0], a block of zeros (a NaN cosine with the student)."""
        pair = rewrite(model)
        blocks = next(node for node in pair.graph.node if node.name == "pair/blocks")
        blocks.input[2] = "pair/blurred_only"
        return pair

    monkeypatch.setattr(quantize, "pair_space_graph", broken)
    with pytest.raises(ValueError, match="disagrees"):
        write_pair_space(gated_artifact, tmp_path / "p.onnx", _crops(4))
    assert not (tmp_path / "p.onnx").exists()
