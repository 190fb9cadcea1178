"""Loaders on tiny fixtures generated in the official layouts, and LFW on the real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.eval.datasets import (
    DatasetLayoutError,
    load_identity_folder,
    load_lfw,
    load_scface,
    load_survface,
    load_tinyface,
    parse_lfw_pairs,
)

scipy_io = pytest.importorskip("scipy.io")



def test_survface_loader_reads_mat_pairs(tmp_path: Path, identity_image, layouts) -> None:
    root = layouts.survface(tmp_path, identity_image)
    protocol = load_survface(root)
    assert protocol.name == "survface"
    assert protocol.pairs == 12 and protocol.labels.sum() == 6
    assert protocol.fars == (0.3, 0.1, 0.01, 0.001)
    assert len(protocol.images) == 12  # each image named once
    first = protocol.images[protocol.left[0]], protocol.images[protocol.right[0]]
    assert [p.name for p in first] == ["1_cam1_1.jpg", "1_cam1_2.jpg"]
    for fold in np.unique(protocol.folds):  # folds interleave both classes
        members = protocol.labels[protocol.folds == fold]
        assert members.any() and (~members).any()
    # pointing at the test-set folder itself works too
    assert load_survface(root / "Face_Verification_Test_Set").pairs == 12


def test_survface_loader_reports_missing_images(tmp_path: Path, identity_image, layouts) -> None:
    root = layouts.survface(tmp_path, identity_image)
    next((root / "Face_Verification_Test_Set" / "verification_images").glob("*.jpg")).unlink()
    with pytest.raises(DatasetLayoutError, match="missing"):
        load_survface(root)
    with pytest.raises(DatasetLayoutError, match=r"positive_pairs_names\.mat"):
        load_survface(tmp_path / "nowhere")


def test_scface_loader_groups_probes_by_distance(tmp_path: Path, identity_image, layouts) -> None:
    protocol = load_scface(layouts.scface(tmp_path, identity_image))
    assert len(protocol.gallery) == 4
    assert sorted(protocol.gallery_labels.tolist()) == [1, 2, 3, 4]
    assert len(protocol.probes) == 4 * 3 * 5  # cameras 1-5 only, duplicate counted once
    assert protocol.groups == ["d1", "d2", "d3"]
    assert np.sum(protocol.probe_groups == "d1") == 20
    names = {protocol.images[i].name for i in protocol.probes}
    assert not any("_cam6_" in n for n in names)


def test_scface_loader_needs_both_kinds(tmp_path: Path, identity_image, layouts) -> None:
    identity_image(1, 0).save(tmp_path / "001_frontal.jpg")
    with pytest.raises(DatasetLayoutError, match="surveillance"):
        load_scface(tmp_path)


@pytest.mark.parametrize("with_mat", [False, True])
def test_tinyface_loader(tmp_path: Path, identity_image, layouts, with_mat: bool) -> None:
    protocol = load_tinyface(layouts.tinyface(tmp_path, identity_image, with_mat=with_mat))
    assert protocol.ranks == (1, 5, 20)
    assert len(protocol.probes) == 10
    assert len(protocol.gallery) == 15 + 7
    assert sorted(set(protocol.probe_labels.tolist())) == [1, 2, 3, 4, 5]
    distractor_labels = protocol.gallery_labels[protocol.gallery_labels < 0]
    assert distractor_labels.size == 7 and np.unique(distractor_labels).size == 7
    for i, label in zip(protocol.probes, protocol.probe_labels, strict=True):
        assert protocol.images[i].name.startswith(f"{label}_")


def test_tinyface_mat_labels_win_over_file_names(tmp_path: Path, identity_image, layouts) -> None:
    root = layouts.tinyface(tmp_path, identity_image, with_mat=True)
    test_set = root / "tinyface" / "Testing_Set"
    content = scipy_io.loadmat(test_set / "probe_img_ID_pairs.mat")
    content["probe_ids"] = content["probe_ids"] + 100
    scipy_io.savemat(test_set / "probe_img_ID_pairs.mat",
                     {k: v for k, v in content.items() if not k.startswith("__")})
    protocol = load_tinyface(test_set)
    assert protocol.probe_labels.min() == 101


def test_identity_folder_split(tmp_path: Path, identity_image, layouts) -> None:
    protocol = load_identity_folder(layouts.identity_folder(tmp_path, identity_image), 2)
    assert len(protocol.gallery) == 2 + 2 + 1 + 2
    assert len(protocol.probes) == 2 + 1 + 3
    probe_names = sorted(protocol.images[i].name for i in protocol.probes)
    assert probe_names == ["02.png", "02.png", "02.png", "03.png", "03.png", "04.png"]
    assert protocol.by_identity
    with pytest.raises(DatasetLayoutError, match="no probes"):
        load_identity_folder(tmp_path, 10)


def test_identification_subset_keeps_mates_and_some_distractors(
    tmp_path: Path, identity_image, layouts
) -> None:
    protocol = load_tinyface(layouts.tinyface(tmp_path, identity_image, with_mat=False))
    small = protocol.subset(2)
    assert sorted(set(small.probe_labels.tolist())) == [1, 2]
    assert set(small.gallery_labels[small.gallery_labels > 0].tolist()) == {1, 2}
    assert np.sum(small.gallery_labels < 0) == 2
    assert len(small.images) == len(small.probes) + len(small.gallery)


def test_parse_lfw_pairs_small_file(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("2\t1\nA\t1\t2\nA\t1\tB\t3\nC\t2\t4\nC\t1\tD\t1\n")
    pairs, labels, folds = parse_lfw_pairs(path)
    assert pairs == [("A", 1, "A", 2), ("A", 1, "B", 3), ("C", 2, "C", 4), ("C", 1, "D", 1)]
    np.testing.assert_array_equal(labels, [True, False, True, False])
    np.testing.assert_array_equal(folds, [0, 0, 1, 1])
    path.write_text("2\t1\nA\t1\t2\n")
    with pytest.raises(DatasetLayoutError, match="header promises"):
        parse_lfw_pairs(path)


def test_lfw_view2_on_the_real_files(lfw_dir: Path) -> None:
    protocol = load_lfw(lfw_dir, view=2)
    assert protocol.name == "lfw-view2"
    assert protocol.pairs == 6000
    assert protocol.labels.sum() == 3000
    assert np.bincount(protocol.folds).tolist() == [600] * 10
    assert protocol.labels[:300].all() and not protocol.labels[300:600].any()
    left, right = protocol.images[protocol.left[0]], protocol.images[protocol.right[0]]
    assert (left.name, right.name) == ("Abel_Pacheco_0001.jpg", "Abel_Pacheco_0004.jpg")
    assert len(protocol.images) < 2 * protocol.pairs  # shared images are named once


def test_lfw_view1_on_the_real_files(lfw_dir: Path) -> None:
    protocol = load_lfw(lfw_dir, view=1)
    assert protocol.name == "lfw-view1"
    assert protocol.pairs == 1000 and protocol.labels.sum() == 500
    assert len(np.unique(protocol.folds)) == 10
    subset = protocol.subset(100)
    assert subset.pairs == 100 and subset.labels.sum() == 50
    assert np.bincount(subset.folds).tolist() == [10] * 10


def test_lfw_devtrain_pairs_for_calibration(lfw_dir: Path) -> None:
    protocol = load_lfw(lfw_dir, view=1, pairs_file="pairsDevTrain.txt")
    assert protocol.name == "lfw-pairsDevTrain"
    assert protocol.pairs == 2200 and protocol.labels.sum() == 1100
    assert len(np.unique(protocol.folds)) == 10
    devtest = {p.parent.name for p in load_lfw(lfw_dir, view=1).images}
    assert not devtest & {p.parent.name for p in protocol.images}  # identity-disjoint
    with pytest.raises(DatasetLayoutError, match="not found"):
        load_lfw(lfw_dir, view=1, pairs_file="pairsNope.txt")
