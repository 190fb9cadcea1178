"""Margin heads (METHODS §2 and §4): registry, margin-0 equivalence, hand-computed target
logits, gradients, and the properties each design relies on."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.backbones import create_backbone
from models.heads import (
    AdaFaceHead,
    ArcFaceHead,
    CosFaceHead,
    MarginHead,
    create_head,
    head_class,
    list_heads,
    sphere_psi,
)
from models.quality_torch import laplacian_quality_torch

#: The parameters that turn each head's margin off. SphereFace's margin is
#: multiplicative: m = 1 makes ψ(θ) = cos θ, and the annealed target
#: (λ cos θ + ψ(θ)) / (1 + λ) collapses to cos θ, i.e. plain ||z||-scaled softmax.
ZERO_MARGIN = {
    "cosface": {"margin": 0.0},
    "arcface": {"margin": 0.0},
    "sphereface": {"margin": 1},
    "adaface": {"margin": 0.0},
    "adalap": {"margin": 0.0},
    "approach1": {"margin_hr": 0.0, "margin_lr": 0.0},
    "approach2": {"margin_min": 0.0, "margin_max": 0.0},
}

D, C, B = 8, 5, 6


def head_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "embeddings": torch.randn(B, D, generator=generator) * 7.0,
        "labels": torch.randint(0, C, (B,), generator=generator),
        "quality": torch.rand(B, generator=generator) * 20.0,
        "degraded": torch.arange(B) % 2 == 0,
    }


def plain_cosine(head: MarginHead, embeddings: torch.Tensor) -> torch.Tensor:
    """cos θ computed independently of the head's own code path."""
    unit = embeddings / embeddings.norm(dim=1, keepdim=True)
    centres = head.weight / head.weight.norm(dim=0, keepdim=True)
    return unit @ centres


def set_unit_centres(head: MarginHead) -> None:
    """W = the first C standard basis vectors of R^D (already unit columns)."""
    with torch.no_grad():
        head.weight.copy_(torch.eye(head.embedding_size, head.num_classes))


# z = (3, 4, 0, ...): ||z|| = 5, cos θ_0 = 0.6, cos θ_1 = 0.8, sin θ_0 = 0.8
COS0, SIN0, NORM = 0.6, 0.8, 5.0


def hand_example(head: MarginHead, rows: int = 1) -> torch.Tensor:
    set_unit_centres(head)
    z = torch.zeros(rows, head.embedding_size)
    z[:, 0], z[:, 1] = 3.0, 4.0
    return z


# --- registry ---------------------------------------------------------------------------


def test_every_registered_head_has_a_zero_margin_setting() -> None:
    # a new head must say what "no margin" means for it, or this suite fails
    assert set(list_heads()) == set(ZERO_MARGIN)


def test_unknown_head_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown head 'magface'.*arcface.*cosface"):
        create_head("magface", D, C)


def test_unknown_parameter_lists_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"does not take \['s'\].*'margin'.*'scale'"):
        create_head("arcface", D, C, s=30.0)


def test_names_ignore_case_and_separators() -> None:
    assert head_class("ArcFace") is ArcFaceHead
    assert head_class("cos-face") is CosFaceHead


@pytest.mark.parametrize("name", ["adalap", "approach2"])
def test_quality_heads_refuse_to_run_without_quality(name: str) -> None:
    head = create_head(name, D, C)
    inputs = head_inputs()
    with pytest.raises(ValueError, match="quality"):
        head(inputs["embeddings"], inputs["labels"], degraded=inputs["degraded"])


def test_approach1_refuses_to_run_without_degraded_flags() -> None:
    head = create_head("approach1", D, C)
    inputs = head_inputs()
    with pytest.raises(ValueError, match="degraded"):
        head(inputs["embeddings"], inputs["labels"], quality=inputs["quality"])


def test_bad_shapes_are_refused() -> None:
    head = create_head("arcface", D, C)
    inputs = head_inputs()
    with pytest.raises(ValueError, match="embeddings must be"):
        head(inputs["embeddings"][:, :3], inputs["labels"])
    with pytest.raises(ValueError, match="labels must be"):
        head(inputs["embeddings"], inputs["labels"].float())
    with pytest.raises(ValueError, match="quality must have shape"):
        head(inputs["embeddings"], inputs["labels"], quality=inputs["quality"][:2])


# --- margin 0 is the plain cosine softmax -----------------------------------------------


