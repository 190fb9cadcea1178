"""models.embedder.OnnxEmbedder's session options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.embedder import OnnxEmbedder


@pytest.mark.parametrize(("spin", "entry"), [(False, "0"), (True, "1")])
def test_spinning_threads_can_be_turned_off(tiny_artifact: Path, spin: bool, entry: str) -> None:
    embedder = OnnxEmbedder(tiny_artifact, threads=2, spin=spin)
    options = embedder.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    assert embedder.embed_pixels(np.zeros((2, 112, 112, 3), dtype=np.uint8)).shape == (2, 16)


def test_onnx_runtime_decides_by_default(tiny_artifact: Path) -> None:
    options = OnnxEmbedder(tiny_artifact).session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        options.get_session_config_entry("session.intra_op.allow_spinning")
