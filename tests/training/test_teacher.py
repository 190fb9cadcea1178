"""Distillation from the dlib teacher: the loss, the descriptor cache, the face box, the
objective inside the engine (with a fake cache), the CLI. dlib-dependent tests skip
when the ``train-teacher`` extra is not installed (CI does not install it)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.support.training import SyntheticSource, fake_lfw
from training.config import ConfigError, TrainConfig, config_from_dict
from training.data import FaceDataset, LFWPeopleSource, SampleKey, collate
from training.engine import train
from training.objectives import distillation_loss
from training.teacher import (
    TEACHER_DIM,
    TEACHER_NAME,
    TeacherCache,
    build_cache,
    face_rectangle,
    lookup_table,
)

HAS_DLIB = (
    importlib.util.find_spec("dlib") is not None
    and importlib.util.find_spec("face_recognition_models") is not None
)
needs_dlib = pytest.mark.skipif(
    not HAS_DLIB, reason="dlib / face-recognition-models not installed (extra train-teacher)"
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- the loss


def test_distillation_loss_on_hand_made_vectors() -> None:
    projected = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    teacher = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])  # cos 1, 0, -1
    everyone = torch.tensor([True, True, True])
    loss, per_sample = distillation_loss(projected, teacher, everyone)
    assert torch.allclose(per_sample, torch.tensor([0.0, 1.0, 2.0]), atol=1e-6)
    assert loss.item() == pytest.approx(1.0, abs=1e-6)
    loss, _ = distillation_loss(projected, teacher, torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx(0.5, abs=1e-6)  # the masked sample does not count
    loss, _ = distillation_loss(projected, teacher, torch.tensor([False, False, True]))
    assert loss.item() == pytest.approx(2.0, abs=1e-6)
    nobody = torch.zeros(3, dtype=torch.bool)
    projected.requires_grad_(True)
    loss, _ = distillation_loss(projected, teacher, nobody)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(projected.grad == 0)


# --------------------------------------------------------------------------- the cache


def test_cache_round_trip_and_lookup(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    descriptors = rng.normal(size=(3, TEACHER_DIM)).astype(np.float32)
    keys = ["images/A/A_0001.jpg", "images/A/A_0002.jpg", "images/B/B_0001.jpg"]
    TeacherCache(keys=keys, descriptors=descriptors).save(tmp_path / "cache.npz")
    cache = TeacherCache.load(tmp_path / "cache.npz")
    assert cache.keys == keys and cache.teacher == TEACHER_NAME and cache.face_mode == "lfw"
    np.testing.assert_array_equal(cache.descriptors, descriptors)

    table, found = lookup_table(cache, ["images/B/B_0001.jpg", "images/C/C_0001.jpg", keys[0]])
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(table[0], descriptors[2])
    assert not table[1].any()
    with pytest.raises(ValueError, match="not 'another'"):
        TeacherCache.load(tmp_path / "cache.npz", teacher="another")
    with pytest.raises(FileNotFoundError, match="teacher-cache"):
        TeacherCache.load(tmp_path / "missing.npz")


def test_build_cache_reuses_what_is_there(tmp_path: Path) -> None:
    root = tmp_path / "data"
    paths = [root / "images" / name / f"{name}_0001.jpg" for name in ("A", "B", "C")]
    calls: list[str] = []

    def describe(path: Path) -> np.ndarray:
        calls.append(path.parent.name)
        if path.parent.name == "C":
            raise OSError("unreadable")  # left out, not fatal
        return np.full(TEACHER_DIM, ord(path.parent.name), dtype=np.float32)

    out = tmp_path / "cache.npz"
    first = build_cache(paths[:2], root, out, describe=describe, progress=False)
    assert first.keys == ["images/A/A_0001.jpg", "images/B/B_0001.jpg"] and calls == ["A", "B"]
    second = build_cache(paths, root, out, describe=describe, progress=False)
    assert calls == ["A", "B", "C"]  # only the new image was described
    assert len(second) == 2 and TeacherCache.load(out).descriptors[1, 0] == ord("B")
    with pytest.raises(ValueError, match="face mode"):
        build_cache(paths, root, out, describe=describe, face_mode="aligned", progress=False)


def test_face_rectangle_matches_dlibs_detector_on_lfw() -> None:
    # dlib's HOG detector on 299 random LFW images: mean box (76, 84, 179, 187)
    box = face_rectangle(250, 250, "lfw")
    assert np.abs(np.subtract(box, (76, 84, 179, 187))).max() <= 2
    half = face_rectangle(125, 125, "lfw")  # scales with the image
    assert np.abs(np.subtract(half, np.divide(box, 2))).max() <= 1
    assert face_rectangle(112, 112, "aligned")[2] <= 112
    with pytest.raises(ValueError, match="face mode"):
        face_rectangle(112, 112, "landmarks")


def test_missing_dlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from training.teacher import DlibTeacher

    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError
    with pytest.raises(ImportError, match="train-teacher"):
        DlibTeacher()


# --------------------------------------------------------------------------- data, config


def test_dataset_yields_the_sample_index_and_sources_their_keys(tmp_path: Path) -> None:
    fake_lfw(tmp_path, people=3, per_person=2)
    (tmp_path / "peopleDevTrain.txt").write_text("3\nPerson_A\t2\nPerson_B\t2\nPerson_C\t2\n")
    source = LFWPeopleSource(tmp_path, "peopleDevTrain.txt")
    assert source.sample_key(3) == "images/Person_B/Person_B_0002.jpg"
    batch = collate([FaceDataset(source)[SampleKey(i, 0, i)] for i in (5, 1)])
    assert batch["index"].tolist() == [5, 1] and batch["index"].dtype == torch.long


def test_distill_config_is_typed() -> None:
    config = config_from_dict({"distill": {"cache": "c.npz", "weight": 2}})
    assert config.distill is not None and config.distill.weight == 2.0
    assert config_from_dict({}).distill is None
    with pytest.raises(ConfigError, match="valid keys"):
        config_from_dict({"distill": {"cache": "c.npz", "wieght": 1.0}})
    with pytest.raises(ConfigError, match=r"distill\.weight"):
        config_from_dict({"distill": {"cache": "c.npz", "weight": -1.0}})
    with pytest.raises(ConfigError, match=r"distill\.cache"):
        config_from_dict({"distill": {"weight": 1.0}})


# --------------------------------------------------------------------------- training


def _fake_cache(path: Path, source: SyntheticSource, skip: int) -> None:
    """One random teacher direction per identity; every ``skip``-th sample left out."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(source.num_classes, TEACHER_DIM)).astype(np.float32)
    keep = [i for i in range(len(source)) if i % skip]
    TeacherCache(
        keys=[source.sample_key(i) for i in keep],
        descriptors=centres[source.labels[keep]] * 1.4,
    ).save(path)


