"""``lrfr train``, ``lrfr finetune`` and ``lrfr export`` end to end on tiny files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lrfr.cli import app
from models.artifact import load_metadata
from tests.support.training import fake_lfw
from training.calibration import calibrate_embeddings, impostor_scores
from training.eval.protocols import PairProtocol

runner = CliRunner()


@pytest.fixture
def train_yaml(identity_folder: Path, tiny_config_file: Callable[..., Path]) -> Path:
    return tiny_config_file(
        "train.yaml",
        name="cli",
        data={"root": str(identity_folder)},
        crossres={"r_max": 56},
        model={"embedding_size": 16, "input_size": 112},
        head={"name": "approach2", "params": {"scale": 16.0}},
        schedule={"epochs": 2, "warmup_epochs": 0.5, "kind": "step", "milestones": [1]},
        engine={"batch_size": 6, "precision": "auto", "log_every": 1, "tensorboard": True},
    )


@pytest.mark.slow
def test_train_finetune_export_calibrate(train_yaml: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    result = runner.invoke(app, ["train", "--config", str(train_yaml)])
    assert result.exit_code == 0, result.output
    checkpoint = tmp_path / "run" / "last.pt"
    assert torch.load(checkpoint, weights_only=False)["step"] == 4  # 2 epochs x 2 steps
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))

    (tmp_path / "ft.yaml").write_text(
        "base: train.yaml\nname: cli-ft\n"
        f"finetune: {{method: octuplet, octuplet: {{identities: 2, images_per_identity: 3}}}}\n"
        f"engine: {{out_dir: {tmp_path / 'ft'}}}\noptim: {{lr: 0.001}}\n"
    )
    result = runner.invoke(
        app, ["finetune", "--config", str(tmp_path / "ft.yaml"), "--checkpoint", str(checkpoint),
              "--set", "schedule.epochs=1"]
    )
    assert result.exit_code == 0, result.output
    tuned = tmp_path / "ft" / "last.pt"
    assert torch.load(tuned, weights_only=False)["head_name"] == "approach2+octuplet"

    lfw = tmp_path / "lfw"
    fake_lfw(lfw)
    out = tmp_path / "model.onnx"
    result = runner.invoke(
        app, ["export", str(tuned), "--out", str(out), "--calibrate-on", str(lfw), "--view", "1"]
    )
    assert result.exit_code == 0, result.output
    metadata = load_metadata(out)  # also checks the ONNX file's SHA-256
    assert metadata.head == "approach2+octuplet" and metadata.embedding_size == 16
    assert metadata.version == "step-2"
    # 32 images, 8 people: 448 impostor pairs measure FAR 1e-2, not 1e-3
    assert metadata.thresholds["1e-2"] is not None
    assert metadata.thresholds["1e-3"] is None and metadata.thresholds["1e-4"] is None
    calibration = metadata.extra["calibration"]
    assert calibration["impostor_pairs"] == 448 and calibration["genuine_pairs"] == 16
    assert json.loads(out.with_suffix(".json").read_text())["thresholds"]["1e-2"] is not None

    # another pairs file of the LFW folder (the model card calibrates on pairsDevTrain)
    (lfw / "pairsDevTrain.txt").write_text((lfw / "pairsDevTest.txt").read_text())
    result = runner.invoke(
        app, ["export", str(tuned), "--out", str(out), "--calibrate-on", str(lfw),
              "--pairs-file", "pairsDevTrain.txt"]
    )
    assert result.exit_code == 0, result.output
    assert "lfw-pairsDevTrain" in load_metadata(out).extra["calibration"]["source"]


def test_config_errors_exit_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("engine: {batch_sise: 4}\n")
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2
    assert "batch_sise" in result.output and "batch_size" in result.output
    result = runner.invoke(app, ["finetune", "--config", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2


def test_train_refuses_a_finetune_config(tmp_path: Path) -> None:
    (tmp_path / "ft.yaml").write_text("finetune: {method: derivenet}\n")
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "ft.yaml")])
    assert result.exit_code == 2 and "lrfr finetune" in result.output


def test_calibration_thresholds_meet_the_far() -> None:
    rng = np.random.default_rng(0)
    identities = np.repeat(np.arange(60), 3)
    centres = rng.normal(size=(60, 8))
    embeddings = centres[identities] + 0.3 * rng.normal(size=(180, 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    protocol = PairProtocol(
        name="toy", images=[Path(f"{i}.jpg") for i in range(180)],
        left=np.arange(0, 180, 3), right=np.arange(1, 180, 3),
        labels=np.ones(60, dtype=bool), folds=np.arange(60) % 10,
    )
    calibration = calibrate_embeddings(embeddings, protocol, identities)
    negatives = impostor_scores(embeddings, identities)
    assert calibration.impostors == negatives.size == 180 * 179 // 2 - 60 * 3
    for far in ("1e-2", "1e-3", "1e-4"):
        threshold = calibration.thresholds[far]
        assert threshold is not None
        assert np.mean(negatives >= threshold) <= float(far)
    assert calibration.thresholds["1e-2"] <= calibration.thresholds["1e-4"]
    assert calibration.tar["1e-2"] > 0.5  # separable toy identities


def test_calibration_scores_pairs_by_the_query_vectors_when_given() -> None:
    from models.comparison import queries, stored_vectors

    rng = np.random.default_rng(1)
    identities = np.repeat(np.arange(40), 3)
    # each person's faces near their own centre in both spaces: genuine pairs score high
    g, z = (rng.normal(size=(40, 8))[identities] + 0.5 * rng.normal(size=(120, 8))
            for _ in range(2))
    g, z = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (g, z))
    sharp = np.arange(120) % 2 == 0
    stored = stored_vectors(g, z, sharp)
    protocol = PairProtocol(
        name="toy", images=[Path(f"{i}.jpg") for i in range(120)],
        left=np.arange(0, 120, 3), right=np.arange(1, 120, 3),
        labels=np.ones(40, dtype=bool), folds=np.arange(40) % 10,
    )
    rule = np.where(sharp[:, None] & sharp[None, :], g @ g.T, z @ z.T)
    upper = np.triu(np.ones((120, 120), dtype=bool), k=1)
    expected = rule[upper & (identities[:, None] != identities[None, :])]
    negatives = impostor_scores(stored, identities, queries=queries(stored, "pair-space"))
    np.testing.assert_allclose(np.sort(negatives), np.sort(expected), atol=1e-6)
    calibration = calibrate_embeddings(stored, protocol, identities,
                                       queries=queries(stored, "pair-space"))
    genuine = rule[protocol.left, protocol.right]
    threshold = calibration.thresholds["1e-2"]
    assert threshold is not None
    assert calibration.tar["1e-2"] == pytest.approx(float(np.mean(genuine >= threshold)))
    assert calibration.tar["1e-2"] > 0.5  # separable toy identities
    assert np.mean(negatives >= threshold) <= 1e-2
    # scored stored . stored instead, sharp pairs would add the students' cosine to dlib's
    plain = calibrate_embeddings(stored, protocol, identities)
    assert plain.thresholds["1e-2"] != pytest.approx(threshold, abs=1e-3)


def test_a_run_resumes_from_its_committed_slim_checkpoint(
    train_yaml: Path, tmp_path: Path
) -> None:
    """The documented restart (docs/training.md): stop by time or steps, write the slim
    fp16 checkpoint, lose the run folder, continue with ``--resume``."""
    torch.set_num_threads(1)
    first = runner.invoke(app, ["train", "--config", str(train_yaml), "--set", "engine.max_steps=2",
                                "--set", "schedule.epochs=3"])
    assert first.exit_code == 0, first.output
    slim = tmp_path / "committed" / "resume.pt"
    made = runner.invoke(app, ["slim-checkpoint", str(tmp_path / "run" / "last.pt"), str(slim)])
    assert made.exit_code == 0 and "step 2" in made.output, made.output
    saved = torch.load(slim, weights_only=False)
    assert saved["slim"] and "optimizer" not in saved and "rng" not in saved
    assert all(v.dtype != torch.float32 for v in saved["backbone_state"].values())
    full = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    for key, value in full["backbone_state"].items():
        if value.dtype == torch.float32:
            torch.testing.assert_close(saved["backbone_state"][key].float(), value,
                                       rtol=1e-3, atol=1e-3)

    import shutil

    shutil.rmtree(tmp_path / "run")  # the machine was not kept
    again = runner.invoke(app, ["train", "--config", str(train_yaml), "--resume", str(slim),
                                "--set", "schedule.epochs=3"])
    assert again.exit_code == 0, again.output
    resumed = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert resumed["step"] == 6 and not resumed.get("slim")  # 3 epochs x 2 steps
    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 4, 5, 6]
    bad = runner.invoke(app, ["slim-checkpoint", str(tmp_path / "missing.pt"), str(slim)])
    assert bad.exit_code == 2 and "missing.pt" in bad.output
