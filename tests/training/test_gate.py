"""The gate search (training/gate.py): accuracies through training.eval.metrics, the
winning gate, the gated checkpoint the gated backbone loads, and the gate record it
keeps, which the export writes into the artifact's metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifact import GateInfo, load_metadata
from models.backbones import create_backbone
from models.checkpoint import Checkpoint
from models.export import export_checkpoint
from training.eval.metrics import accuracy_at, best_threshold
from training.eval.protocols import PairProtocol
from training.gate import (
    SHARP_BRANCH,
    choose_gate,
    gated_accuracies,
    gated_checkpoint,
    search_description,
    student_branch,
)

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


@pytest.fixture(scope="module")
def gated_pt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A gated checkpoint of two random dlib networks, gate 3.5; and its teacher."""
    torch.manual_seed(0)
    teacher = create_backbone("dlib-resnet29", embedding_size=128).eval()
    student = create_backbone("dlib-resnet29", embedding_size=128).eval()
    start = Checkpoint("dlib-resnet29", {"embedding_size": 128}, student.state_dict(), {
        "step": 5, "epoch": 1, "head_name": "arcface+distill", "optimizer": {},
        "config": {"name": "toy-student", "model": {"init_weights": "dlib"}},
    })
    gated = gated_checkpoint(teacher, student, 3.5, start, chosen_on=search_description(
        40, (112, 14)), recipe="training/configs/toy.yaml")
    return gated.save(tmp_path_factory.mktemp("gate") / "gated.pt"), teacher


def test_gated_checkpoint_records_the_gate(gated_pt: tuple[Path, torch.nn.Module]) -> None:
    loaded = Checkpoint.load(gated_pt[0])
    gate = GateInfo.model_validate(loaded.get("gate"))
    assert gate.threshold == loaded.backbone_kwargs["gate"] == 3.5
    assert gate.sharp == SHARP_BRANCH and "public domain" in gate.sharp.source
    assert gate.blurred.name == "dlib-resnet29 student of dlib_face_recognition_resnet_model_v1"
    assert gate.blurred.source == ("fine-tuned by training/configs/toy.yaml (started from dlib "
                                   "weights), step 5, epoch 1")
    assert gate.blurred.head == "arcface+distill"
    assert gate.chosen_on.startswith("40 LFW pairsDevTrain pairs at r = 112, 14: ")
    assert loaded.get("head_name") == "gated(sharp: released weights | blurred: arcface+distill)"


def test_without_a_recipe_the_run_is_named(gated_pt: tuple[Path, torch.nn.Module]) -> None:
    state = Checkpoint.load(gated_pt[0])  # keeps the student's config, step and epoch
    branch = student_branch(Checkpoint("dlib-resnet29", {}, {}, state.training))
    assert branch.source.startswith("fine-tuned by training run 'toy-student'")


def test_gated_checkpoint_loads_into_the_gated_backbone(
    gated_pt: tuple[Path, torch.nn.Module],
) -> None:
    path, teacher = gated_pt
    loaded = Checkpoint.load(path)
    assert loaded.get("step") == 5
    assert "optimizer" not in loaded.training
    gated = loaded.build_backbone().eval()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        expected = torch.nn.functional.normalize(teacher(x), dim=1)  # random pixels are sharp
        torch.testing.assert_close(gated(x), expected)


@pytest.mark.slow
def test_the_export_writes_the_gate_into_the_metadata(
    gated_pt: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    recorded = GateInfo.model_validate(Checkpoint.load(gated_pt[0]).get("gate"))
    meta = export_checkpoint(gated_pt[0], tmp_path / "gated.onnx", name="g", version="1")
    assert meta.gate == recorded == load_metadata(tmp_path / "gated.onnx").gate
    assert meta.head == "gated(sharp: released weights | blurred: arcface+distill)"


def test_a_fine_tuned_student_names_its_starting_checkpoint() -> None:
    state = Checkpoint("dlib-resnet29", {}, {}, {
        "step": 222, "epoch": 3, "head_name": "approach2+distill+octuplet",
        "config": {"model": {"init_weights": "dlib"},
                   "finetune": {"checkpoint": "runs/student-1.0.0.pt"}},
    })
    branch = student_branch(state, "training/configs/x.yaml")
    assert branch.source == ("fine-tuned by training/configs/x.yaml (started from the "
                             "checkpoint runs/student-1.0.0.pt), step 222, epoch 3")
    described = search_description(1000, (112, 7), "/abs/runs/holdout/pairs-heldout.txt")
    assert described.startswith("1000 LFW pairs-heldout pairs at r = 112, 7: ")


def test_gate_cli_takes_a_threshold_only_with_where_it_was_chosen(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lrfr.cli import app

    result = CliRunner().invoke(app, ["gate", "--student", str(tmp_path / "s.pt"), "--out",
                                      str(tmp_path / "g.pt"), "--threshold", "4.5"])
    assert result.exit_code != 0 and "--chosen-on" in result.output
