"""The gate search (training/gate.py): accuracies through training.eval.metrics, the
winning gate, and the gated checkpoint the gated backbone loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.backbones import create_backbone
from models.checkpoint import Checkpoint
from training.eval.metrics import accuracy_at, best_threshold
from training.eval.protocols import PairProtocol
from training.gate import choose_gate, gated_accuracies, gated_checkpoint

PEOPLE, PER = 10, 4


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _setup() -> tuple[PairProtocol, dict, dict, dict]:
    """Sharp embeddings that know the person only for sharp images (q >= 5), blurred
    ones only for blurred images: the right gate lies between the two q levels."""
    rng = np.random.default_rng(0)
    n = PEOPLE * PER
    person = np.repeat(np.arange(PEOPLE), PER)
    centres = _unit(rng.normal(size=(PEOPLE, 16)))
    good = _unit(centres[person] + 0.05 * rng.normal(size=(n, 16)))
    noise = _unit(rng.normal(size=(n, 16)))
    left, right = np.triu_indices(n, k=1)
    labels = person[left] == person[right]
    protocol = PairProtocol("toy", [Path(f"{i}.png") for i in range(n)], left, right, labels,
                            np.zeros(len(labels), dtype=np.int64))
    qualities = {112: np.full(n, 9.0), 14: np.full(n, 1.0)}
    sharp = {112: good, 14: noise}
    blurred = {112: noise, 14: good}
    return protocol, qualities, sharp, blurred


def test_accuracies_are_the_metrics_best_threshold_accuracies() -> None:
    protocol, qualities, sharp, blurred = _setup()
    values = gated_accuracies(0.0, protocol, qualities, sharp, blurred)  # always sharp
    assert set(values) == {"both 112", "both 14", "cross 14"}
    scores = (sharp[14][protocol.left] * sharp[14][protocol.right]).sum(1)
    labels = protocol.labels.astype(bool)
    assert values["both 14"] == accuracy_at(scores, labels, best_threshold(scores, labels))
    assert values["both 112"] == 1.0


def test_the_gate_between_the_quality_levels_wins() -> None:
    protocol, qualities, sharp, blurred = _setup()
    search = choose_gate(protocol, qualities, sharp, blurred)
    assert 1.0 < search.gate <= 9.0
    assert all(v == 1.0 for v in dict(search.table)[search.gate].values())
    assert search.table[0][0] == 0.0 and search.table[-1][0] == 10.0  # always sharp / blurred
    assert search.medians == {112: 9.0, 14: 1.0}
    assert f"chosen gate q = {search.gate:.3f}" in search.markdown()


def test_gated_checkpoint_loads_into_the_gated_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = create_backbone("dlib-resnet29", embedding_size=128).eval()
    student = create_backbone("dlib-resnet29", embedding_size=128).eval()
    start = Checkpoint("dlib-resnet29", {"embedding_size": 128}, student.state_dict(),
                       {"step": 5, "head_name": "arcface+distill", "optimizer": {}})
    path = gated_checkpoint(teacher, student, 3.5, start).save(tmp_path / "gated.pt")
    loaded = Checkpoint.load(path)
    assert loaded.backbone_kwargs["gate"] == 3.5 and loaded.get("step") == 5
    assert "optimizer" not in loaded.training
    gated = loaded.build_backbone().eval()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        expected = torch.nn.functional.normalize(teacher(x), dim=1)  # random pixels are sharp
        torch.testing.assert_close(gated(x), expected)
