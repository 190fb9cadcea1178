"""Fine-tuning: the Octuplet loss against a hand computation, DeriveNet's loss updating
the backbone, and both methods end to end from a training checkpoint."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from models.backbones import create_backbone
from tests.support.training import SyntheticSource
from training.config import DeriveNetConfig, TrainConfig
from training.engine import finetune, train
from training.objectives import DeriveNetObjective, batch_hard_triplet, octuplet_loss

SQRT2 = math.sqrt(2.0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _unit(*axes: int, dim: int = 4) -> torch.Tensor:
    return torch.eye(dim)[list(axes)]


def test_octuplet_loss_matches_a_hand_computation() -> None:
    # identities [0, 0, 1, 1]; orthonormal axes make every distance 0 or sqrt(2)
    hr = _unit(0, 0, 1, 2)  # e1, e1, e2, e3
    lr = _unit(0, 1, 1, 3)  # e1, e2, e2, e4
    labels = torch.tensor([0, 0, 1, 1])
    loss, terms = octuplet_loss(hr, lr, labels, margin=0.25)
    # per image (HH + HL + LH + LL), worked out by hand in the module's notation:
    # i0: 0 + .25 + 0 + .25; i1: 0 + 0 + (s+.25) + (s+.25); i2: .25 + (s+.25) + .25 + (s+.25);
    # i3: .25 * 4  ->  mean = s + 0.75
    assert float(loss) == pytest.approx(SQRT2 + 0.75, abs=1e-5)
    assert float(terms["hr_hr"]) == pytest.approx(0.125, abs=1e-5)
    assert float(terms["hr_lr"]) == pytest.approx((SQRT2 + 0.75) / 4, abs=1e-5)
    assert float(terms["lr_hr"]) == pytest.approx((SQRT2 + 0.75) / 4, abs=1e-5)
    assert float(terms["lr_lr"]) == pytest.approx((2 * SQRT2 + 1) / 4, abs=1e-5)


def test_own_image_is_never_a_positive() -> None:
    # anchor 0 has no other image of its identity: counting its own copy (distance 0)
    # as a positive would give 0 - 0.2 + 0.5 = 0.3; the term must be 0 instead
    distances = torch.tensor([[0.0, 0.2, 0.9], [0.2, 0.0, 0.1], [0.9, 0.1, 0.0]])
    terms = batch_hard_triplet(distances, torch.tensor([0, 1, 1]), margin=0.5)
    # anchor 1: positive 2 at 0.1, negative 0 at 0.2 -> 0.4; anchor 2: 0.1 - 0.9 + 0.5 < 0
    assert terms.tolist() == pytest.approx([0.0, 0.4, 0.0])
    terms = batch_hard_triplet(distances, torch.tensor([0, 0, 0]), margin=0.5)
    assert terms.tolist() == [0.0, 0.0, 0.0]  # no negatives: no term


def test_against_another_set_the_own_image_is_a_positive() -> None:
    # anchors are one set (student embeddings), candidates another (teacher descriptors):
    # column 0 is anchor 0's own image's descriptor and counts as its positive
    distances = torch.tensor([[0.3, 0.5, 0.9], [0.7, 0.2, 0.4]])
    terms = batch_hard_triplet(distances, torch.tensor([0, 1]), margin=0.25,
                               column_labels=torch.tensor([0, 1, 1]))
    # anchor 0: positive 0 at 0.3, hardest negative 1 at 0.5 -> 0.05;
    # anchor 1: hardest positive 2 at 0.4, negative 0 at 0.7 -> max(-0.05, 0) = 0
    assert terms.tolist() == pytest.approx([0.05, 0.0])


def test_octuplet_gradient_reaches_both_resolutions() -> None:
    hr = torch.randn(8, 16, requires_grad=True)
    lr = torch.randn(8, 16, requires_grad=True)
    loss, _ = octuplet_loss(hr, lr, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), margin=1.0)
    loss.backward()
    assert hr.grad is not None and hr.grad.abs().sum() > 0
    assert lr.grad is not None and lr.grad.abs().sum() > 0


def test_derived_margin_logits() -> None:
    objective = DeriveNetObjective(4, 3, DeriveNetConfig(scale=10.0, alpha=2.0))
    with torch.no_grad():
        objective.weight.copy_(torch.eye(4)[:, :3])
        objective.centres.copy_(torch.tensor([[1.0, 0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 1.0, 0]]))
    embeddings = torch.tensor([[2.0, 0, 0, 0]])
    logits = objective.derived_logits(embeddings, torch.tensor([0]))
    # target: s cos θ_y = 10; class 1: 0 + α cos(C0, C1) = 2/sqrt(2); class 2: 0 + 0
    assert logits[0].tolist() == pytest.approx([10.0, SQRT2, 0.0], abs=1e-5)


def test_derivenet_loss_updates_the_backbone() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("ir-tiny", embedding_size=16, input_size=32)
    objective = DeriveNetObjective(16, 3, DeriveNetConfig(decoder_hidden=8))
    optimizer = torch.optim.SGD([*backbone.parameters(), *objective.parameters()], lr=0.1)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    decoder_before = objective.decoder[0].weight.clone()
    hr = torch.rand(6, 3, 32, 32) * 2 - 1
    batch = {
        "hr_input": hr,
        "input": F.interpolate(F.interpolate(hr, size=8, mode="area"), size=32, mode="bicubic"),
        "label": torch.tensor([0, 0, 1, 1, 2, 2]),
    }
    loss, stats = objective(backbone, batch)
    assert stats["recent_loss"] > 0 and stats["softmax_loss"] > 0
    loss.backward()
    optimizer.step()
    changed = [k for k, v in backbone.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith("stem.0") for k in changed)  # the first convolution learned
    assert any("output.3" in k for k in changed)  # so did the embedding layer
    assert not torch.equal(objective.decoder[0].weight, decoder_before)
    assert objective.centre_seen.all()  # all three classes got a reconstruction centre


@pytest.mark.parametrize("method", ["octuplet", "derivenet"])
def test_finetune_end_to_end_from_a_checkpoint(
    method: str, tiny_config: Callable[..., TrainConfig], tmp_path
) -> None:
    trained = train(tiny_config(engine={"out_dir": str(tmp_path / "base"), "max_steps": 3}),
                    source=SyntheticSource())
    start = torch.load(trained.checkpoint, weights_only=False)
    config = tiny_config(
        engine={"out_dir": str(tmp_path / method), "max_steps": 4},
        optim={"lr": 1e-3},
        finetune={
            "checkpoint": str(trained.checkpoint),
            "method": method,
            "octuplet": {"identities": 3, "images_per_identity": 4, "r_min": 7, "r_max": 16},
            "derivenet": {"pyramid": [8, 16], "decoder_hidden": 16},
        },
    )
    result = finetune(config, source=SyntheticSource(), record_losses=True)
    assert result.step == 4 and all(math.isfinite(v) for _, v in result.losses)
    state = torch.load(result.checkpoint, weights_only=False)
    assert state["head_name"] == f"arcface+{method}" and state["method"] == method
    assert state["backbone_kwargs"] == start["backbone_kwargs"]
    moved = [k for k, v in state["backbone_state"].items()
             if v.is_floating_point() and not torch.equal(v, start["backbone_state"][k])]
    assert moved, "fine-tuning did not change the backbone"
    if method == "derivenet":  # W starts from the trained head's class centres
        # a random start would be uncorrelated with them; four small steps barely move W
        start_w = start["head_state"]["weight"].flatten()
        tuned_w = state["head_state"]["weight"].flatten()
        assert torch.nn.functional.cosine_similarity(start_w, tuned_w, dim=0) > 0.9
