"""Thresholds per quality band (training/calibration.py) and the realised rates of the
service's rule (training/eval/decisions.py) on synthetic embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from models.artifact import GateBranch, GateInfo, ModelMetadata
from models.decision import DecisionRule
from training.calibration import (
    CellHistograms,
    DegradedSet,
    _model_gate,
    band_edges,
    calibrate_quality,
    count_pairs,
)
from training.eval.decisions import realised_rates


def _synthetic(people: int, per_person: int, seed: int, *, name: str = "synthetic",
               labelled: bool = True) -> DegradedSet:
    """Two "sides": sharp (q = 8) and blurred (q = 1). Blurring pulls every embedding
    towards one common direction, so impostor similarities rise, as they do for faces."""
    rng = np.random.default_rng(seed)
    dim = 64
    centres = rng.normal(size=(people, dim))
    ids = np.repeat(np.arange(people), per_person)
    sharp = centres[ids] + 0.6 * rng.normal(size=(len(ids), dim))
    common = np.ones(dim) * 1.5
    blurred = 0.5 * sharp + common + 0.4 * rng.normal(size=(len(ids), dim))
    blocks = np.stack([blurred, sharp])
    blocks /= np.linalg.norm(blocks, axis=2, keepdims=True)
    quality = np.stack([np.full(len(ids), 1.0), np.full(len(ids), 8.0)])
    quality += rng.uniform(-0.2, 0.2, size=quality.shape)
    return DegradedSet(
        embeddings=blocks.astype(np.float32), quality=quality,
        identities=ids.astype(str) if labelled else None, name=name,
    )


def _rule(data: DegradedSet, extra: tuple[DegradedSet, ...] = (), floor: float = 0.05
          ) -> DecisionRule:
    calibration = calibrate_quality(data, extra, edges=(4.0,), tar_floor=floor)
    metadata = ModelMetadata(name="m", version="1", embedding_size=64, backbone="x",
                             quality_calibration=calibration)
    return DecisionRule(metadata, fallback_threshold=0.5)


def test_histogram_threshold_keeps_the_far() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(-1, 1, 200_000)
    histograms = CellHistograms(edges=(5.0,))
    q = np.full(scores.shape, 9.0)
    histograms.add(scores, q, q, np.zeros(scores.shape, bool), np.ones(scores.shape, bool))
    cell = 1 * histograms.bands + 1
    for far in (1e-2, 1e-3):
        t = histograms.threshold(cell, far)
        assert t is not None
        accepted = np.mean(scores >= t)
        assert accepted <= far
        assert accepted >= far * 0.8  # and not needlessly strict (bins of 1e-4)
    assert histograms.threshold(cell, 1e-5) is None  # 2 false accepts allowed: too few
    assert histograms.threshold(0, 1e-2) is None  # an empty cell


def test_count_pairs_counts_every_pair_of_images_at_every_pair_of_sides() -> None:
    data = _synthetic(people=5, per_person=3, seed=1)
    histograms = CellHistograms(edges=(4.0,))
    count_pairs(histograms, data, chunk=4)  # chunks smaller than the set
    sides, n = data.quality.shape
    genuine_pairs = 5 * 3  # 3 pairs of 3 images, per person
    impostor_pairs = n * (n - 1) // 2 - genuine_pairs
    # a == b: unordered pairs once; a != b: both orders -> sides^2 copies in all
    assert histograms.genuine.sum() == sides**2 * genuine_pairs
    assert histograms.impostor.sum() == sides**2 * impostor_pairs
    # blurred-blurred pairs sit in cell (0, 0), mixed in (0, 1), sharp in (1, 1)
    per_cell = histograms.impostor.sum(axis=1).reshape(2, 2)
    assert per_cell[0, 0] == per_cell[1, 1] == impostor_pairs
    assert per_cell[0, 1] == 2 * impostor_pairs and per_cell[1, 0] == 0


def test_band_edges_sit_between_the_sides_and_take_the_gate() -> None:
    quality = np.array([[1.0, 1.2], [2.0, 2.2], [8.0, 8.0]])
    edges = band_edges(quality, (7, 14, 112), band_sides=(7, 14, 112))
    assert edges == pytest.approx((np.sqrt(1.1 * 2.1), np.sqrt(2.1 * 8.0)), abs=1e-4)
    assert band_edges(quality, (7, 14, 112), band_sides=(7, 14, 112), gate=4.5)[1] == 4.5
    with pytest.raises(ValueError, match="not measured"):
        band_edges(quality, (7, 14, 112), band_sides=(7, 28))


def test_the_gate_of_a_gated_model_comes_from_its_metadata() -> None:
    plain = ModelMetadata(name="m", version="1", embedding_size=8, backbone="b")
    branch = GateBranch(name="n", source="s")
    gate = GateInfo(threshold=4.5, sharp=branch, blurred=branch, chosen_on="toy pairs")
    assert _model_gate(plain) is None
    assert _model_gate(plain.model_copy(update={"gate": gate})) == 4.5


def test_blurred_bands_get_higher_thresholds_and_hold_the_far_on_new_data() -> None:
    calibration_set = _synthetic(people=60, per_person=4, seed=2)
    rule = _rule(calibration_set)
    table = {(c.low, c.high): c.thresholds["1e-2"] for c in rule.calibration.cells}
    assert table[(0, 0)] > table[(1, 1)]  # impostors look alike when blurred
    # a fresh draw of other people: the rule realises about the FAR it was calibrated at
    fresh = _synthetic(people=60, per_person=4, seed=3)
    ids = fresh.identities
    same = ids[:, None] == ids[None, :]
    left, right = np.nonzero(np.triu(same, 1))
    for a, b, same_side in ((0, 0, True), (1, 0, False), (1, 1, True)):
        rates = realised_rates(
            rule, fars=("1e-2",), embeddings_a=fresh.embeddings[a], quality_a=fresh.quality[a],
            embeddings_b=fresh.embeddings[b], quality_b=fresh.quality[b], identities=ids,
            genuine_left=left, genuine_right=right, same_side=same_side,
        )["1e-2"]
        assert rates["far"] <= 0.02, (a, b, rates)
        assert rates["tar"] > 0.1, (a, b, rates)  # and still accepts genuine pairs


def test_a_tar_floor_makes_poor_cells_undecidable() -> None:
    data = _synthetic(people=60, per_person=4, seed=4)
    rule = _rule(data, floor=0.99)  # nothing reaches 99 % at FAR 1e-2
    n = len(data.identities)
    left, right = np.arange(0, n, 4), np.arange(1, n, 4)  # same person (4 images each)
    rates = realised_rates(
        rule, fars=("1e-2",), embeddings_a=data.embeddings[0], quality_a=data.quality[0],
        embeddings_b=data.embeddings[0], quality_b=data.quality[0],
        identities=data.identities, genuine_left=left, genuine_right=right, same_side=True,
    )["1e-2"]
    assert rates["undecidable_genuine"] == 1.0 and rates["tar"] == 0.0
    assert rates["far"] == 0.0 and rates["undecidable_impostors"] == 1.0


def test_extra_impostors_can_only_raise_a_threshold() -> None:
    labelled = _synthetic(people=40, per_person=4, seed=5)
    # strangers who all look alike (one shared direction): their impostors score high
    strangers = _synthetic(people=160, per_person=1, seed=6, name="strangers", labelled=False)
    strangers.embeddings[:] = strangers.embeddings + 2.0 / np.sqrt(64)
    strangers.embeddings /= np.linalg.norm(strangers.embeddings, axis=2, keepdims=True)
    alone = {(c.low, c.high): c for c in _rule(labelled).calibration.cells}
    both = {(c.low, c.high): c for c in _rule(labelled, (strangers,)).calibration.cells}
    for key, cell in both.items():
        assert cell.thresholds["1e-2"] >= alone[key].thresholds["1e-2"]
        assert cell.impostors > alone[key].impostors
        assert cell.genuine == alone[key].genuine
    assert any(both[k].thresholds["1e-2"] > alone[k].thresholds["1e-2"] for k in both)


def test_the_smallest_faces_sharing_a_cell_get_their_own_strictness() -> None:
    # q cannot tell the two sides apart (both ~1), but side 0's impostors look alike
    data = _synthetic(people=60, per_person=4, seed=7)
    data.quality[:] = 1.0
    ids = data.identities
    same = ids[:, None] == ids[None, :]
    left, right = np.nonzero(np.triu(same, 1))

    def far_at_side_0(min_share: float) -> float:
        calibration = calibrate_quality(data, edges=(4.0,), min_share=min_share)
        rule = DecisionRule(
            ModelMetadata(name="m", version="1", embedding_size=64, backbone="x",
                          quality_calibration=calibration), fallback_threshold=0.5)
        return realised_rates(
            rule, fars=("1e-2",), embeddings_a=data.embeddings[0], quality_a=data.quality[0],
            embeddings_b=data.embeddings[0], quality_b=data.quality[0], identities=ids,
            genuine_left=left, genuine_right=right, same_side=True,
        )["1e-2"]["far"]

    assert far_at_side_0(min_share=1.01) > 0.02  # the cell's average lets them through
    assert far_at_side_0(min_share=0.1) <= 0.01  # their own threshold holds the FAR


def test_pairs_are_scored_against_the_query_vectors_when_there_are_some() -> None:
    from models.comparison import queries, stored_vectors

    data = _synthetic(people=4, per_person=3, seed=2)
    # as a pair-space model's data: blurred faces [0, z, z], sharp ones [g, 0, z]
    sides, n, _ = data.embeddings.shape
    z, g = data.embeddings[0], data.embeddings[1]
    stored = np.stack([stored_vectors(g, z, np.zeros(n, bool)),
                       stored_vectors(g, z, np.ones(n, bool))])
    paired = DegradedSet(embeddings=stored, quality=data.quality,
                         identities=data.identities, name="pair",
                         queries=np.stack([queries(block, "pair-space") for block in stored]))
    assert DegradedSet(stored, data.quality, None, "x").compared_with is stored  # cosine
    scores: dict[str, list[np.ndarray]] = {}
    for name, dataset in (("pair", paired), ("stored . stored", DegradedSet(
            stored, data.quality, data.identities, "plain"))):
        histograms = CellHistograms(edges=(4.0,), bins=20_000)
        count_pairs(histograms, dataset)
        scores[name] = [histograms.impostor, histograms.genuine]
    # the rule: sharp-sharp pairs by g, every other pair by z
    rule = CellHistograms(edges=(4.0,), bins=20_000)
    for a in range(sides):
        for b in range(a, sides):
            both_sharp = a == b == 1
            left, right = (g, g) if both_sharp else (z, z)
            s = left @ right.T
            cols, rows = np.arange(n)[None, :], np.arange(n)[:, None]
            valid = cols > rows if a == b else cols != rows
            same = data.identities[:, None] == data.identities[None, :]
            qa = np.broadcast_to(data.quality[a][:, None], s.shape)
            qb = np.broadcast_to(data.quality[b][None, :], s.shape)
            rule.add(s, qa, qb, valid & same, valid & ~same)
    np.testing.assert_array_equal(scores["pair"][0], rule.impostor)
    np.testing.assert_array_equal(scores["pair"][1], rule.genuine)
    assert not np.array_equal(scores["stored . stored"][0], rule.impostor)


def test_embed_degraded_keeps_a_pair_space_models_query_vectors(tmp_path) -> None:
    from models.backbones.gated import QualityGated
    from models.comparison import queries
    from models.export import export_onnx
    from models.quantize import write_pair_space
    from tests.models.conftest import TINY_GATE, make_tiny_backbone
    from training.calibration import embed_degraded
    from training.eval.embedding import OnnxModel

    source, pair = tmp_path / "gated.onnx", tmp_path / "pair.onnx"
    export_onnx(QualityGated(make_tiny_backbone(seed=0), make_tiny_backbone(seed=1),
                             gate=TINY_GATE.threshold), source, name="g", version="0",
                backbone_name="ir-tiny", gate=TINY_GATE)
    faces = np.random.default_rng(0).integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    write_pair_space(source, pair, faces)
    data = embed_degraded(OnnxModel(pair), faces, sides=(112, 7), identities=None,
                          name="noise", progress=False)
    assert data.queries is not None and data.embeddings.shape == (2, 6, 48)
    for side in range(2):
        np.testing.assert_array_equal(data.queries[side],
                                      queries(data.embeddings[side], "pair-space"))
    # noise is sharp at 112 px: its query vectors are not its stored ones
    assert not np.array_equal(data.queries[0], data.embeddings[0])
    cosine = embed_degraded(OnnxModel(source), faces, sides=(112,), identities=None,
                            name="noise", progress=False)
    assert cosine.queries is None and cosine.compared_with is cosine.embeddings
