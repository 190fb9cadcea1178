"""Training data: cross-resolution plan, P x K sampler, dataset, sources, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.quality_torch import laplacian_quality_torch
from tests.support.training import SyntheticSource, identity_face
from training.data import (
    Augment,
    CrossResolutionBatchSampler,
    FaceDataset,
    FolderSource,
    IdentityBatchSampler,
    LFWPeopleSource,
    ResolutionPolicy,
    SampleKey,
    collate,
    make_loader,
    parse_people_file,
)
from training.degrade import CameraEffects, degrade


@pytest.mark.parametrize(("fraction", "batch", "expected"), [(0.5, 16, 8), (0.25, 12, 3),
                                                             (0.0, 8, 0), (1.0, 8, 8)])
def test_sampler_degrades_the_configured_fraction_of_every_batch(
    fraction: float, batch: int, expected: int
) -> None:
    policy = ResolutionPolicy(fraction=fraction, r_min=7, r_max=112)
    sampler = CrossResolutionBatchSampler(200, batch, policy, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 200 // batch
    for keys in batches:
        sides = np.array([k.side for k in keys])
        assert (sides > 0).sum() == expected  # exactly, in every batch
        assert np.all((sides[sides > 0] >= 7) & (sides[sides > 0] < 112))
    drawn = np.concatenate([[k.side for k in keys if k.side] for keys in batches])
    if drawn.size > 50:  # r is spread over the range, not constant
        assert drawn.min() < 30 and drawn.max() > 80


def test_discrete_sides_and_one_side_per_batch() -> None:
    policy = ResolutionPolicy(fraction=1.0, sides=(7, 14, 28), same_side_per_batch=True)
    for keys in CrossResolutionBatchSampler(60, 6, policy):
        sides = {k.side for k in keys}
        assert len(sides) == 1 and sides <= {7, 14, 28}


def test_plan_is_deterministic_and_resumable() -> None:
    policy = ResolutionPolicy()
    sampler = CrossResolutionBatchSampler(100, 10, policy, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=4)
    assert list(sampler) == full[4:]
    sampler.set_epoch(3)
    assert next(iter(sampler)) != full[0]  # a new epoch, a new order


def test_ranks_see_disjoint_samples() -> None:
    policy = ResolutionPolicy()
    seen = []
    for rank in range(2):
        sampler = CrossResolutionBatchSampler(40, 5, policy, rank=rank, world_size=2)
        assert len(sampler) == 4
        seen.append({k.index for keys in sampler for k in keys})
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 40


def test_identity_sampler_gives_p_identities_times_k() -> None:
    labels = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 2, 2, 6, 3, 2])  # identity 0: 1 image
    policy = ResolutionPolicy(fraction=1.0, r_min=7, r_max=32)
    sampler = IdentityBatchSampler(labels, identities=3, images_per_identity=4, policy=policy)
    assert len(sampler) == 9 // 3  # identity 0 has no positive and is skipped
    for keys in sampler:
        batch_labels = labels[[k.index for k in keys]]
        assert len(keys) == 12
        ids, counts = np.unique(batch_labels, return_counts=True)
        assert len(ids) == 3 and set(counts) == {4} and 0 not in ids
        assert all(7 <= k.side < 32 for k in keys)


def test_dataset_applies_the_plan_and_reports_r() -> None:
    dataset = FaceDataset(SyntheticSource(), augment=None, return_hr=True)
    sharp = dataset[SampleKey(3, 0, 0)]
    low = dataset[SampleKey(3, 14, 0)]
    assert not sharp["degraded"] and sharp["side"] == 112
    assert low["degraded"] and low["side"] == 14
    assert low["image"].shape == (3, 112, 112) and low["image"].dtype == torch.uint8
    expected = degrade(identity_face(0, 3), 14)  # the evaluation's own degradation
    np.testing.assert_array_equal(low["image"].permute(1, 2, 0).numpy(), expected)
    torch.testing.assert_close(low["hr"], sharp["image"])
    q = laplacian_quality_torch(torch.stack([sharp["image"], low["image"]]).float())
    assert q[1] < 0.5 * q[0]  # the degraded copy is much blurrier


def test_dataset_adds_camera_effects_to_the_degraded_samples_only() -> None:
    camera = CameraEffects(effect_probability=1.0)
    dataset = FaceDataset(SyntheticSource(), augment=None, camera=camera)
    plain = FaceDataset(SyntheticSource(), augment=None)
    torch.testing.assert_close(dataset[SampleKey(3, 0, 7)]["image"],
                               plain[SampleKey(3, 0, 7)]["image"])  # sharp: untouched
    low = dataset[SampleKey(3, 14, 7)]["image"]
    torch.testing.assert_close(low, dataset[SampleKey(3, 14, 7)]["image"])  # seeded
    assert not torch.equal(low, plain[SampleKey(3, 14, 7)]["image"])
    assert not torch.equal(low, dataset[SampleKey(3, 14, 8)]["image"])  # another draw


def test_dataset_resizes_to_the_network_input() -> None:
    dataset = FaceDataset(SyntheticSource(), input_size=56)
    item = dataset[SampleKey(0, 20, 5)]
    assert item["image"].shape == (3, 56, 56) and item["side"] == 20


def test_loader_with_workers_matches_in_process_decoding() -> None:
    source = SyntheticSource(classes=4, per_class=4)
    augment = Augment(flip=True, crop_scale=(0.8, 1.0), colour_jitter=0.2)
    dataset = FaceDataset(source, augment=augment, input_size=32)
    policy = ResolutionPolicy(fraction=0.5, r_min=7, r_max=28)
    sampler = CrossResolutionBatchSampler(len(source), 4, policy, seed=0)
    batches = [list(make_loader(dataset, sampler, num_workers=n)) for n in (0, 2)]
    for a, b in zip(*batches, strict=True):
        for key in ("image", "label", "side", "degraded"):
            torch.testing.assert_close(a[key], b[key])
    first = batches[0][0]
    assert first["degraded"].sum() == 2
    assert torch.all(first["side"][first["degraded"]] < 28)
    assert torch.all(first["side"][~first["degraded"]] == 112)


def test_augment_is_seeded_per_sample() -> None:
    pixels = identity_face(1, 0)
    augment = Augment(flip=True, crop_scale=(0.7, 0.9), colour_jitter=0.3)
    a = augment(pixels, np.random.default_rng(5))
    b = augment(pixels, np.random.default_rng(5))
    c = augment(pixels, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert a.shape == pixels.shape and not np.array_equal(a, c)
    flipped = Augment(flip=True)(pixels, np.random.default_rng(0))
    assert np.array_equal(flipped, pixels) or np.array_equal(flipped, pixels[:, ::-1])


def test_collate_stacks_types() -> None:
    dataset = FaceDataset(SyntheticSource(), input_size=32)
    batch = collate([dataset[SampleKey(i, 10 * (i % 2), i)] for i in range(4)])
    assert batch["image"].shape == (4, 3, 32, 32)
    assert batch["label"].dtype == torch.long and batch["degraded"].dtype == torch.bool
    assert batch["degraded"].tolist() == [False, True, False, True]


def test_folder_source(identity_folder: Path) -> None:
    source = FolderSource(identity_folder)
    assert len(source) == 12 and source.num_classes == 4
    assert source.class_names[0] == "0000000"
    assert source.load(0).shape == (112, 112, 3)
    small = FolderSource(identity_folder, limit_classes=2)
    assert small.num_classes == 2 and len(small) == 6


def _fake_lfw(root: Path, people: dict[str, int]) -> None:
    for identity, (name, count) in enumerate(people.items()):
        folder = root / "images" / name
        folder.mkdir(parents=True)
        for n in range(1, count + 1):
            face = Image.fromarray(identity_face(identity, n)).resize((250, 250))
            face.save(folder / f"{name}_{n:04d}.jpg")


def test_lfw_people_lists(tmp_path: Path) -> None:
    people = {"Ann_A": 2, "Bob_B": 1, "Cid_C": 3}
    _fake_lfw(tmp_path, people)
    (tmp_path / "peopleDevTrain.txt").write_text(
        "3\n" + "".join(f"{n}\t{c}\n" for n, c in people.items())
    )
    (tmp_path / "people.txt").write_text("2\n2\nAnn_A\t2\nBob_B\t1\n1\nCid_C\t3\n")
    assert parse_people_file(tmp_path / "people.txt") == [
        [("Ann_A", 2), ("Bob_B", 1)], [("Cid_C", 3)]
    ]
    source = LFWPeopleSource(tmp_path, "peopleDevTrain.txt")
    assert len(source) == 6 and source.class_names == ["Ann_A", "Bob_B", "Cid_C"]
    assert source.load(0).shape == (112, 112, 3)
    two = LFWPeopleSource(tmp_path, "peopleDevTrain.txt", min_images=2)
    assert two.class_names == ["Ann_A", "Cid_C"] and two.labels.tolist() == [0, 0, 1, 1, 1]
    fold = LFWPeopleSource(tmp_path, "people.txt", folds=[0])
    assert fold.class_names == ["Ann_A", "Bob_B"]


def test_lfw_people_from_shared_data(shared_data_dir: Path) -> None:
    lfw = shared_data_dir / "lfw"
    source = LFWPeopleSource(lfw, "peopleDevTrain.txt", min_images=2)
    assert source.num_classes == 1184 and len(source) == 6671
    assert source.load(0).shape == (112, 112, 3)


# --------------------------------------------------------------------------- unlabelled faces


def _photo_and_crop(
    seed: int, shift: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 200x200 "photo", landmarks placing the template ``shift`` px off its centre (so
    the crop reaches past the photo), and the crop warped with black outside."""
    from models.alignment import ARCFACE_TEMPLATE_112, landmark_matrix, warp

    photo = np.asarray(Image.fromarray(identity_face(seed, 0)).resize((200, 200)))
    landmarks = ARCFACE_TEMPLATE_112 * 1.6 + np.asarray(shift)
    crop = warp(photo, landmark_matrix(landmarks))
    return photo, landmarks, crop


