"""The decision rule: is a pair of faces the same person, at a target false-accept rate?

One implementation, used by the service (``/v1/verify``, ``/v1/identify``) and by
evaluation (``lrfr eval`` reports the FAR and TAR that this rule realises), so what is
measured is what is served.

Impostor similarities rise as faces shrink, so a single threshold calibrated on sharp
faces accepts strangers at 14 px. An artifact with a
:class:`~models.artifact.QualityCalibration` therefore carries a threshold per cell of
(band of the lower Laplacian q of the two faces, band of the higher q), measured at each
FAR on training-side pairs. A pair falls in one cell and is decided with its threshold:

* ``match`` when the cosine similarity is >= the threshold,
* ``no_match`` when it is below,
* ``undecidable`` when the model's calibrated TAR at that FAR in that cell is under the
  calibration's ``tar_floor`` (the faces are too poor for an answer better than a coin
  that says "no" almost always), or when the cell's impostors were too few to measure
  that FAR.

Artifacts without a quality calibration decide every pair with their single threshold
at the FAR (or the configured fallback), and never answer ``undecidable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.artifact import THRESHOLD_FARS, ModelMetadata, QualityCalibration

DecisionKind = Literal["match", "no_match", "undecidable"]

#: Codes of the arrays returned by :meth:`DecisionRule.decide_many`.
NO_MATCH, MATCH, UNDECIDABLE = 0, 1, 2
_KINDS: tuple[DecisionKind, ...] = ("no_match", "match", "undecidable")


class UnknownFarError(ValueError):
    """A FAR the model was not calibrated at."""


@dataclass(frozen=True)
class Band:
    """The quality cell of a pair: band indices and their q ranges (``None`` = open)."""

    low: int
    high: int
    low_range: tuple[float | None, float | None]
    high_range: tuple[float | None, float | None]

    @property
    def label(self) -> str:
        def text(bounds: tuple[float | None, float | None]) -> str:
            lo, hi = bounds
            if lo is None:
                return f"q < {hi:.2f}"
            if hi is None:
                return f"q >= {lo:.2f}"
            return f"{lo:.2f} <= q < {hi:.2f}"

        return f"{text(self.low_range)} | {text(self.high_range)}"


@dataclass(frozen=True)
class Decision:
    """The answer for one pair.

    Attributes:
        decision: ``match``, ``no_match`` or ``undecidable``.
        threshold: the cosine threshold of the pair's cell (or the caller's own).
        far: the FAR key the threshold stands for; ``None`` for a caller's threshold or
            the uncalibrated fallback.
        band: the pair's quality cell; ``None`` without a quality calibration.
        tar: the calibrated TAR at ``threshold`` in that cell, when known.
        reason: why the pair is undecidable; ``None`` otherwise.
    """

    decision: DecisionKind
    threshold: float | None
    far: str | None
    band: Band | None
    tar: float | None
    reason: str | None = None

    @property
    def match(self) -> bool:
        return self.decision == "match"


@dataclass(frozen=True)
class Decisions:
    """Vectorised answers, one per pair: ``codes`` (NO_MATCH / MATCH / UNDECIDABLE),
    ``thresholds`` (NaN where undecidable for want of one) and the cells' calibrated
    ``tar`` (NaN where unknown)."""

    codes: np.ndarray
    thresholds: np.ndarray
    tar: np.ndarray

    @property
    def accepted(self) -> np.ndarray:
        return self.codes == MATCH

    @property
    def undecidable(self) -> np.ndarray:
        return self.codes == UNDECIDABLE

    def kind(self, i: int) -> DecisionKind:
        """The answer for pair ``i``."""
        return _KINDS[int(self.codes[i])]

    def threshold(self, i: int) -> float | None:
        """The threshold pair ``i`` was held to (None: there was none)."""
        used = float(self.thresholds[i])
        return None if np.isnan(used) else used


class DecisionRule:
    """Decides pairs with a model's calibration.

    Args:
        metadata: the served artifact's metadata.
        fallback_threshold: used at FAR 1e-3 when the artifact has no calibrated
            threshold at all (an uncalibrated model).
    """

    def __init__(self, metadata: ModelMetadata, *, fallback_threshold: float) -> None:
        self.calibration: QualityCalibration | None = metadata.quality_calibration
        self._single = dict(metadata.thresholds)
        self._fallback = fallback_threshold
        if self.calibration is not None:
            cal = self.calibration
            self._edges = np.asarray(cal.edges, dtype=np.float64)
            bands = cal.bands
            self._table = {
                far: np.full((bands, bands), np.nan) for far in THRESHOLD_FARS
            }
            self._tar = {far: np.full((bands, bands), np.nan) for far in THRESHOLD_FARS}
            for cell in cal.cells:
                for far in THRESHOLD_FARS:
                    t, tar = cell.thresholds.get(far), cell.tar.get(far)
                    self._table[far][cell.low, cell.high] = np.nan if t is None else t
                    self._tar[far][cell.low, cell.high] = np.nan if tar is None else tar

    # -- what the rule offers ----------------------------------------------------------------

    @property
    def fars(self) -> tuple[str, ...]:
        """The FAR keys at which this rule decides (calibrated somewhere)."""
        if self.calibration is not None:
            return tuple(f for f in THRESHOLD_FARS if np.isfinite(self._table[f]).any())
        calibrated = tuple(f for f in THRESHOLD_FARS if self._single.get(f) is not None)
        return calibrated or ("1e-3",)

    def check_far(self, far: str) -> str:
        """``far`` normalised to a metadata key (``0.001`` -> ``"1e-3"``).

        Raises:
            UnknownFarError: the model has no thresholds at that FAR.
        """
        try:
            value = float(far)
        except (TypeError, ValueError):
            raise UnknownFarError(f"FAR {far!r} is not a number") from None
        for key in self.fars:
            if np.isclose(float(key), value, rtol=1e-9, atol=0.0):
                return key
        raise UnknownFarError(
            f"the model is calibrated at FAR {', '.join(self.fars)}; {far} is not among them"
        )

    def band_of(self, quality: np.ndarray | float) -> np.ndarray:
        """Band index of each q (0 = poorest); needs a quality calibration."""
        if self.calibration is None:
            raise ValueError("the model has no quality calibration")
        return np.searchsorted(self._edges, np.asarray(quality, dtype=np.float64), side="right")

    def band(self, q1: float, q2: float) -> Band | None:
        """The quality cell of a pair, or ``None`` without a quality calibration."""
        if self.calibration is None:
            return None
        low, high = (int(b) for b in self.band_of(np.array([min(q1, q2), max(q1, q2)])))
        return Band(low=low, high=high, low_range=self._range(low), high_range=self._range(high))

    def _range(self, band: int) -> tuple[float | None, float | None]:
        edges = self._edges.tolist()
        return (edges[band - 1] if band > 0 else None, edges[band] if band < len(edges) else None)

    def enrollment_floor(self, far: str, *, min_tar: float = 0.5) -> float | None:
        """The lowest q worth enrolling: the lower edge of the poorest band whose pairs
        with a face of the sharpest band reach ``min_tar`` at ``far``; ``None`` without a
        quality calibration (or when band 0 already does)."""
        if self.calibration is None:
            return None
        key = self.check_far(far)
        top = self.calibration.bands - 1
        for band in range(self.calibration.bands):
            tar = self._tar[key][band, top]
            if np.isfinite(tar) and tar >= min_tar:
                return None if band == 0 else float(self._edges[band - 1])
        return float(self._edges[-1])

    # -- deciding ----------------------------------------------------------------------------

    def thresholds(self, q1: np.ndarray, q2: np.ndarray, far: str) -> tuple[np.ndarray, np.ndarray]:
        """Per pair: the threshold at ``far`` (NaN: not measurable) and the cell's TAR
        (NaN: unknown)."""
        q1 = np.asarray(q1, dtype=np.float64)
        q2 = np.asarray(q2, dtype=np.float64)
        if self.calibration is None:
            single = self._single.get(far)
            if single is None:
                single = self._fallback
            return np.full(q1.shape, float(single)), np.full(q1.shape, np.nan)
        low = self.band_of(np.minimum(q1, q2))
        high = self.band_of(np.maximum(q1, q2))
        return self._table[far][low, high], self._tar[far][low, high]

    def decide_many(
        self,
        similarities: np.ndarray,
        q1: np.ndarray,
        q2: np.ndarray,
        *,
        far: str,
        threshold: float | None = None,
        uncalibrated: np.ndarray | bool = False,
    ) -> Decisions:
        """Decides every pair (arrays of equal shape) at ``far``, or with the caller's
        ``threshold`` (then never ``undecidable``).

        ``uncalibrated`` marks pairs framed in a way the calibration never measured (a
        face mapped from a box, not aligned by landmarks): ``undecidable`` at any FAR,
        since such impostors were measured to pass at 3-30x the target FAR.
        """
        similarities = np.asarray(similarities, dtype=np.float64)
        if threshold is not None:
            used = np.full(similarities.shape, float(threshold))
            codes = np.where(similarities >= used, MATCH, NO_MATCH)
            return Decisions(codes=codes.astype(np.int8), thresholds=used,
                             tar=np.full(similarities.shape, np.nan))
        far = self.check_far(far)
        used, tar = self.thresholds(q1, q2, far)
        codes = np.where(similarities >= used, MATCH, NO_MATCH)
        if self.calibration is not None:
            poor = np.isnan(used) | (np.nan_to_num(tar, nan=0.0) < self.calibration.tar_floor)
            codes = np.where(poor | np.asarray(uncalibrated, dtype=bool), UNDECIDABLE, codes)
        return Decisions(codes=codes.astype(np.int8), thresholds=used, tar=tar)

    def decide(
        self,
        similarity: float,
        q1: float,
        q2: float,
        *,
        far: str,
        threshold: float | None = None,
        uncalibrated: bool = False,
    ) -> Decision:
        """Decides one pair; the same rule as :meth:`decide_many`, with its explanation."""
        batch = self.decide_many(
            np.array([similarity]), np.array([q1]), np.array([q2]), far=far,
            threshold=threshold, uncalibrated=uncalibrated,
        )
        kind = _KINDS[int(batch.codes[0])]
        used = float(batch.thresholds[0])
        band = self.band(q1, q2)
        if threshold is not None:
            return Decision(kind, float(threshold), None, band, None)
        key = self.check_far(far)
        tar = None if np.isnan(batch.tar[0]) else float(batch.tar[0])
        calibrated = self.calibration is not None or self._single.get(key) is not None
        reason = None
        if kind == "undecidable":
            assert band is not None and self.calibration is not None
            if uncalibrated:
                reason = (
                    "a face was located only by a box (no landmarks): the thresholds were "
                    "calibrated on faces aligned by landmarks, and box-framed faces of "
                    "different people look more alike, so no decision is given; send "
                    "the face with more context for the detector, or decide with your "
                    "own 'threshold'"
                )
            elif np.isnan(used):
                reason = (
                    f"the model is not calibrated at FAR {key} for faces of this quality "
                    f"({band.label}): too few impostor pairs were measured there"
                )
            else:
                reason = (
                    f"faces too poor to decide: at FAR {key} the model accepts only "
                    f"{100 * (tar or 0.0):.1f} % of genuine pairs of this quality "
                    f"({band.label}), under the floor of "
                    f"{100 * self.calibration.tar_floor:.0f} %"
                )
        return Decision(
            decision=kind,
            threshold=None if np.isnan(used) else used,
            far=key if calibrated else None,
            band=band,
            tar=tar,
            reason=reason,
        )
