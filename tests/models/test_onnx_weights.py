"""A gated artifact's branch read back as torch weights (models.onnx_weights) and
``lrfr branch-checkpoint``."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

from lrfr.cli import app
from models.artifact import GateBranch, GateInfo, load_metadata, write_metadata
from models.backbones import create_backbone
from models.backbones.gated import QualityGated
from models.checkpoint import Checkpoint
from models.export import export_onnx
from models.onnx_weights import OnnxWeightsError, branch_state_from_onnx

GATE = GateInfo(
    threshold=3.0,
    sharp=GateBranch(name="dlib-a", source="seed 0"),
    blurred=GateBranch(name="dlib-b", source="seed 1", head="approach2+distill"),
    chosen_on="nothing (a test)",
)


def _random_dlib(seed: int) -> torch.nn.Module:
    """dlib-resnet29 with every tensor random, so no two tensors share values."""
    torch.manual_seed(seed)
    net = create_backbone("dlib-resnet29", embedding_size=128, input_size=112)
    with torch.no_grad():
        for value in net.state_dict().values():
            value.copy_(torch.randn_like(value) * 0.05 + value.mean())
    return net.eval()


@pytest.fixture(scope="module")
def gated_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, QualityGated]:
    gated = QualityGated(_random_dlib(0), _random_dlib(1), gate=3.0)
    with torch.no_grad():  # as in dlib's networks: one input mean, stored once in the graph
        gated.blurred.mean.copy_(gated.sharp.mean)
    path = tmp_path_factory.mktemp("gated") / "g.onnx"
    export_onnx(gated, path, name="gated-test", version="0.0.1",
                backbone_name="dlib-resnet29-gated", gate=GATE, parity_samples=2)
    return path, gated


def test_both_branches_come_back_exactly(gated_artifact: tuple[Path, QualityGated]) -> None:
    path, gated = gated_artifact
    graph = onnx.load(str(path)).graph
    assert "blurred.mean" not in {t.name for t in graph.initializer}  # an Identity of sharp's
    template = create_backbone("dlib-resnet29", embedding_size=128, input_size=112)
    for branch in ("sharp", "blurred"):
        state = branch_state_from_onnx(path, branch, template)
        original = getattr(gated, branch).state_dict()
        assert state.keys() == original.keys()
        for key, value in original.items():
            assert torch.equal(state[key], value), f"{branch}.{key}"
    with pytest.raises(OnnxWeightsError, match="middle"):
        branch_state_from_onnx(path, "middle", template)


def test_branch_checkpoint_cli_writes_a_checkpoint_to_fine_tune(
    gated_artifact: tuple[Path, QualityGated], tmp_path: Path
) -> None:
    path, gated = gated_artifact
    out = tmp_path / "student.pt"
    result = CliRunner().invoke(app, ["branch-checkpoint", str(path), str(out)])
    assert result.exit_code == 0, result.output
    checkpoint = Checkpoint.load(out)
    assert checkpoint.get("head_name") == "approach2+distill"
    assert "gated-test 0.0.1" in checkpoint.get("source")
    student = checkpoint.build_backbone().eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(student(x), gated.blurred(x))
    bad = CliRunner().invoke(app, ["branch-checkpoint", str(path), str(out), "--branch", "x"])
    assert bad.exit_code != 0 and "sharp or blurred" in bad.output
    broken = tmp_path / "broken.onnx"
    model = onnx.load(str(path))
    kept = [t for t in model.graph.initializer if t.name != "blurred.units.3.conv1.weight"]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.save(model, str(broken))
    (tmp_path / "broken.json").write_text(path.with_suffix(".json").read_text())
    mixed = CliRunner().invoke(app, ["branch-checkpoint", str(broken), str(out)])
    assert mixed.exit_code == 2 and "does not match its metadata" in mixed.output
    write_metadata(broken, load_metadata(path))  # the pair made consistent: a graph short
    failed = CliRunner().invoke(app, ["branch-checkpoint", str(broken), str(out)])
    assert failed.exit_code == 2 and "blurred.units.3.conv1.weight" in failed.output
