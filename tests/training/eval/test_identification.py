"""Identification beside the LFW pairs: metrics on hand-made score matrices, the
:class:`OpenSetProtocol` scoring, the DevTest loader and ``lrfr eval lfw --identification``
on a tiny LFW-shaped folder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lrfr.cli import app
from tests.support.training import fake_lfw, identity_face
from training.eval.datasets import DatasetLayoutError, load_lfw, load_lfw_identification
from training.eval.embedding import load_model
from training.eval.metrics import (
    cmc,
    fnir_at,
    fpir_at,
    open_set_at_fpir,
    search,
    search_scores,
)
from training.eval.protocols import OpenSetProtocol, score_open_set
from training.eval.report import csv_rows, headline_rows, markdown_table
from training.eval.runner import EvalSettings, evaluate
from training.faces import FaceLoader

# ----------------------------------------------------------------- metrics, by hand

#: 5 probes x 4 gallery people (labels 10..13); probe labels below.
SCORES = np.array([
    [0.90, 0.20, 0.10, 0.00],  # 10: mate first (0.90)
    [0.60, 0.50, 0.40, 0.30],  # 11: mate 0.50 behind 10's 0.60 -> rank 2
    [0.30, 0.30, 0.30, 0.10],  # 12: tied with two others -> rank 3 (pessimistic)
    [0.10, 0.20, 0.30, 0.40],  # 10: mate last -> rank 4
    [0.20, 0.10, 0.00, 0.80],  # 13: mate first (0.80)
])
PROBE_LABELS = np.array([10, 11, 12, 10, 13])
GALLERY_LABELS = np.array([10, 11, 12, 13])


def test_search_scores_ranks_with_pessimistic_ties() -> None:
    result = search_scores(SCORES, PROBE_LABELS, GALLERY_LABELS)
    np.testing.assert_array_equal(result.mate_rank, [1, 2, 3, 4, 1])
    np.testing.assert_array_equal(result.top_label_correct, [True, False, False, False, True])
    np.testing.assert_allclose(result.mate_score, [0.9, 0.5, 0.3, 0.1, 0.8])
    np.testing.assert_allclose(result.top_score, [0.9, 0.6, 0.3, 0.4, 0.8])
    assert cmc(result, (1, 2, 3, 5)) == {1: 0.4, 2: 0.6, 3: 0.8, 5: 1.0}


def test_search_on_embeddings_equals_search_on_their_scores() -> None:
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(30, 8)).astype(np.float32)
    probes = rng.normal(size=(50, 8)).astype(np.float32)
    labels_g, labels_p = np.arange(30) // 2, rng.integers(0, 20, 50)
    chunked = search(probes, labels_p, gallery, labels_g, chunk=7)
    whole = search_scores(probes @ gallery.T, labels_p, labels_g)
    for key in ("mate_rank", "top_label_correct"):
        np.testing.assert_array_equal(getattr(chunked, key), getattr(whole, key))
    np.testing.assert_allclose(chunked.top_score, whole.top_score, rtol=1e-6)


def test_search_scores_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="do not match"):
        search_scores(SCORES, PROBE_LABELS[:4], GALLERY_LABELS)


def test_fpir_fnir_and_the_threshold_at_a_target_fpir() -> None:
    mated = search_scores(SCORES, PROBE_LABELS, GALLERY_LABELS)
    # best gallery score of each of 4 non-mated searches
    nonmated_top = np.array([0.85, 0.70, 0.55, 0.20])
    assert fpir_at(nonmated_top, 0.70) == 0.5  # 0.85 and 0.70 are >= 0.70
    assert fpir_at(nonmated_top, 0.90) == 0.0
    # hits at t: rank 1 and score >= t -> probes 0 (0.90) and 4 (0.80)
    assert fnir_at(mated, 0.5) == pytest.approx(0.6)
    assert fnir_at(mated, 0.85) == pytest.approx(0.8)  # only 0.90 left
    assert fnir_at(mated, 0.95) == 1.0
    # FPIR 0.25 allows one false positive: t just above 0.70
    point = open_set_at_fpir(mated, nonmated_top, 0.25)
    assert point["fpir"] == 0.25 and point["threshold"] == np.nextafter(0.70, 1.0)
    assert point["fnir"] == pytest.approx(0.6)
    # FPIR 0.5: t just above 0.55 -> two false positives, the same two hits
    loose = open_set_at_fpir(mated, nonmated_top, 0.5)
    assert loose["fpir"] == 0.5 and loose["fnir"] == pytest.approx(0.6)
    # a tied non-mated score: t above the tie, so FPIR stays under the target
    tied = open_set_at_fpir(mated, np.array([0.85, 0.85, 0.55, 0.20]), 0.25)
    assert tied["fpir"] == 0.0 and tied["fnir"] == pytest.approx(0.8)  # only 0.90 >= t
    # 4 non-mated searches cannot measure 0.2 or 1e-2
    assert open_set_at_fpir(mated, nonmated_top, 0.2)["fnir"] is None
    assert open_set_at_fpir(mated, nonmated_top, 1e-2) == {
        "fnir": None, "fpir": None, "threshold": None
    }


def test_fnir_needs_mated_searches_only() -> None:
    unenrolled = search_scores(SCORES[:2], np.array([10, 99]), GALLERY_LABELS)
    with pytest.raises(ValueError, match="mated searches only"):
        fnir_at(unenrolled, 0.5)
    with pytest.raises(ValueError, match="non-mated"):
        fpir_at(np.array([]), 0.5)


# ----------------------------------------------------------------- the protocol

def _protocol(**changes: object) -> OpenSetProtocol:
    """Three people enrolled for the closed set (0, 1, 2), 0 and 2 for the open set;
    one probe each; image 6 is a person (9) never enrolled."""
    protocol = OpenSetProtocol(
        name="t", images=[Path(f"{i}.jpg") for i in range(7)],
        gallery=np.array([0, 1, 2]), gallery_labels=np.array([0, 1, 2]),
        enrolled=np.array([True, False, True]),
        probes=np.array([3, 4, 5]), probe_labels=np.array([0, 1, 2]),
        nonmated=np.array([1, 6]), nonmated_labels=np.array([1, 9]),
        fpirs=(0.5, 1e-2),
    )
    return replace(protocol, **changes)


def test_open_set_protocol_counts_and_checks() -> None:
    protocol = _protocol()
    np.testing.assert_array_equal(protocol.mated, [True, False, True])
    assert protocol.counts() == {"gallery": 3, "probes": 3, "open_set_gallery": 2,
                                 "mated_probes": 2, "nonmated_probes": 3}
    with pytest.raises(ValueError, match="enrolled person"):
        _protocol(nonmated_labels=np.array([0, 9]))
    with pytest.raises(ValueError, match="unique"):
        _protocol(gallery_labels=np.array([0, 0, 2]))


def test_score_open_set_on_unit_vectors() -> None:
    e = np.eye(4, dtype=np.float32)
    gallery = e[:3]  # person k = axis k
    probes = np.stack([e[0], 0.6 * e[1] + 0.8 * e[3], 0.8 * e[0] + 0.6 * e[2]])
    nonmated = np.stack([0.8 * e[0] + 0.6 * e[3], e[3]])
    summary = score_open_set(_protocol(), gallery, probes, nonmated)
    # closed set: probe 0 rank 1; probe 1 (0.6 on its mate) rank 1; probe 2 rank 2
    assert summary["rank1"] == pytest.approx(2 / 3) and summary["rank5"] == 1.0
    # open set (gallery: people 0 and 2): mated probes 0 (top 1.0, right) and 2 (top 0.8,
    # wrong person); non-mated tops: probe 1 -> 0.0, image 1 -> 0.0, image 6 -> 0.8.
    # FPIR 0.5 of 3 searches allows one false positive: t just above 0.0
    assert summary["threshold_at_fpir"]["0.5"] == np.nextafter(0.0, 1.0)
    assert summary["fpir"]["0.5"] == pytest.approx(1 / 3)
    assert summary["fnir_at_fpir"]["0.5"] == 0.5
    assert summary["fnir_at_fpir"]["0.01"] is None  # 3 non-mated searches: too few


def test_failed_faces_return_no_candidate() -> None:
    e = np.eye(4, dtype=np.float32)
    probes = np.stack([e[0], e[1], e[2]])
    failed = np.zeros(7, bool)
    failed[3] = True  # probe of person 0 found no face: a miss at every rank
    summary = score_open_set(_protocol(ranks=(1, 3)), e[:3], probes, e[[0, 3]], failed=failed)
    assert summary["rank1"] == pytest.approx(2 / 3)
    assert summary["rank3"] == pytest.approx(2 / 3)
    failed[2] = True  # and person 2's gallery image: it matches nothing (ranked last)
    summary = score_open_set(_protocol(ranks=(1, 3)), e[:3], probes, e[[0, 3]], failed=failed)
    assert summary["rank1"] == pytest.approx(1 / 3)
    assert summary["rank3"] == pytest.approx(2 / 3)


def test_subset_keeps_the_first_people_and_outsiders() -> None:
    small = _protocol().subset(2)
    assert small.counts() == {"gallery": 2, "probes": 2, "open_set_gallery": 1,
                              "mated_probes": 1, "nonmated_probes": 3}
    assert [p.name for p in small.images] == ["0.jpg", "1.jpg", "3.jpg", "4.jpg", "6.jpg"]


# ----------------------------------------------------------------- LFW loader / end to end

PEOPLE = 8  # Person_A .. Person_H, 4 images each
SINGLES = ("Solo_X", "Solo_Y", "Solo_Z")


@pytest.fixture(scope="module")
def tiny_lfw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake LFW folder of tests.support plus three one-image people and a
    peopleDevTest.txt naming all of them (alphabetical, as LFW's lists are)."""
    root = tmp_path_factory.mktemp("lfw")
    fake_lfw(root, people=PEOPLE, per_person=4)
    for number, name in enumerate(SINGLES):
        (root / "images" / name).mkdir()
        face = Image.fromarray(identity_face(100 + number, 1)).resize((250, 250))
        face.save(root / "images" / name / f"{name}_0001.jpg")
    people = sorted([(f"Person_{chr(65 + i)}", 4) for i in range(PEOPLE)]
                    + [(name, 1) for name in SINGLES])
    lines = [str(len(people)), *(f"{name}\t{count}" for name, count in people)]
    (root / "peopleDevTest.txt").write_text("\n".join(lines) + "\n")
    return root


