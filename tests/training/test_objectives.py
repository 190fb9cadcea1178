"""The objective registry: every objective builds, owns its sampler, its checkpoint
state and its recorded name; unknown names list the valid ones."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from models.checkpoint import Checkpoint
from tests.support.training import SyntheticSource
from training.config import TrainConfig
from training.data import CrossResolutionBatchSampler, IdentityBatchSampler
from training.objectives import create_objective, list_objectives

FINETUNE = {
    "checkpoint": "unused.pt",
    "method": "octuplet",
    "octuplet": {"identities": 3, "images_per_identity": 4, "r_min": 7, "r_max": 16},
    "derivenet": {"pyramid": [8, 16], "decoder_hidden": 16},
}
SAMPLERS = {"margin": CrossResolutionBatchSampler, "octuplet": IdentityBatchSampler,
            "derivenet": CrossResolutionBatchSampler}


def test_registry_knows_the_builtin_objectives() -> None:
    assert set(list_objectives()) == set(SAMPLERS)


def test_unknown_objective_lists_the_valid_ones(
    tiny_config: Callable[..., TrainConfig],
) -> None:
    with pytest.raises(ValueError, match=r"unknown objective 'triplet'; valid names: \[.*margin"):
        create_objective("triplet", tiny_config(), 6, 32)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_objective_owns_sampler_state_and_name(
    name: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    config = tiny_config(finetune=FINETUNE)
    source = SyntheticSource()
    objective = create_objective(name, config, source.num_classes, 32)
    sampler = objective.sampler(source, config, rank=0, world_size=1)
    assert type(sampler) is SAMPLERS[name]
    state = objective.checkpoint_state()
    objective.load_checkpoint_state(state)  # round trip
    start = Checkpoint("ir-tiny", {}, {}, {"head_name": "arcface"})
    expected = "arcface" if name == "margin" else f"arcface+{name}"
    assert objective.recorded_name(start) == expected
    assert objective.recorded_name(None) == objective.name


def test_derivenet_starts_from_the_checkpoint_centres(
    tiny_config: Callable[..., TrainConfig],
) -> None:
    objective = create_objective("derivenet", tiny_config(finetune=FINETUNE), 6, 32)
    centres = torch.randn(32, 6)
    assert objective.start_from(Checkpoint("ir-tiny", {}, {}, {"head_state": {"weight": centres}}))
    assert torch.equal(objective.checkpoint_state()["weight"], centres)
    assert not objective.start_from(Checkpoint("ir-tiny", {}, {}, {"head_state": {}}))


@pytest.mark.parametrize("head", ["arcface", "approach2"])
def test_margin_leaves_unlabelled_samples_out_of_the_head(
    head: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    config = tiny_config(head={"name": head, "params": {"scale": 16.0}})
    objective = create_objective("margin", config, 4, 8)
    backbone = torch.nn.Flatten()  # the "embedding" is the input itself
    torch.manual_seed(0)
    batch = {"input": torch.randn(6, 8), "label": torch.tensor([0, -1, 2, -1, 3, 1]),
             "quality": torch.rand(6) * 20, "degraded": torch.tensor([0, 1, 0, 1, 1, 0]).bool()}
    keep = batch["label"] >= 0
    labelled = {key: value[keep] for key, value in batch.items()}
    loss, stats = objective(backbone, batch)
    expected, _ = objective(backbone, labelled)
    torch.testing.assert_close(loss, expected)
    assert stats["embedding_norm"].shape == (6,)
    none = {**batch, "label": torch.full((6,), -1)}
    zero, _ = objective(backbone, {**none, "input": batch["input"].requires_grad_()})
    assert zero.item() == 0.0 and zero.requires_grad