def test_distillation_trains_projection_and_backbone(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    source = SyntheticSource()
    _fake_cache(tmp_path / "cache.npz", source, skip=7)

    def run(max_steps: int) -> dict:
        config = tiny_config(
            head={"name": "arcface", "params": {"scale": 16.0}},
            distill={"cache": str(tmp_path / "cache.npz"), "weight": 2.0},
            engine={"max_steps": max_steps, "log_every": 1, "resume": "auto"},
        )
        train(config, source=source)
        return torch.load(tmp_path / "run" / "last.pt", weights_only=False)

    start = run(1)
    end = run(16)  # resumes from step 1: the projection is loaded from the checkpoint
    assert start["head_name"] == "arcface+distill"
    assert "weight" in end["head_state"]  # the class centres keep their key
    moved = end["head_state"]["distill.projection.weight"]
    assert moved.shape == (TEACHER_DIM, 32)
    assert not torch.allclose(start["head_state"]["distill.projection.weight"], moved)
    assert any(
        not torch.allclose(start["backbone_state"][k].float(), v.float())
        for k, v in end["backbone_state"].items()
    )
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    losses = [r["train/distill_loss"] for r in records]
    assert len(losses) == 16 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    assert all(0.5 < r["train/distill_coverage"] <= 1.0 for r in records)  # 1 in 7 masked
    assert {"train/distill_cos_hr", "train/distill_cos_lr", "train/base_loss"} <= set(records[0])


def test_distillation_refuses_a_cache_without_the_training_images(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    TeacherCache(keys=["elsewhere.jpg"], descriptors=np.ones((1, TEACHER_DIM))).save(
        tmp_path / "cache.npz"
    )
    config = tiny_config(distill={"cache": str(tmp_path / "cache.npz")})
    with pytest.raises(ValueError, match="no descriptor"):
        train(config, source=SyntheticSource())


# --------------------------------------------------------------------------- dlib


@needs_dlib
def test_teacher_cache_cli_with_dlib(tmp_path: Path) -> None:
    from lrfr.cli import app

    fake_lfw(tmp_path, people=2, per_person=2)
    (tmp_path / "peopleDevTrain.txt").write_text("2\nPerson_A\t2\nPerson_B\t2\n")
    out = tmp_path / "cache.npz"
    result = CliRunner().invoke(
        app, ["teacher-cache", "--data", str(tmp_path), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    cache = TeacherCache.load(out)
    assert cache.keys[0] == "images/Person_A/Person_A_0001.jpg" and len(cache) == 4
    norms = np.linalg.norm(cache.descriptors, axis=1)
    assert np.all(np.isfinite(cache.descriptors)) and np.all(norms > 0.1)
    again = CliRunner().invoke(
        app, ["teacher-cache", "--data", str(tmp_path), "--out", str(out), "--no-progress"]
    )
    assert again.exit_code == 0 and "0 new" in again.output


# --------------------------------------------------------------------------- student of the teacher


def test_identity_projection_and_centres_from_the_teacher(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    from training.objectives import build_distillation, create_objective

    source = SyntheticSource(classes=4, per_class=3)
    _fake_cache(tmp_path / "cache.npz", source, skip=5)
    config = tiny_config(
        model={"embedding_size": TEACHER_DIM},
        distill={"cache": str(tmp_path / "cache.npz"), "projection_init": "identity",
                 "init_centres": True, "base_weight": 0.0},
    )
    base = create_objective("margin", config, source.num_classes, TEACHER_DIM)
    keys = [source.sample_key(i) for i in range(len(source))]
    objective = build_distillation(base, config, source, TEACHER_DIM)
    torch.testing.assert_close(objective.projection.weight, torch.eye(TEACHER_DIM))
    cache = TeacherCache.load(tmp_path / "cache.npz")
    for label in range(source.num_classes):
        rows = [d for k, d in zip(cache.keys, cache.descriptors, strict=True)
                if source.labels[keys.index(k)] == label]
        mean = np.mean([r / np.linalg.norm(r) for r in rows], axis=0)
        np.testing.assert_allclose(base.head.weight[:, label].detach().numpy(), mean,
                                   rtol=1e-5, atol=1e-6)
    # base_weight 0: the loss is the distillation term alone
    batch = {
        "input": torch.zeros(3, 3, 32, 32), "label": torch.tensor([0, 1, 2]),
        "index": torch.tensor([0, 3, 6]), "degraded": torch.tensor([False, True, False]),
        "quality": torch.ones(3), "side": torch.full((3,), 32),
    }
    teacher = objective.table[batch["index"]]

    def student(x: torch.Tensor) -> torch.Tensor:  # outputs the teacher: zero distill loss
        return teacher + 0 * x.sum()

    loss, stats = objective(student, batch)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-5)
    assert float(stats["base_loss"]) > 0.0


def test_identity_projection_needs_the_teachers_size(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    source = SyntheticSource()
    _fake_cache(tmp_path / "cache.npz", source, skip=7)
    config = tiny_config(distill={"cache": str(tmp_path / "cache.npz"),
                                  "projection_init": "identity"})
    with pytest.raises(ConfigError, match="teacher's size 128, got 32"):
        train(config, source=source)


def test_init_weights_needs_a_backbone_with_released_weights(
    tiny_config: Callable[..., TrainConfig]
) -> None:
    config = tiny_config(model={"init_weights": "dlib"})
    with pytest.raises(ConfigError, match="no released weights"):
        train(config, source=SyntheticSource())


def test_init_weights_from_a_checkpoint_of_the_same_backbone(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    first = tiny_config(engine={"max_steps": 2, "out_dir": str(tmp_path / "one")})
    train(first, source=SyntheticSource())
    start = torch.load(tmp_path / "one" / "last.pt", weights_only=False)
    second = tiny_config(model={"init_weights": str(tmp_path / "one" / "last.pt")},
                         engine={"max_steps": 1, "out_dir": str(tmp_path / "two"),
                                 "resume": "none"}, optim={"lr": 1e-9, "weight_decay": 0.0})
    train(second, source=SyntheticSource())
    end = torch.load(tmp_path / "two" / "last.pt", weights_only=False)
    assert end["step"] == 1
    for key, value in start["backbone_state"].items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(end["backbone_state"][key], value, msg=key)
    other = tiny_config(
        model={"backbone": "ir18", "init_weights": str(tmp_path / "one" / "last.pt")}
    )
    with pytest.raises(ConfigError, match="holds a 'ir-tiny'"):
        train(other, source=SyntheticSource())


# --------------------------------------------------------------------------- unlabelled faces


def _unlabelled_crops(root: Path, count: int = 8) -> Path:
    from tests.support.training import identity_face

    root.mkdir(parents=True)
    for n in range(count):
        Image.fromarray(identity_face(50 + n, 0)).save(root / f"{n:03d}.png")
    return root


def test_unlabelled_faces_get_the_distillation_term_only(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    """A mixed run trains, resumes with the same losses, and its unlabelled samples are
    looked up in their own cache (by path relative to their root)."""
    from training.data import MixedSource, UnlabelledSource

    labelled = SyntheticSource()
    _fake_cache(tmp_path / "cache.npz", labelled, skip=7)
    extra = _unlabelled_crops(tmp_path / "extra")
    rng = np.random.default_rng(4)
    TeacherCache(keys=[f"{n:03d}.png" for n in range(8)],
                 descriptors=rng.normal(size=(8, TEACHER_DIM))).save(tmp_path / "extra.npz")

    def run(out: str, max_steps: int) -> list[tuple[int, float]]:
        config = tiny_config(
            head={"name": "arcface", "params": {"scale": 16.0}},
            data={"kind": "folder", "root": str(tmp_path / "unused"), "num_workers": 0,
                  "unlabelled": {"root": str(extra), "manifest": None,
                                 "cache": str(tmp_path / "extra.npz"), "fraction": 0.25}},
            distill={"cache": str(tmp_path / "cache.npz"), "weight": 2.0},
            engine={"out_dir": str(tmp_path / out), "max_steps": max_steps, "log_every": 1,
                    "resume": "auto"},
        )
        source = MixedSource(labelled, UnlabelledSource(extra, manifest=None))
        return train(config, source=source, record_losses=True).losses

    straight = run("a", 6)
    resumed = run("b", 2) + run("b", 6)
    assert [s for s, _ in resumed] == list(range(1, 7))
    assert [v for _, v in resumed] == pytest.approx([v for _, v in straight], rel=1e-5)
    records = [json.loads(line)
               for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    # 3 of 12 samples unlabelled, all with descriptors; 1 in 7 labelled ones without
    coverage = np.array([r["train/distill_coverage"] for r in records])
    assert np.all(coverage >= 6 / 12) and 0.75 < coverage.mean() < 1.0
    assert all(np.isfinite(r["train/base_loss"]) for r in records)


def test_unlabelled_cache_must_cover_its_faces(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    from training.data import MixedSource, UnlabelledSource

    labelled = SyntheticSource()
    _fake_cache(tmp_path / "cache.npz", labelled, skip=7)
    extra = _unlabelled_crops(tmp_path / "extra")
    _fake_cache(tmp_path / "wrong.npz", labelled, skip=7)  # keys of the labelled faces
    config = tiny_config(
        data={"kind": "folder", "root": "x", "num_workers": 0,
              "unlabelled": {"root": str(extra), "manifest": None,
                             "cache": str(tmp_path / "wrong.npz")}},
        distill={"cache": str(tmp_path / "cache.npz")},
    )
    with pytest.raises(ValueError, match=r"no descriptor for any image of unlabelled:extra"):
        train(config, source=MixedSource(labelled, UnlabelledSource(extra, manifest=None)))


def test_unlabelled_needs_distillation(tiny_config: Callable[..., TrainConfig]) -> None:
    with pytest.raises(ConfigError, match=r"data\.unlabelled needs distill"):
        tiny_config(data={"unlabelled": {"root": "x", "cache": "y.npz"}})


def test_teacher_cache_cli_describes_unlabelled_crops_as_training_loads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lrfr.cli import app

    extra = _unlabelled_crops(tmp_path / "extra", count=3)
    seen: list[np.ndarray] = []

    class FakeTeacher:
        def __init__(self, face_mode: str) -> None:
            assert face_mode == "aligned"

        def describe(self, pixels: np.ndarray) -> np.ndarray:
            seen.append(pixels)
            return np.full(TEACHER_DIM, float(pixels.mean()), dtype=np.float32)

    monkeypatch.setattr("training.teacher.DlibTeacher", FakeTeacher)
    out = tmp_path / "extra.npz"
    args = ["teacher-cache", "--data", str(extra), "--kind", "unlabelled", "--manifest", "",
            "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cache = TeacherCache.load(out)
    assert cache.keys == ["000.png", "001.png", "002.png"] and cache.face_mode == "aligned"
    assert all(p.shape == (112, 112, 3) for p in seen)
    bad = CliRunner().invoke(app, ["teacher-cache", "--data", str(extra), "--kind", "unlabelled",
                                   "--manifest", "m.csv", "--out", str(out)])
    assert bad.exit_code == 2 and "m.csv" in bad.output


def _distilled_run(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig], weight: float, steps: int,
    name: str,
) -> tuple[SyntheticSource, dict, Any]:
    """A short distilled run on the synthetic faces (fake teacher cache): the source, the
    ``distill`` section and the run's result."""
    source = SyntheticSource()
    _fake_cache(tmp_path / "cache.npz", source, skip=7)
    distill = {"cache": str(tmp_path / "cache.npz"), "weight": weight}
    result = train(tiny_config(distill=distill, engine={"out_dir": str(tmp_path / name),
                                                        "max_steps": steps}), source=source)
    return source, distill, result


@pytest.mark.parametrize("method", ["octuplet", "derivenet"])
def test_fine_tuning_keeps_the_distillation_term_and_its_projection(
    method: str, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    from training.engine import finetune
    from training.objectives import build_objective
    from training.setup import build_backbone

    source, distill, trained = _distilled_run(tmp_path, tiny_config, 2.0, 3, "base")
    start = torch.load(trained.checkpoint, weights_only=False)
    config = tiny_config(
        distill=distill,
        engine={"out_dir": str(tmp_path / method), "max_steps": 4, "log_every": 1},
        optim={"lr": 1e-3},
        finetune={
            "checkpoint": str(trained.checkpoint), "method": method,
            "octuplet": {"identities": 3, "images_per_identity": 4, "r_min": 7, "r_max": 16},
            "derivenet": {"pyramid": [8, 16], "decoder_hidden": 16},
        },
    )
    # the projection continues the distilled run's, not distill.projection_init's
    *_, checkpoint = build_backbone(config, trained.checkpoint)
    objective = build_objective(method, config, source, 32)
    assert objective.start_from(checkpoint)
    torch.testing.assert_close(objective.projection.weight,
                               start["head_state"]["distill.projection.weight"])
    # both copies of a sample are pulled to its sharp image's descriptor: a student that
    # outputs the teacher's descriptor in the sharp half and its negative in the degraded
    # half scores cos 1 there and -1 here (projection: the first 32 teacher dimensions,
    # the teacher's descriptors made to live in them)
    objective.table = objective.table.clone()
    objective.table[:, 32:] = 0
    objective.projection.weight.data = torch.eye(TEACHER_DIM, 32)
    index = torch.tensor([1, 2, 3, 4])  # all four have a descriptor (0 is skipped)
    teacher = objective.table[index][:, :32]
    batch = {
        "input": torch.zeros(4, 3, 32, 32), "hr_input": torch.zeros(4, 3, 32, 32),
        "label": torch.tensor([0, 0, 1, 1]), "index": index,
        "degraded": torch.ones(4, dtype=torch.bool), "quality": torch.ones(4),
        "hr_quality": torch.ones(4), "side": torch.full((4,), 8),
    }

    def student(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([teacher, -teacher]) + 0 * x.sum()

    _, stats = objective(student, batch)
    assert float(stats["distill_cos_hr"]) == pytest.approx(1.0, abs=1e-5)
    assert float(stats["distill_cos_lr"]) == pytest.approx(-1.0, abs=1e-5)
    assert float(stats["distill_loss"]) == pytest.approx(1.0, abs=1e-5)
    assert float(stats["distill_coverage"]) == 1.0

    result = finetune(config, source=source, record_losses=True)
    state = torch.load(result.checkpoint, weights_only=False)
    assert state["head_name"] == f"arcface+distill+{method}" and state["method"] == method
    assert "distill.projection.weight" in state["head_state"]
    records = [json.loads(line)
               for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert all(np.isfinite(r["train/distill_loss"]) and np.isfinite(r["train/base_loss"])
               for r in records)


def test_the_teacher_triplet_is_batch_hard_against_the_teachers_descriptors(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    from training.engine import finetune
    from training.objectives import build_objective

    source, distill, trained = _distilled_run(tmp_path, tiny_config, 2.0, 2, "base")
    triplet = {"weight": 3.0, "margin": 0.3}
    config = tiny_config(
        distill={**distill, "triplet": triplet},
        engine={"out_dir": str(tmp_path / "ft"), "max_steps": 3, "log_every": 1},
        optim={"lr": 1e-3},
        finetune={"checkpoint": str(trained.checkpoint), "method": "octuplet",
                  "octuplet": {"identities": 3, "images_per_identity": 4,
                               "r_min": 7, "r_max": 16}},
    )
    objective = build_objective("octuplet", config, source, 32)
    # the teacher's descriptors made to live in the first 32 dimensions, P the identity there
    objective.table = objective.table.clone()
    objective.table[:, 32:] = 0
    objective.projection.weight.data = torch.eye(TEACHER_DIM, 32)
    # sample 0 has no descriptor (the cache skips every 7th); sample 13 is unlabelled here
    index = torch.tensor([0, 1, 2, 6, 8, 13])
    labels = torch.tensor([0, 0, 0, 1, 1, -1])
    batch = {
        "input": torch.zeros(6, 3, 32, 32), "hr_input": torch.zeros(6, 3, 32, 32),
        "label": labels, "index": index, "degraded": torch.ones(6, dtype=torch.bool),
        "quality": torch.ones(6), "hr_quality": torch.ones(6), "side": torch.full((6,), 8),
    }
    outputs = torch.randn(12, 32, generator=torch.Generator().manual_seed(0))
    _, stats = objective(lambda x: outputs + 0 * x.sum(), batch)

    # the definition, by hand: every first-pass row of a labelled sample with a
    # descriptor is an anchor; candidates: the descriptors of those samples, once each
    teacher = torch.nn.functional.normalize(objective.table[:, :32], dim=1)
    usable = [i for i in range(6) if bool(objective.found[index[i]]) and labels[i] >= 0]
    assert usable == [1, 2, 3, 4]
    terms = []
    for row in range(12):
        i = row % 6
        if i not in usable:
            continue
        anchor = torch.nn.functional.normalize(outputs[row], dim=0)
        distance = {j: float((anchor - teacher[index[j]]).norm()) for j in usable}
        positive = max(d for j, d in distance.items() if labels[j] == labels[i])
        negative = min(d for j, d in distance.items() if labels[j] != labels[i])
        terms.append(max(positive - negative + 0.3, 0.0))
    assert float(stats["triplet_loss"]) == pytest.approx(float(np.mean(terms)), abs=1e-5)

    finetune(config, source=source)
    records = [json.loads(line)
               for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(np.isfinite(r["train/triplet_loss"]) for r in records)
    with pytest.raises(ConfigError, match="margin"):
        tiny_config(distill={**distill, "triplet": {"margn": 0.3}})
    with pytest.raises(ConfigError, match=r"triplet\.margin"):
        tiny_config(distill={**distill, "triplet": {"margin": -0.1}})


# --------------------------------------------------------------------------- feature hints


def test_relative_hint_error_and_recorded_maps() -> None:
    from training.objectives.hints import recorded, relative_hint_error

    teacher = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    student = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    torch.testing.assert_close(relative_hint_error(student, teacher), torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="differ in shape"):
        relative_hint_error(student[:, :1], teacher)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    x = torch.randn(4, 2)
    with recorded(net, ["0", "2"]) as maps:
        out = net(x)
        net(x + 1)  # a second pass: the first one's maps are kept
    torch.testing.assert_close(maps["0"], net[0](x))
    torch.testing.assert_close(maps["2"], out)
    assert not net[0]._forward_hooks  # the hooks are gone with the context


def test_feature_hints_pull_the_degraded_maps_to_the_teachers_sharp_ones(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    source, distill, teacher = _distilled_run(tmp_path, tiny_config, 1.0, 2, "teacher")
    config = tiny_config(
        model={"init_weights": str(teacher.checkpoint)},
        distill={**distill, "hints": {"layers": ["body.1", "body.3"], "weight": 5.0,
                                      "teacher": str(teacher.checkpoint)}},
        crossres={"fraction": 0.5, "r_min": 6, "r_max": 10},
        engine={"out_dir": str(tmp_path / "student"), "max_steps": 12, "log_every": 1},
    )
    from training.objectives import build_objective
    from training.setup import build_backbone

    backbone, *_ = build_backbone(config, None)
    objective = build_objective("margin", config, source, 32, backbone)
    assert objective.needs_hr  # the hints' teacher sees the sharp copies
    hints = objective.hints
    assert hints is not None and hints.layers == ("body.1", "body.3")
    assert not any(p.requires_grad for p in hints.teacher.parameters())
    assert all(not name.startswith("hints") for name in objective.state_dict())

    train(config, source=source)
    records = [json.loads(line) for line in
               (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/hint_loss"] for r in records]
    assert len(losses) == 12 and all(np.isfinite(losses)) and losses[0] > 0
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    # the teacher is neither trained nor saved
    assert not any("hint" in k for k in torch.load(tmp_path / "student" / "last.pt",
                                                   weights_only=False)["head_state"])


def test_the_hint_teacher_holds_the_teachers_weights_not_the_students(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    from training.objectives.hints import hint_teacher
    from training.setup import build_backbone

    teacher = train(tiny_config(engine={"out_dir": str(tmp_path / "teacher"), "max_steps": 2}),
                    source=SyntheticSource())
    teacher_state = torch.load(teacher.checkpoint, weights_only=False)["backbone_state"]
    torch.manual_seed(7)
    student, *_ = build_backbone(tiny_config(), None)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    copy = hint_teacher(student, str(teacher.checkpoint))
    for key, value in copy.state_dict().items():
        torch.testing.assert_close(value, teacher_state[key])
    assert any(not torch.equal(v, teacher_state[k]) for k, v in before.items())
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())


def test_feature_hints_name_a_missing_layer(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    source = SyntheticSource()
    _fake_cache(tmp_path / "cache.npz", source, skip=7)
    trained = train(tiny_config(engine={"out_dir": str(tmp_path / "t"), "max_steps": 1}),
                    source=source)
    config = tiny_config(distill={"cache": str(tmp_path / "cache.npz"), "hints": {
        "layers": ["units.9"], "teacher": str(trained.checkpoint)}})
    with pytest.raises(ConfigError, match=r"distill.hints.layers: \['units.9'\] are not layers"):
        train(config, source=source)