def test_lfw_identification_loader(tiny_lfw: Path) -> None:
    protocol = load_lfw_identification(tiny_lfw)
    assert protocol.name == "lfw-ident-peopleDevTest"
    assert [protocol.images[i].name for i in protocol.gallery] == [
        f"Person_{chr(65 + i)}_0001.jpg" for i in range(PEOPLE)
    ]
    np.testing.assert_array_equal(protocol.enrolled, [True, False] * (PEOPLE // 2))
    # enrolled: A, C, E, G (3 probes each); non-mated: B, D, F, H (all 4) + 3 singles
    assert protocol.counts() == {"gallery": 8, "probes": 24, "open_set_gallery": 4,
                                 "mated_probes": 12, "nonmated_probes": 12 + 4 + 3}
    assert protocol.fpirs == (1e-2, 1e-3)
    (tiny_lfw / "images" / "Solo_Y" / "Solo_Y_0001.jpg").rename(tiny_lfw / "moved.jpg")
    try:
        with pytest.raises(DatasetLayoutError, match="1 LFW images missing"):
            load_lfw_identification(tiny_lfw)
    finally:
        (tiny_lfw / "moved.jpg").rename(tiny_lfw / "images" / "Solo_Y" / "Solo_Y_0001.jpg")
    with pytest.raises(DatasetLayoutError, match="people file not found"):
        load_lfw_identification(tiny_lfw, people_file="peopleNope.txt")


def test_identification_beside_pairs_embeds_each_image_once_per_side(
    tiny_lfw: Path, pixel_model: Path
) -> None:
    pairs = load_lfw(tiny_lfw, view=1)
    ident = replace(load_lfw_identification(tiny_lfw), fpirs=(0.1,))
    settings = EvalSettings(resolutions=(112, 14), cross_resolution=True, progress=False)
    run = evaluate(load_model(pixel_model), pairs, FaceLoader("lfw"), settings,
                   identification=ident)
    results = run.results
    section = results["identification"]
    assert section["protocol"] == "lfw-ident-peopleDevTest"
    assert section["images"] == 35 and section["gallery"] == 8
    assert section["mated_probes"] == 12 and section["nonmated_probes"] == 19
    assert set(section["resolutions"]) == {"112", "14"}
    assert set(section["cross_resolution"]) == {"14"}
    # the pairs use the 32 Person images: 35 distinct images, each at 112 and 14 px once
    assert results["images"] == 32 and results["images_embedded"] == 2 * 35
    for setting in ("resolutions", "cross_resolution"):
        for summary in section[setting].values():
            assert 0.0 <= summary["rank1"] <= summary["rank5"] <= 1.0
            fnir = summary["fnir_at_fpir"]["0.1"]
            assert fnir is not None and 0.0 <= fnir <= 1.0
            assert summary["fpir"]["0.1"] <= 0.1
    # the synthetic people are told apart at 112 px (pixel baseline)
    assert section["resolutions"]["112"]["rank1"] >= 0.9
    # reports: a table per setting, csv rows and compare rows
    table = markdown_table(results)
    assert "Identification (lfw-ident-peopleDevTest): closed set 8 enrolled" in table
    assert "| Resolution | Rank-1 (%) | Rank-5 (%) | FNIR@FPIR=0.1 (%) |" in table
    assert "Cross-resolution (gallery at 112 px" in table
    settings_rows = [(r["setting"], r["resolution"]) for r in csv_rows(results)]
    assert ("identification_downsampled", "14") in settings_rows
    assert ("identification_cross_resolution", "14") in settings_rows
    labels = [label for label, _ in headline_rows(results)]
    assert "LFW View 1 identification 14 px rank-1" in labels
    assert "LFW View 1 identification cross 112/14 px FNIR@FPIR=0.1" in labels


def test_lfw_identification_cli(tiny_lfw: Path, pixel_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "eval", "lfw", "--model", str(pixel_model), "--data", str(tiny_lfw), "--out", str(out),
        "--view", "1", "--resolutions", "112,28", "--identification", "--no-progress",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "lfw-view1" and results["pairs"] == 32
    section = results["identification"]
    assert set(section["resolutions"]) == {"112", "28"} and "cross_resolution" not in section
    summary = section["resolutions"]["28"]
    assert set(summary) == {"rank1", "rank5", "fnir_at_fpir", "fpir", "threshold_at_fpir"}
    assert summary["fnir_at_fpir"] == {"0.01": None, "0.001": None}  # 19 non-mated: too few
    assert "FNIR@FPIR=0.001 (%)" in result.output
    assert "Identification (lfw-ident-peopleDevTest)" in (out / "table.md").read_text()
    # without the flag: no identification, no peopleDevTest.txt needed
    (tiny_lfw / "peopleDevTest.txt").rename(tmp_path / "people.txt")
    try:
        plain = CliRunner().invoke(app, [
            "eval", "lfw", "--model", str(pixel_model), "--data", str(tiny_lfw),
            "--out", str(tmp_path / "plain"), "--view", "1", "--resolutions", "112",
            "--no-progress",
        ])
        assert plain.exit_code == 0, plain.output
        assert "identification" not in json.loads((tmp_path / "plain" / "results.json").read_text())
        missing = CliRunner().invoke(app, [
            "eval", "lfw", "--model", str(pixel_model), "--data", str(tiny_lfw),
            "--out", str(tmp_path / "missing"), "--view", "1", "--identification",
        ])
        assert missing.exit_code == 2 and "peopleDevTest.txt" in missing.output
    finally:
        (tmp_path / "people.txt").rename(tiny_lfw / "peopleDevTest.txt")
