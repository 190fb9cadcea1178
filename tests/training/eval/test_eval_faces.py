"""Evaluation through the service's face path (``--faces detect`` / ``box``): detection
failures count as errors, box crops are degraded before they are mapped onto the
template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.eval.embedding import load_model
from training.eval.protocols import PairProtocol
from training.eval.runner import EvalSettings, evaluate, load_face_set
from training.faces import FaceLoader

BUNDLED = Path(__file__).resolve().parents[3] / "models" / "bundled" / "lrfr.onnx"


@pytest.fixture(scope="module")
def photos(lfw_face_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight LFW photos and, last, a grey picture with no face."""
    blank = tmp_path_factory.mktemp("blank") / "blank.png"
    Image.new("RGB", (250, 250), (128, 128, 128)).save(blank)
    return [*lfw_face_paths[:8], blank]


def _protocol(photos: list[Path]) -> PairProtocol:
    # photo i with itself flipped is a genuine pair; i with i + 1 an impostor pair;
    # the blank picture (index 8) takes part in one pair of each kind
    left = np.array([0, 1, 2, 8, 0, 1, 2, 8])
    right = np.array([0, 1, 2, 8, 1, 2, 3, 4])
    labels = np.array([True, True, True, True, False, False, False, False])
    return PairProtocol(
        name="t", images=photos, left=left, right=right, labels=labels,
        folds=np.arange(8) % 2, identities=tuple(str(i) for i in range(len(photos))),
    )


@pytest.mark.parametrize("mode", ["detect", "box"])
def test_a_face_less_image_is_a_reported_failure(photos: list[Path], mode: str) -> None:
    loaded = load_face_set(photos, FaceLoader(mode), progress=False)  # type: ignore[arg-type]
    assert loaded.failed.tolist() == [False] * 8 + [True]
    assert loaded.crops[:8].std() > 10 and not loaded.crops[8].any()
    if mode == "box":
        assert loaded.boxes is not None
        for box in loaded.boxes[:8]:  # the face's box: roughly square, ~100 px in LFW
            assert 60 < box.shape[1] < 180 and 0.7 < box.shape[0] / box.shape[1] < 1.5


def test_failed_pairs_are_errors_at_any_threshold(photos: list[Path]) -> None:
    model = load_model(BUNDLED, threads=1)
    run = evaluate(model, _protocol(photos), FaceLoader("detect"),
                   EvalSettings(resolutions=(112,), progress=False, workers=1))
    summary = run.results["resolutions"]["112"]
    assert run.results["detection_failures"] == 1
    assert summary["failed_pairs"] == 2
    # the six good pairs are easy (a photo with itself vs two people); the two failed
    # ones are wrong whatever the threshold: 6 of 8 at best
    assert summary["accuracy"] <= 6 / 8 + 1e-9


def test_box_mode_degrades_the_box_then_maps_it(photos: list[Path]) -> None:
    model = load_model(BUNDLED, threads=1)
    loader = FaceLoader("box")
    run = evaluate(model, _protocol(photos[:8] + photos[:1]), loader,
                   EvalSettings(resolutions=(112, 14), progress=False, workers=1))
    assert run.results["settings"]["face_mode"] == "box"
    assert run.results["detection_failures"] == 0
    sharp, small = (run.results["resolutions"][k] for k in ("112", "14"))
    assert sharp["accuracy"] == 1.0
    assert small["accuracy"] >= 0.5
