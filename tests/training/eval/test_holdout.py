"""training.eval.holdout: DevTrain people set aside, in the files the LFW protocols read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrfr.cli import app
from tests.support.training import fake_lfw
from training.data.sources import LFWPeopleSource
from training.eval.datasets import load_lfw, load_lfw_identification, parse_people_file
from training.eval.holdout import HoldoutSplit, split_people, write_split

PEOPLE = 20


def _people_file(root: Path) -> Path:
    """A one-fold list like peopleDevTrain.txt: the fake LFW's people (4 images each) and
    ten one-image people."""
    fake_lfw(root, people=PEOPLE, per_person=4)
    names = sorted(p.name for p in (root / "images").iterdir())
    entries = [f"{name}\t4" for name in names]
    entries += [f"Single_{i}\t1" for i in range(10)]
    for i in range(10):
        (root / "images" / f"Single_{i}").mkdir()
        shutil.copy(root / "images" / names[i] / f"{names[i]}_0001.jpg",
                    root / "images" / f"Single_{i}" / f"Single_{i}_0001.jpg")
    path = root / "peopleDevTrain.txt"
    path.write_text("\n".join([str(len(entries)), *entries]) + "\n")
    return path


def test_split_is_disjoint_complete_seeded_and_keeps_the_mix(tmp_path: Path) -> None:
    path = _people_file(tmp_path)
    split = split_people(path, fraction=0.25, seed=3)
    training = {name for name, _ in split.training}
    heldout = {name for name, _ in split.heldout}
    assert not training & heldout
    assert len(training | heldout) == PEOPLE + 10
    # a quarter of each group: 5 of the 20 several-image people, 2 (2.5 rounded) of 10
    assert sum(n >= 2 for _, n in split.heldout) == 5
    assert sum(n == 1 for _, n in split.heldout) == 2
    assert split_people(path, fraction=0.25, seed=3) == split
    assert split_people(path, fraction=0.25, seed=4) != split
    with pytest.raises(ValueError, match="fraction"):
        split_people(path, fraction=1.0)


def test_pairs_are_distinct_and_only_of_heldout_people(tmp_path: Path) -> None:
    split = split_people(_people_file(tmp_path), fraction=0.25, seed=0)
    counts = dict(split.heldout)
    matched, mismatched = split.pairs(20, seed=1)
    assert len(set(matched)) == len(set(mismatched)) == 20
    for name, i, j in matched:
        assert name in counts and 1 <= i < j <= counts[name]
    for a, i, b, j in mismatched:
        assert a != b and a in counts and b in counts
        assert 1 <= i <= counts[a] and 1 <= j <= counts[b]
    with pytest.raises(ValueError, match="30 matched and"):
        split.pairs(31)  # 5 people x C(4, 2) = 30
    two = HoldoutSplit(training=[], heldout=[("A", 4), ("B", 1)])
    with pytest.raises(ValueError, match="6 matched and 4 mismatched"):
        two.pairs(5)  # only 4 x 1 pairs across the two people: refused, not an endless draw
    assert len(two.pairs(4)[1]) == 4


def test_written_files_feed_training_pairs_and_identification(tmp_path: Path) -> None:
    path = _people_file(tmp_path)
    split = split_people(path, fraction=0.25, seed=0)
    out = tmp_path / "holdout"
    write_split(split, out, pairs=12, seed=0)

    folds = parse_people_file(out / "people.txt")
    assert folds == [split.training, split.heldout]
    heldout_names = {name for name, _ in split.heldout}
    several = {name for name, n in split.training if n >= 2}
    source = LFWPeopleSource(tmp_path, str(out / "people.txt"), folds=[0], min_images=2)
    assert set(source.class_names) == several and not set(source.class_names) & heldout_names

    pairs = load_lfw(tmp_path, 1, pairs_file=str(out / "pairs-heldout.txt"))
    assert pairs.name == "lfw-pairs-heldout" and pairs.pairs == 24 and pairs.labels.sum() == 12
    assert pairs.identities is not None and set(pairs.identities) <= heldout_names

    ident = load_lfw_identification(tmp_path, people_file=str(out / "people-heldout.txt"))
    assert {Path(p).parent.name for p in ident.images} <= heldout_names


def test_eval_cli_reads_the_heldout_pairs_and_people(tmp_path: Path, pixel_model: Path) -> None:
    split = split_people(_people_file(tmp_path), fraction=0.25, seed=0)
    out = tmp_path / "holdout"
    write_split(split, out, pairs=12, seed=0)
    result = CliRunner().invoke(app, [
        "eval", "lfw", "--model", str(pixel_model), "--data", str(tmp_path),
        "--out", str(tmp_path / "eval"), "--pairs-file", str(out / "pairs-heldout.txt"),
        "--identification", "--people-file", str(out / "people-heldout.txt"),
        "--resolutions", "112", "--no-progress",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["protocol"] == "lfw-pairs-heldout" and results["pairs"] == 24
    assert results["identification"]["protocol"] == "lfw-ident-people-heldout"
