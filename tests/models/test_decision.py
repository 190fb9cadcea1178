"""The decision rule (models/decision.py) on hand-made calibrations."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from models.artifact import ModelMetadata, QualityCalibration, QualityCell
from models.decision import MATCH, NO_MATCH, UNDECIDABLE, DecisionRule, UnknownFarError


def _cell(low: int, high: int, t3: float | None, tar3: float | None) -> QualityCell:
    return QualityCell(
        low=low, high=high,
        thresholds={"1e-2": None if t3 is None else t3 - 0.1, "1e-3": t3, "1e-4": None},
        tar={"1e-2": None if tar3 is None else min(1.0, tar3 + 0.1), "1e-3": tar3, "1e-4": None},
        genuine=100, impostors=100_000,
    )


#: Two edges -> three bands: q < 2 (poor), 2 <= q < 6, q >= 6 (sharp).
CALIBRATION = QualityCalibration(
    edges=(2.0, 6.0),
    cells=(
        _cell(0, 0, 0.95, 0.01),  # both poor: TAR 1 %, under the 5 % floor
        _cell(0, 1, 0.90, 0.20),
        _cell(0, 2, None, None),  # impostors too few at 1e-3
        _cell(1, 1, 0.80, 0.60),
        _cell(1, 2, 0.70, 0.80),
        _cell(2, 2, 0.50, 0.95),
    ),
    tar_floor=0.05,
    source="hand-made",
)


def _metadata(calibration: QualityCalibration | None = CALIBRATION) -> ModelMetadata:
    return ModelMetadata(
        name="m", version="1", embedding_size=4, backbone="x",
        thresholds={"1e-2": 0.3, "1e-3": 0.4, "1e-4": None},
        quality_calibration=calibration,
    )


@pytest.fixture
def rule() -> DecisionRule:
    return DecisionRule(_metadata(), fallback_threshold=0.35)


@pytest.mark.parametrize(
    ("q1", "q2", "low", "high"),
    [(1.0, 1.5, 0, 0), (1.0, 3.0, 0, 1), (7.0, 1.9, 0, 2), (2.0, 5.99, 1, 1), (6.0, 6.0, 2, 2),
     (8.0, 3.0, 1, 2)],
)
def test_band_of_a_pair_uses_the_lower_and_the_higher_q(
    rule: DecisionRule, q1: float, q2: float, low: int, high: int
) -> None:
    band = rule.band(q1, q2)
    assert band is not None
    assert (band.low, band.high) == (low, high)


def test_each_cell_decides_with_its_own_threshold(rule: DecisionRule) -> None:
    # the same similarity is a match for sharp faces and not for mid-quality ones
    assert rule.decide(0.75, 8.0, 9.0, far="1e-3").decision == "match"
    assert rule.decide(0.75, 3.0, 4.0, far="1e-3").decision == "no_match"
    sharp = rule.decide(0.75, 8.0, 9.0, far="1e-3")
    assert sharp.threshold == pytest.approx(0.50)
    assert sharp.far == "1e-3"
    assert sharp.tar == pytest.approx(0.95)
    assert sharp.reason is None
    # at FAR 1e-2 the thresholds are 0.1 lower
    assert rule.decide(0.75, 3.0, 4.0, far="1e-2").decision == "match"


def test_threshold_is_inclusive(rule: DecisionRule) -> None:
    assert rule.decide(0.5, 8.0, 9.0, far="1e-3").decision == "match"
    assert rule.decide(float(np.nextafter(0.5, 0)), 8.0, 9.0, far="1e-3").decision == "no_match"


def test_poor_pairs_are_undecidable_with_a_reason(rule: DecisionRule) -> None:
    decision = rule.decide(0.99, 1.0, 1.5, far="1e-3")
    assert decision.decision == "undecidable"
    assert not decision.match
    assert decision.threshold == pytest.approx(0.95)
    assert "1.0 %" in (decision.reason or "") and "floor" in (decision.reason or "")
    # the same cell at FAR 1e-2 has TAR 11 %: decidable
    assert rule.decide(0.99, 1.0, 1.5, far="1e-2").decision == "match"


def test_uncalibrated_cell_is_undecidable(rule: DecisionRule) -> None:
    decision = rule.decide(0.99, 1.0, 9.0, far="1e-3")
    assert decision.decision == "undecidable"
    assert decision.threshold is None
    assert "too few impostor" in (decision.reason or "")


def test_callers_threshold_overrides_bands_and_is_never_undecidable(rule: DecisionRule) -> None:
    decision = rule.decide(0.2, 1.0, 1.5, far="1e-3", threshold=0.1)
    assert decision.decision == "match"
    assert decision.far is None
    assert decision.threshold == pytest.approx(0.1)
    assert decision.band is not None


@pytest.mark.parametrize("calibrated", [True, False])
@pytest.mark.parametrize("threshold", [None, 0.6])
def test_decide_many_matches_decide(
    rule: DecisionRule, calibrated: bool, threshold: float | None
) -> None:
    """The vectorised rule (the service decides every candidate with it) gives each pair
    the answer and threshold of the one-pair rule."""
    if not calibrated:
        rule = DecisionRule(_metadata(None), fallback_threshold=0.35)
    rng = np.random.default_rng(0)
    sims = rng.uniform(0.3, 1.0, 400)
    q1, q2 = rng.uniform(0.5, 10, 400), rng.uniform(0.5, 10, 400)
    box = rng.uniform(size=400) < 0.1
    batch = rule.decide_many(sims, q1, q2, far="1e-3", threshold=threshold, uncalibrated=box)
    names = {NO_MATCH: "no_match", MATCH: "match", UNDECIDABLE: "undecidable"}
    expected = [
        rule.decide(s, a, b, far="1e-3", threshold=threshold, uncalibrated=bool(u))
        for s, a, b, u in zip(sims, q1, q2, box, strict=True)
    ]
    assert [names[int(c)] for c in batch.codes] == [d.decision for d in expected]
    assert [batch.kind(i) for i in range(400)] == [d.decision for d in expected]
    assert [batch.threshold(i) for i in range(400)] == [d.threshold for d in expected]
    wanted = {"match", "no_match", "undecidable"} if calibrated and threshold is None else {
        "match", "no_match"}
    assert {d.decision for d in expected} == wanted


def test_far_keys_are_normalised_and_unknown_ones_refused(rule: DecisionRule) -> None:
    assert rule.check_far("0.001") == "1e-3"
    assert rule.check_far("1e-2") == "1e-2"
    assert rule.fars == ("1e-2", "1e-3")
    with pytest.raises(UnknownFarError, match="1e-2, 1e-3"):
        rule.check_far("1e-4")  # no cell has a 1e-4 threshold
    with pytest.raises(UnknownFarError, match="not a number"):
        rule.check_far("often")


def test_without_quality_calibration_the_single_threshold_decides() -> None:
    rule = DecisionRule(_metadata(None), fallback_threshold=0.35)
    decision = rule.decide(0.41, 1.0, 1.0, far="1e-3")
    assert (decision.decision, decision.threshold, decision.far) == ("match", 0.4, "1e-3")
    assert decision.band is None
    assert rule.decide(0.39, 9.0, 9.0, far="1e-3").decision == "no_match"
    assert rule.fars == ("1e-2", "1e-3")


def test_uncalibrated_model_uses_the_fallback() -> None:
    metadata = ModelMetadata(name="m", version="1", embedding_size=4, backbone="x")
    rule = DecisionRule(metadata, fallback_threshold=0.35)
    decision = rule.decide(0.36, 1.0, 1.0, far="1e-3")
    assert (decision.decision, decision.threshold, decision.far) == ("match", 0.35, None)


def test_calibration_must_cover_every_cell() -> None:
    with pytest.raises(ValidationError, match="one cell per"):
        QualityCalibration(edges=(2.0, 6.0), cells=CALIBRATION.cells[:-1], tar_floor=0.05,
                           source="x")
    with pytest.raises(ValidationError, match="ascending"):
        QualityCalibration(edges=(6.0, 2.0), cells=CALIBRATION.cells, tar_floor=0.05,
                           source="x")


def test_calibration_round_trips_through_metadata_json() -> None:
    metadata = _metadata()
    again = ModelMetadata.model_validate_json(metadata.model_dump_json())
    assert again.quality_calibration == CALIBRATION


def test_enrollment_floor_is_the_poorest_band_good_enough_against_sharp_faces(
    rule: DecisionRule,
) -> None:
    # against band 2: band 0 uncalibrated, band 1 TAR 80 %, band 2 TAR 95 %
    assert rule.enrollment_floor("1e-3") == pytest.approx(2.0)
    assert rule.enrollment_floor("1e-3", min_tar=0.9) == pytest.approx(6.0)
    assert rule.enrollment_floor("1e-3", min_tar=0.99) == pytest.approx(6.0)  # the sharpest
    uncalibrated = DecisionRule(_metadata(None), fallback_threshold=0.35)
    assert uncalibrated.enrollment_floor("1e-3") is None


def test_box_framed_pairs_are_undecidable_unless_the_caller_sets_a_threshold(
    rule: DecisionRule,
) -> None:
    decision = rule.decide(0.99, 8.0, 9.0, far="1e-3", uncalibrated=True)
    assert decision.decision == "undecidable"
    assert "box" in (decision.reason or "")
    assert rule.decide(0.99, 8.0, 9.0, far="1e-3", threshold=0.5,
                       uncalibrated=True).decision == "match"
    codes = rule.decide_many(np.array([0.99, 0.99]), np.array([8.0, 8.0]),
                             np.array([9.0, 9.0]), far="1e-3",
                             uncalibrated=np.array([True, False])).codes
    assert codes.tolist() == [UNDECIDABLE, MATCH]
