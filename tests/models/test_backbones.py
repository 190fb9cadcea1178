"""IR backbones (METHODS §1): registry, structure, parameter count, forward contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.backbones import IRBlock, IResNet, create_backbone, list_backbones

PAPER_BLOCKS = {
    "ir18": (2, 2, 2, 2),
    "ir34": (3, 4, 6, 3),
    "ir50": (3, 4, 14, 3),
    "ir100": (3, 13, 30, 3),
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registry_lists_the_paper_nets_and_the_tiny_one() -> None:
    names = list_backbones()
    assert set(PAPER_BLOCKS) <= set(names)
    assert "ir-tiny" in names


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet9000'.*ir50.*ir100"):
        create_backbone("resnet9000")


def test_names_ignore_case_dashes_and_underscores() -> None:
    a = create_backbone("IR-tiny", embedding_size=8)
    b = create_backbone("ir_tiny", embedding_size=8)
    assert type(a) is type(b) is IResNet
    assert n_params(a) == n_params(b)


def test_ir50_has_43_6_million_parameters() -> None:
    count = n_params(create_backbone("ir50", embedding_size=512))
    assert abs(count - 43.6e6) / 43.6e6 < 0.01, count


@pytest.mark.parametrize("name", sorted(PAPER_BLOCKS))
def test_depths_and_strides_follow_the_paper(name: str) -> None:
    # width 1/16 keeps construction cheap; the topology does not depend on the width
    net = create_backbone(name, embedding_size=16, width_multiplier=1 / 16)
    units = [m for m in net.body if isinstance(m, IRBlock)]
    assert len(units) == sum(PAPER_BLOCKS[name])
    first_of_stage = {sum(PAPER_BLOCKS[name][:i]) for i in range(4)}
    for index, unit in enumerate(units):
        stride = unit.residual[4].stride
        assert stride == ((2, 2) if index in first_of_stage else (1, 1)), (index, stride)


def test_ir50_unit_layout_and_shortcuts() -> None:
    net = create_backbone("ir50")
    units = list(net.body)
    first = units[0]  # 64 -> 64 with stride 2: parameter-free subsampling shortcut
    kinds = [type(layer) for layer in first.residual]
    assert kinds == [nn.BatchNorm2d, nn.Conv2d, nn.BatchNorm2d, nn.PReLU, nn.Conv2d, nn.BatchNorm2d]
    assert isinstance(first.shortcut, nn.MaxPool2d)
    assert first.shortcut.stride == 2
    assert isinstance(units[1].shortcut, nn.Identity)
    projection = units[3].shortcut  # 64 -> 128: 1x1 conv with stride 2 + BN
    assert isinstance(projection[0], nn.Conv2d) and projection[0].kernel_size == (1, 1)
    assert projection[0].stride == (2, 2)
    assert isinstance(projection[1], nn.BatchNorm2d)
    stem = [type(layer) for layer in net.stem]
    assert stem == [nn.Conv2d, nn.BatchNorm2d, nn.PReLU]
    assert net.stem[0].stride == (1, 1)
    head = [type(layer) for layer in net.output]
    assert head == [nn.BatchNorm2d, nn.Dropout, nn.Flatten, nn.Linear, nn.BatchNorm1d]
    assert net.output[3].in_features == 512 * 7 * 7


def test_ir50_forward_returns_raw_embeddings() -> None:
    net = create_backbone("ir50").eval()
    torch.manual_seed(0)
    with torch.no_grad():
        z = net(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert z.shape == (2, 512)
    assert torch.isfinite(z).all()
    # raw z, not normalised: AdaFace and SphereFace need ||z||
    assert not torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-3)


@pytest.mark.parametrize(("input_size", "side"), [(112, 7), (64, 4), (32, 2)])
def test_tiny_net_forward_at_several_input_sizes(input_size: int, side: int) -> None:
    net = create_backbone("ir-tiny", embedding_size=16, input_size=input_size, dropout=0.2)
    assert net.output[3].in_features == 64 * side * side
    z = net(torch.randn(3, 3, input_size, input_size))
    assert z.shape == (3, 16)


def test_width_multiplier_scales_the_stages() -> None:
    half = create_backbone("ir18", embedding_size=64, width_multiplier=0.5)
    widths = [unit.residual[1].out_channels for unit in half.body]
    assert sorted(set(widths)) == [32, 64, 128, 256]


@pytest.mark.parametrize(
    "kwargs",
    [{"embedding_size": 0}, {"dropout": 1.0}, {"input_size": 8}, {"width_multiplier": 0}],
)
def test_invalid_options_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        create_backbone("ir-tiny", **kwargs)