@pytest.mark.parametrize("name", sorted(ZERO_MARGIN))
@pytest.mark.parametrize("training", [True, False])
def test_zero_margin_is_plain_cosine_softmax(name: str, training: bool) -> None:
    torch.manual_seed(1)
    head = create_head(name, D, C, **ZERO_MARGIN[name]).train(training)
    inputs = head_inputs()
    logits = head(**inputs)
    cosine = plain_cosine(head, inputs["embeddings"])
    scale = inputs["embeddings"].norm(dim=1, keepdim=True) if name == "sphereface" else 64.0
    torch.testing.assert_close(logits, scale * cosine, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", sorted(ZERO_MARGIN))
def test_default_margin_lowers_only_the_target_logit(name: str) -> None:
    torch.manual_seed(1)
    head = create_head(name, D, C).eval()
    inputs = head_inputs()
    if name == "adaface":  # force ẑ = −1 (the ArcFace end): a margin of m radians
        head.running_mean.fill_(1e3)
    logits = head(**inputs)
    plain = create_head(name, D, C, **ZERO_MARGIN[name]).eval()
    plain.load_state_dict(head.state_dict(), strict=False)
    reference = plain(**inputs)
    target = F.one_hot(inputs["labels"], C).bool()
    assert torch.all(logits[target] < reference[target] - 1e-3)
    torch.testing.assert_close(logits[~target], reference[~target])


# --- target logits on hand-computed examples --------------------------------------------


def test_cosface_target_by_hand() -> None:
    head = create_head("cosface", D, C, scale=64.0, margin=0.35)
    logits = head(hand_example(head), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(64 * (0.6 - 0.35), rel=1e-6)  # 16.0
    assert logits[0, 1].item() == pytest.approx(64 * 0.8, rel=1e-6)
    assert logits[0, 2].item() == pytest.approx(0.0, abs=1e-5)


def test_arcface_target_by_hand() -> None:
    head = create_head("arcface", D, C, scale=64.0, margin=0.5)
    logits = head(hand_example(head), torch.tensor([0]))
    # cos(θ + m) = cos θ cos m − sin θ sin m
    expected = 64 * (COS0 * math.cos(0.5) - SIN0 * math.sin(0.5))  # 9.1526
    assert logits[0, 0].item() == pytest.approx(expected, rel=1e-5)
    assert logits[0, 1].item() == pytest.approx(64 * 0.8, rel=1e-6)


def test_arcface_falls_back_past_pi() -> None:
    head = create_head("arcface", D, C, scale=64.0, margin=0.7)
    set_unit_centres(head)
    z = torch.zeros(1, D)
    z[0, 0], z[0, 1] = -4.0, 3.0  # cos θ_0 = -0.8, θ_0 = 2.498; θ_0 + 0.7 > π
    logits = head(z, torch.tensor([0]))
    expected = 64 * (-0.8 - 0.7 * math.sin(0.7))  # -80.06
    assert logits[0, 0].item() == pytest.approx(expected, rel=1e-5)


def test_sphereface_target_by_hand() -> None:
    head = create_head("sphereface", D, C, margin=4).eval()
    z = hand_example(head)
    # 4θ_0 = 3.709 lies in [π, 2π): k = 1, ψ = −cos 4θ − 2, cos 4θ = 8c⁴ − 8c² + 1 = −0.8432
    psi = -(8 * COS0**4 - 8 * COS0**2 + 1) - 2  # −1.1568
    logits = head(z, torch.tensor([0]))
    lam = 1500.0  # iteration 0
    assert logits[0, 0].item() == pytest.approx(NORM * (lam * COS0 + psi) / (1 + lam), rel=1e-5)
    assert logits[0, 1].item() == pytest.approx(NORM * 0.8, rel=1e-6)
    head.iteration.fill_(10**6)  # λ has annealed down to λ_min = 5
    logits = head(z, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(NORM * (5 * COS0 + psi) / 6, rel=1e-5)  # 1.536


def test_sphereface_lambda_anneals_with_training_iterations() -> None:
    head = create_head("sphereface", D, C)
    inputs = head_inputs()
    head.eval()
    head(**inputs)
    assert int(head.iteration) == 0  # evaluation does not advance the schedule
    head.train()
    for _ in range(3):
        head(**inputs)
    assert int(head.iteration) == 3
    assert head.current_lambda() == pytest.approx(1500 / (1 + 0.1 * 3))
    assert "iteration" in head.state_dict()


@pytest.mark.parametrize(
    ("mean", "std", "z_hat"),
    [(5.0, 1.0, 0.0), (100.0, 1.0, -1.0), (0.0, 1.0, 1.0), (3.0, 2.0, 0.333 * 2 / 2.001)],
)
def test_adaface_target_by_hand(mean: float, std: float, z_hat: float) -> None:
    head = create_head("adaface", D, C, scale=64.0, margin=0.4).eval()
    head.running_mean.fill_(mean)
    head.running_std.fill_(std)
    logits = head(hand_example(head), torch.tensor([0]))
    g_angle, g_add = -0.4 * z_hat, 0.4 + 0.4 * z_hat
    # cos(θ + g) = cos θ cos g − sin θ sin g; θ + g stays inside [ε, π − ε] here
    expected = 64 * (COS0 * math.cos(g_angle) - SIN0 * math.sin(g_angle) - g_add)
    assert logits[0, 0].item() == pytest.approx(expected, rel=1e-5, abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(64 * 0.8, rel=1e-6)
    assert head.last_stats["z_hat"].item() == pytest.approx(z_hat, abs=1e-6)


def test_adaface_running_statistics_by_hand() -> None:
    head = create_head("adaface", D, C)
    set_unit_centres(head)
    z = torch.zeros(2, D)
    z[0, 0], z[1, 0] = 10.0, 30.0  # norms 10 and 30: mean 20, unbiased std 14.142
    head.eval()
    head(z, torch.tensor([0, 1]))
    assert head.running_mean.item() == 20.0 and head.running_std.item() == 100.0
    head.train()
    head(z, torch.tensor([0, 1]))
    assert head.running_mean.item() == pytest.approx(0.01 * 20 + 0.99 * 20)
    assert head.running_std.item() == pytest.approx(0.01 * math.sqrt(200) + 0.99 * 100)
    assert {"running_mean", "running_std"} <= set(head.state_dict())


def test_adalap_target_by_hand() -> None:
    head = create_head("adalap", D, C, scale=64.0, margin=0.4).eval()
    q = 9.0
    z_hat = max(-1.0, min(1.0, 0.333 * (math.log(q + 1e-6) - 1.3) / (5.0 + 1e-3)))
    logits = head(hand_example(head), torch.tensor([0]), quality=torch.tensor([q]))
    g_angle, g_add = -0.4 * z_hat, 0.4 + 0.4 * z_hat
    expected = 64 * (COS0 * math.cos(g_angle) - SIN0 * math.sin(g_angle) - g_add)
    assert logits[0, 0].item() == pytest.approx(expected, rel=1e-5)


def test_adalap_uses_its_own_statistics_of_log_quality() -> None:
    head = create_head("adalap", D, C, t_alpha=0.5)
    set_unit_centres(head)
    q = torch.tensor([math.e**2 - 1e-6, math.e**4 - 1e-6])  # log(q + ε) = 2 and 4
    head.train()(torch.randn(2, D), torch.tensor([0, 1]), quality=q)
    assert head.running_mean.item() == pytest.approx(0.5 * 3.0 + 0.5 * 1.3, rel=1e-5)
    assert head.running_std.item() == pytest.approx(0.5 * math.sqrt(2) + 0.5 * 5.0, rel=1e-5)
    # sharper image -> larger ẑ (towards the CosFace+ end), blurrier -> ArcFace end
    z_hat = head.last_stats["z_hat"]
    assert z_hat[1] > z_hat[0]


def test_approach1_target_by_hand_uses_m_lr_exactly_on_degraded_samples() -> None:
    head = create_head("approach1", D, C, scale=64.0, margin_hr=0.35, margin_lr=0.5)
    z = hand_example(head, rows=4)
    degraded = torch.tensor([True, False, False, True])
    logits = head(z, torch.zeros(4, dtype=torch.long), degraded=degraded)
    assert head.last_margins.tolist() == pytest.approx([0.5, 0.35, 0.35, 0.5])
    for row, flag in enumerate(degraded.tolist()):
        m = 0.5 if flag else 0.35
        expected = 64 * (COS0 * math.cos(m) - SIN0 * math.sin(m))
        assert logits[row, 0].item() == pytest.approx(expected, rel=1e-5)


def test_approach2_target_by_hand() -> None:
    head = create_head("approach2", D, C, scale=64.0)
    z = hand_example(head, rows=3)
    q = torch.tensor([2.5, 0.0, 1000.0])  # κ/q = 0.4 (inside), clipped to 0.5 and 0.35
    logits = head(z, torch.zeros(3, dtype=torch.long), quality=q)
    for row, m in enumerate([1 / (2.5 + 1e-6), 0.5, 0.35]):
        expected = 64 * (COS0 * math.cos(m) - SIN0 * math.sin(m))
        assert logits[row, 0].item() == pytest.approx(expected, rel=1e-5)


# --- properties of the designs ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ZERO_MARGIN))
def test_backbone_gradients_through_head_and_cross_entropy(name: str) -> None:
    torch.manual_seed(0)
    backbone = create_backbone("ir-tiny", embedding_size=D, input_size=32).train()
    head = create_head(name, D, C).train()
    images = torch.rand(4, 3, 32, 32) * 255.0
    labels = torch.tensor([0, 1, 2, 3])
    z = backbone(images / 127.5 - 1.0)
    logits = head(
        z,
        labels,
        quality=laplacian_quality_torch(images),
        degraded=torch.tensor([True, False, True, False]),
    )
    F.cross_entropy(logits, labels).backward()
    for module in (backbone, head):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum().item() for g in grads) > 0


def test_sphere_psi_is_continuous_and_decreasing_for_m4() -> None:
    theta = torch.linspace(0.0, math.pi, 200_001, dtype=torch.float64)
    psi = sphere_psi(theta, 4)
    steps = psi.diff()
    assert torch.all(steps < 0), "ψ must decrease strictly"
    step = math.pi / 200_000
    assert steps.abs().max().item() <= 4 * step * 1.0001, "ψ jumps: not continuous"
    assert psi[0].item() == pytest.approx(1.0)
    assert psi[-1].item() == pytest.approx(-7.0)  # (−1)^4 cos 4π − 2·4
    # at the joints θ = kπ/4, ψ = (−1)^k cos(kπ) − 2k = 1 − 2k
    joints = torch.tensor([k * math.pi / 4 for k in range(1, 4)], dtype=torch.float64)
    torch.testing.assert_close(sphere_psi(joints, 4), torch.tensor([-1.0, -3.0, -5.0]).double())


def test_sphere_psi_with_m1_is_cosine() -> None:
    theta = torch.linspace(0.0, math.pi - 1e-6, 1001, dtype=torch.float64)
    torch.testing.assert_close(sphere_psi(theta, 1), torch.cos(theta))


def test_sphereface_refuses_fractional_margins() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        create_head("sphereface", D, C, margin=0.35)


def _equal_norm_inputs(norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(B, D, generator=generator)
    return z / z.norm(dim=1, keepdim=True) * norm, torch.randint(0, C, (B,), generator=generator)


@pytest.mark.parametrize(
    ("reference", "mean", "std", "z_hat"),
    [
        (ArcFaceHead, 1e3, 1.0, -1.0),  # h (n − μ) / σ ≪ −1: ẑ clips to −1
        (CosFaceHead, 10.0, 100.0, 0.0),  # every n equals μ: ẑ = 0
    ],
)
def test_adaface_ends_are_arcface_and_cosface(
    reference: type[ArcFaceHead | CosFaceHead], mean: float, std: float, z_hat: float
) -> None:
    torch.manual_seed(0)
    ada = AdaFaceHead(D, C, margin=0.4).eval()
    other = reference(D, C, margin=0.4)
    other.weight = ada.weight
    z, labels = _equal_norm_inputs(10.0)
    ada.running_mean.fill_(mean)
    ada.running_std.fill_(std)
    logits = ada(z, labels)
    assert torch.allclose(ada.last_stats["z_hat"], torch.full((B,), z_hat), atol=1e-6)
    torch.testing.assert_close(logits, other(z, labels), rtol=1e-5, atol=1e-4)


def test_approach2_margin_bounded_for_flat_and_sharp_images() -> None:
    head = create_head("approach2", D, C)
    flat = torch.full((1, 3, 112, 112), 128.0)
    generator = torch.Generator().manual_seed(0)
    sharp = torch.randint(0, 256, (1, 3, 112, 112), generator=generator).float()
    q = laplacian_quality_torch(torch.cat([flat, sharp]))
    assert q[0].item() == 0.0 and q[1].item() > 100.0
    margins = head.sample_margins(q)
    assert margins.tolist() == pytest.approx([0.5, 0.35])  # clipped at both ends
    # between the clip points the margin is κ / (q + ε) itself, continuous and decreasing
    grid = torch.linspace(0.0, 6.0, 6001)
    m = head.sample_margins(grid)
    lo, hi = torch.tensor(0.35).item(), torch.tensor(0.5).item()  # as float32
    assert m.min().item() >= lo and m.max().item() <= hi
    inside = (grid > 1 / 0.5) & (grid < 1 / 0.35)
    torch.testing.assert_close(m[inside], 1.0 / (grid[inside] + 1e-6))
    assert torch.all(m.diff() <= 0)
    assert m.diff().abs().max().item() < 1e-3  # no jump at the clip points


def test_approach2_quality_is_detached() -> None:
    head = create_head("approach2", D, C)
    q = torch.tensor([2.5, 3.0, 1.0], requires_grad=True)
    logits = head(torch.randn(3, D, requires_grad=True), torch.tensor([0, 1, 2]), quality=q)
    logits.sum().backward()
    assert q.grad is None
