"""ONNX export (models.export): parity with torch, the metadata written, failure cleanup
and export from a training checkpoint."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import models.export as export_module
from models.artifact import GateBranch, GateInfo, file_sha256, load_metadata, metadata_path
from models.backbones import create_backbone
from models.backbones.gated import QualityGated
from models.checkpoint import CheckpointError
from models.embedder import OnnxEmbedder
from models.export import (
    ExportError,
    backbone_from_checkpoint,
    check_parity,
    export_checkpoint,
    export_onnx,
    gate_info,
    git_commit,
)

TINY_DIM = 16  # tests/models/conftest.py builds ir-tiny at this size
META = {"name": "lrfr-tiny", "version": "0.0.1", "backbone_name": "ir-tiny"}


def checkpoint_of(net: torch.nn.Module) -> dict:
    return {
        "backbone_name": "ir-tiny",
        "backbone_kwargs": {"embedding_size": TINY_DIM},
        "backbone_state": net.state_dict(),
        "head_name": "approach2",
        "step": 7,
    }


def test_exported_graph_follows_the_contract(tiny_artifact: Path) -> None:
    model = onnx.load(str(tiny_artifact))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "input" and graph_output.name == "embedding"
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [3, 112, 112]


def test_metadata_written_beside_the_graph(tiny_artifact: Path) -> None:
    meta = load_metadata(tiny_artifact)
    assert (meta.name, meta.version, meta.backbone) == ("lrfr-tiny", "0.0.1", "ir-tiny")
    assert meta.head == "arcface" and meta.training_data == "none (random weights)"
    assert meta.embedding_size == TINY_DIM and meta.input_size == (112, 112)
    assert meta.input_name == "input" and meta.output_name == "embedding"
    assert meta.opset == 17
    assert meta.onnx_sha256 == file_sha256(tiny_artifact)
    assert all(t is None for t in meta.thresholds.values())
    assert meta.extra["parity_min_cosine"] >= 0.9999
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True
    )
    expected = head.stdout.strip() if head.returncode == 0 else None
    assert meta.git_commit == expected


def test_git_commit_is_none_outside_a_repository(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
    commit = git_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)


def test_dynamic_batch_runs_sizes_not_traced(tiny_artifact: Path, tiny_backbone) -> None:
    session = ort.InferenceSession(str(tiny_artifact), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3, 112, 112)).astype(np.float32)
    (out,) = session.run(["embedding"], {"input": x})
    with torch.no_grad():
        expected = tiny_backbone(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_export_leaves_the_callers_module_alone(make_tiny, tmp_path: Path) -> None:
    net = make_tiny(seed=1).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    export_onnx(net, tmp_path / "m.onnx", **META)
    assert net.training
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_broken_parity_raises_and_removes_the_files(
    make_tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_module._onnx_embeddings

    def corrupted(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
        out = real(onnx_path, batch)
        noise = np.random.default_rng(0).normal(0, 1, out.shape)
        return out + 0.1 * np.linalg.norm(out, axis=1, keepdims=True) * noise

    monkeypatch.setattr(export_module, "_onnx_embeddings", corrupted)
    onnx_path = tmp_path / "m.onnx"
    metadata_path(onnx_path).write_text("{}")  # a stale file from an earlier export
    with pytest.raises(ExportError, match="ONNX Runtime disagrees with PyTorch"):
        export_onnx(make_tiny(), onnx_path, **META)
    assert not onnx_path.exists()
    assert not metadata_path(onnx_path).exists()


def test_nan_outputs_fail_the_parity_check(make_tiny, tiny_artifact: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        export_module, "_onnx_embeddings", lambda path, batch: np.full((len(batch), 16), np.nan)
    )
    with pytest.raises(ExportError, match="cosine nan"):
        check_parity(make_tiny(), tiny_artifact, input_size=112, batch_sizes=(2,))


def test_shape_mismatch_fails_the_parity_check(tiny_artifact: Path) -> None:
    other = create_backbone("ir-tiny", embedding_size=TINY_DIM + 1).eval()
    with pytest.raises(ExportError, match="shape"):
        check_parity(other, tiny_artifact, input_size=112, batch_sizes=(1,))


def test_a_different_model_fails_the_parity_check(make_tiny, tiny_artifact: Path) -> None:
    with pytest.raises(ExportError, match="disagrees"):
        check_parity(make_tiny(seed=5), tiny_artifact, input_size=112)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_cosine": 1.5}, "min_cosine"),
        ({"opset": 13}, "opset"),
        ({"parity_samples": 0}, "parity_samples"),
    ],
)
def test_invalid_export_options(make_tiny, tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        export_onnx(make_tiny(), tmp_path / "m.onnx", **META, **kwargs)
    assert not (tmp_path / "m.onnx").exists()


def test_export_from_checkpoint_dict_and_file(make_tiny, tmp_path: Path) -> None:
    net = make_tiny(seed=2)
    checkpoint = checkpoint_of(net)
    rebuilt, name = backbone_from_checkpoint(checkpoint)
    assert name == "ir-tiny" and not rebuilt.training
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), net(x))

    saved = tmp_path / "last.pt"
    torch.save(checkpoint, saved)
    meta = export_checkpoint(saved, tmp_path / "m.onnx", name="ckpt", version="3")
    assert meta.head == "approach2" and meta.backbone == "ir-tiny"
    embedder = OnnxEmbedder(tmp_path / "m.onnx", threads=1)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    got = embedder.embed_pixels(pixels)
    with torch.no_grad():
        z = net((torch.from_numpy(pixels).float().permute(0, 3, 1, 2) - 127.5) / 127.5)
    np.testing.assert_allclose(got, torch.nn.functional.normalize(z).numpy(), atol=2e-5)


def test_checkpoint_errors_are_explained(make_tiny) -> None:
    checkpoint = checkpoint_of(make_tiny())
    del checkpoint["backbone_state"]
    with pytest.raises(ValueError, match=r"lacks \['backbone_state'\]"):
        backbone_from_checkpoint(checkpoint)
    wrong = checkpoint_of(make_tiny())
    wrong["backbone_kwargs"] = {"embedding_size": TINY_DIM * 2}
    with pytest.raises(ValueError, match="do not fit ir-tiny"):
        backbone_from_checkpoint(wrong)


# -- gated backbones ----------------------------------------------------------------------

GATE = GateInfo(
    threshold=3.0,
    sharp=GateBranch(name="tiny-a", source="seed 0"),
    blurred=GateBranch(name="tiny-b", source="seed 1", head="approach2"),
    chosen_on="nothing (a test)",
)


def test_gated_export_writes_the_gate(make_tiny, tmp_path: Path) -> None:
    gated = QualityGated(make_tiny(seed=0), make_tiny(seed=1), gate=3.0)
    meta = export_onnx(gated, tmp_path / "g.onnx", **META, gate=GATE)
    assert meta.gate == GATE == load_metadata(tmp_path / "g.onnx").gate
    assert meta.head == "gated(sharp: released weights | blurred: approach2)"


def test_a_gated_graph_without_a_record_still_states_its_threshold(
    make_tiny, tiny_artifact: Path
) -> None:
    # the full export of such a checkpoint: tests/models/test_dlib_resnet.py
    gate = gate_info(QualityGated(make_tiny(seed=0), make_tiny(seed=1), gate=2.5), None)
    assert gate is not None and gate.threshold == 2.5
    assert gate.sharp.name == gate.blurred.name == "not recorded"
    assert gate_info(make_tiny(), None) is None
    assert load_metadata(tiny_artifact).gate is None  # not gated: no section


def test_a_gate_record_must_fit_the_graph(make_tiny, tmp_path: Path) -> None:
    other = QualityGated(make_tiny(seed=0), make_tiny(seed=1), gate=4.0)
    with pytest.raises(ValueError, match=r"graph switches at 4\.0"):
        export_onnx(other, tmp_path / "g.onnx", **META, gate=GATE)
    with pytest.raises(ValueError, match="not gated"):
        export_onnx(make_tiny(), tmp_path / "g.onnx", **META, gate=GATE)
    assert not list(tmp_path.iterdir())
    checkpoint = {**checkpoint_of(make_tiny()), "gate": {"threshold": -1}}
    with pytest.raises(CheckpointError, match="gate record is invalid"):
        export_checkpoint(checkpoint, tmp_path / "g.onnx", name="g", version="1")


@pytest.mark.slow
def test_ir50_export_matches_torch_through_the_embedder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = create_backbone("ir50").eval()
    meta = export_onnx(net, tmp_path / "ir50.onnx", name="ir50", version="0", backbone_name="ir50")
    assert meta.embedding_size == 512
    embedder = OnnxEmbedder(tmp_path / "ir50.onnx", threads=2)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    got = embedder.embed_pixels(pixels)
    with torch.no_grad():
        z = net((torch.from_numpy(pixels).float().permute(0, 3, 1, 2) - 127.5) / 127.5)
    cosine = (got * torch.nn.functional.normalize(z).numpy()).sum(axis=1)
    assert cosine.min() >= 0.9999


def test_a_gated_export_runs_only_the_selected_branch(make_tiny, tmp_path: Path) -> None:
    gated = QualityGated(make_tiny(seed=0), make_tiny(seed=1), gate=3.0)
    meta = export_onnx(gated, tmp_path / "g.onnx", **META, gate=GATE)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "g.onnx")).graph.node}
    assert "Where" not in ops and "ScatterND" in ops
    assert meta.extra["gate_graph"].startswith("branch-only")
    assert meta.extra["branch_only_parity_min_cosine"] >= 0.9999
    # sharp and blurred inputs in one batch: the torch module's answer, row by row
    rng = np.random.default_rng(1)
    batch = np.stack([rng.uniform(-a, a, (3, 112, 112)) for a in (1.0, 1e-3, 0.5, 2e-3)])
    batch = batch.astype(np.float32)
    with torch.no_grad():
        expected = gated(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": batch})[0], expected, atol=1e-5)
    both = export_onnx(gated, tmp_path / "both.onnx", **META, gate=GATE, branch_only=False)
    assert "gate_graph" not in both.extra
    assert "Where" in {node.op_type for node in onnx.load(str(tmp_path / "both.onnx")).graph.node}
