"""The training checkpoint format: save/load round trip, key checks, the backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.backbones import create_backbone
from models.checkpoint import BACKBONE_KEYS, Checkpoint, CheckpointError

KWARGS = {"embedding_size": 16}


def _checkpoint(seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    net = create_backbone("ir-tiny", **KWARGS)
    return Checkpoint("ir-tiny", dict(KWARGS), net.state_dict(), {"step": 7, "head_name": "x"})


def test_save_load_round_trip(tmp_path: Path) -> None:
    original = _checkpoint()
    path = original.save(tmp_path / "run" / "last.pt")
    assert path.is_file() and not path.with_suffix(".tmp").exists()
    loaded = Checkpoint.load(path)
    assert (loaded.backbone_name, loaded.backbone_kwargs) == ("ir-tiny", KWARGS)
    assert loaded.get("step") == 7 and loaded.get("missing", 3) == 3
    assert list(torch.load(path, weights_only=False))[:3] == list(BACKBONE_KEYS)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    a, b = _checkpoint().build_backbone().eval(), loaded.build_backbone().eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_missing_keys_are_named(tmp_path: Path) -> None:
    state = _checkpoint().to_dict()
    del state["backbone_kwargs"]
    with pytest.raises(CheckpointError, match=r"lacks \['backbone_kwargs'\]; it needs"):
        Checkpoint.from_dict(state)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, expected a dict"):
        Checkpoint.load(tmp_path / "list.pt")


def test_weights_that_do_not_fit_are_explained() -> None:
    wrong = Checkpoint("ir-tiny", {"embedding_size": 32}, _checkpoint().backbone_state)
    with pytest.raises(CheckpointError, match="do not fit ir-tiny"):
        wrong.build_backbone()