def _unlabelled_folder(root: Path) -> Path:
    """A faces-extra-like folder: 4 border-free 'aaf' crops, 3 'utkface' crops that reach
    past their 200x200 photo, and a manifest with their landmarks and border_frac."""
    lines = ["file,source,leye_x,leye_y,reye_x,reye_y,nose_x,nose_y,mouthl_x,mouthl_y,"
             "mouthr_x,mouthr_y,border_frac"]
    for n in range(7):
        source = "aaf" if n < 4 else "utkface"
        (root / source).mkdir(parents=True, exist_ok=True)
        if source == "aaf":
            crop, landmarks, border = identity_face(100 + n, 0), np.zeros((5, 2)), 0.0
        else:
            _, landmarks, crop = _photo_and_crop(n, (-40.0, -50.0))
            border = float((crop.max(axis=2) == 0).mean())
        Image.fromarray(crop).save(root / source / f"{n:05d}.png")
        values = ",".join(f"{v:.4f}" for v in landmarks.ravel())
        lines.append(f"{source}/{n:05d}.png,{source},{values},{border:.4f}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_repeat_border_keeps_the_photo_and_fills_the_outside() -> None:
    from models.alignment import landmark_matrix
    from training.data.sources import repeat_border

    _, landmarks, crop = _photo_and_crop(1, (-40.0, -50.0))
    outside = crop.max(axis=2) == 0
    assert 0.1 < outside.mean() < 0.6  # the crop reaches past the photo
    filled = repeat_border(crop, landmark_matrix(landmarks), (200, 200))
    assert (filled.max(axis=2) == 0).mean() < 0.01
    inner = ~outside
    inner[:3] = inner[:, :3] = False  # the clamp moves the outermost rows of the photo
    inside_rows = np.flatnonzero(inner.any(axis=1))
    far_inside = inner.copy()
    far_inside[: inside_rows.min() + 3] = False
    far_inside[:, : np.flatnonzero(inner.any(axis=0)).min() + 3] = False
    np.testing.assert_array_equal(filled[far_inside], crop[far_inside])


def test_unlabelled_source_by_manifest(tmp_path: Path) -> None:
    from training.data import UnlabelledSource
    from training.data.sources import UNLABELLED

    root = _unlabelled_folder(tmp_path / "extra")
    every = UnlabelledSource(root)
    assert len(every) == 7 and every.num_classes == 0
    assert set(every.labels.tolist()) == {UNLABELLED}
    assert every.sample_key(0) == "aaf/00000.png" and every.sample_key(6) == "utkface/00006.png"
    assert sorted(every.fill) == [4, 5, 6]  # only the crops with a border, of known photo size
    assert (every.load(5).max(axis=2) == 0).mean() < 0.01
    np.testing.assert_array_equal(every.load(0), identity_face(100, 0))
    assert len(UnlabelledSource(root, sources=["aaf"])) == 4
    assert len(UnlabelledSource(root, max_border_frac=0.05)) == 4
    assert len(UnlabelledSource(root, manifest=None)) == 7  # every image under root
    with pytest.raises(ValueError, match=r"\['utk'\] are not in .*'aaf', 'utkface'"):
        UnlabelledSource(root, sources=["utk"])
    with pytest.raises(ValueError, match="no unlabelled faces left"):
        UnlabelledSource(root, sources=["utkface"], max_border_frac=0.0)


def test_mixed_source_puts_the_unlabelled_faces_after_the_labelled(tmp_path: Path) -> None:
    from training.data import MixedSource, UnlabelledSource

    labelled = SyntheticSource(classes=3, per_class=2)
    mixed = MixedSource(labelled, UnlabelledSource(_unlabelled_folder(tmp_path / "extra")))
    assert len(mixed) == 13 and mixed.num_classes == 3
    assert mixed.labels.tolist() == [0, 0, 1, 1, 2, 2] + [-1] * 7
    assert mixed.sample_key(6) == "aaf/00000.png" and mixed.sample_key(0) == "0"
    np.testing.assert_array_equal(mixed.load(7), identity_face(101, 0))


@pytest.mark.parametrize(("fraction", "batch", "unlabelled"), [(0.5, 8, 4), (0.3, 10, 3)])
def test_mixed_sampler_holds_the_unlabelled_share_of_every_batch(
    fraction: float, batch: int, unlabelled: int
) -> None:
    from training.data import MixedBatchSampler

    policy = ResolutionPolicy(fraction=0.5, r_min=7, r_max=28)
    sampler = MixedBatchSampler(40, 11, batch, fraction, policy, seed=5)
    assert len(sampler) == 40 // (batch - unlabelled)
    stream: list[int] = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        seen_labelled: list[int] = []
        for keys in sampler:
            indices = np.array([k.index for k in keys])
            assert len(keys) == batch and (indices >= 40).sum() == unlabelled
            assert sum(k.side > 0 for k in keys) == batch // 2
            seen_labelled += indices[indices < 40].tolist()
            stream += (indices[indices >= 40] - 40).tolist()
        assert len(set(seen_labelled)) == len(seen_labelled)  # an epoch: each labelled once
    # the unlabelled faces come in passes: every one once per pass of 11
    for start in range(0, len(stream) - 10, 11):
        assert sorted(stream[start : start + 11]) == list(range(11))
    # resuming at a batch gives the same keys as running up to it
    sampler.set_epoch(1)
    whole = list(sampler)
    sampler.set_epoch(1, start_batch=2)
    assert list(sampler) == whole[2:]


def test_mixed_sampler_refuses_impossible_shares() -> None:
    from training.data import MixedBatchSampler

    policy = ResolutionPolicy()
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        MixedBatchSampler(40, 10, 8, 1.0, policy)
    with pytest.raises(ValueError, match="cannot hold"):
        MixedBatchSampler(40, 10, 2, 0.9, policy)
    with pytest.raises(ValueError, match="cannot fill"):
        MixedBatchSampler(3, 10, 8, 0.5, policy)
