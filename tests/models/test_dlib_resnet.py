"""dlib's face-recognition ResNet (models.backbones.dlib_resnet) and the reader of its
.dat format (models.backbones.dlib_format): shapes, a file written here in dlib's
format round-trips into the network, malformed files fail clearly, ONNX export, and,
where dlib is installed, numerical parity with dlib itself."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from models.backbones import DlibResNet, create_backbone
from models.backbones.dlib_format import DlibFormatError, read_dlib_resnet
from models.backbones.dlib_resnet import CHIP_SIZE, Affine, _padded_sum, load_dlib_resnet
from models.quality_torch import laplacian_quality_torch

# --------------------------------------------------------------------------- writer


def _int(value: int) -> bytes:
    raw = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(raw) | (0x80 if value < 0 else 0)]) + raw


def _real(value: float, exponent: int = -20) -> bytes:
    return _int(round(value * 2.0**-exponent)) + _int(exponent)


def _name(text: str) -> bytes:
    return _int(len(text)) + text.encode()


def _tensor(values: np.ndarray) -> bytes:
    flat = np.asarray(values, dtype="<f4").ravel()
    return _int(2) + b"".join(_int(v) for v in (flat.size, 1, 1, 1)) + flat.tobytes()


def write_dlib_file(path: Path, net: DlibResNet, *, drop_last_conv: bool = False) -> None:
    """``net``'s weights in dlib's layout (name, params, settings per layer), with some
    of the bookkeeping integers dlib writes between layers."""
    out = [_int(1), _name("loss_metric_2"), _real(0.04), _real(0.6), _int(2) * 5,
           _name("input_rgb_image_sized"), *(_real(m) for m in net.mean.flatten().tolist()),
           _int(150), _int(150)]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    affines = [m for m in net.modules() if isinstance(m, Affine)]
    if drop_last_conv:
        convs = convs[:-1]
    for conv, affine in zip(convs, affines, strict=False):
        params = np.concatenate([conv.weight.detach().numpy().ravel(),
                                 conv.bias.detach().numpy().ravel()])
        settings = (conv.out_channels, *conv.kernel_size, *conv.stride, *conv.padding)
        out += [_name("con_4"), _tensor(params), *(_int(v) for v in settings),
                _real(1.0), _real(1.0), _int(1), _name("affine_"),
                _tensor(np.concatenate([affine.gamma.detach().numpy(),
                                        affine.beta.detach().numpy()])),
                _int(0), _name("relu_"), _int(2)]
    weight = net.fc.weight.detach().numpy().T  # dlib: inputs x outputs
    out += [_name("avg_pool_2"), _int(0), _name("fc_2"), _int(weight.shape[1]),
            _int(weight.shape[0]), _tensor(weight), _int(1)]
    path.write_bytes(b"".join(out))


def random_net(seed: int = 0) -> DlibResNet:
    torch.manual_seed(seed)
    net = create_backbone("dlib-resnet29", embedding_size=128)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.05)
        net.mean.copy_(torch.tensor([120.5, 110.25, 100.125]).view(1, 3, 1, 1))
    return net.eval()


# --------------------------------------------------------------------------- network


def test_shapes_on_crops_and_on_chips() -> None:
    net = create_backbone("dlib-resnet29", embedding_size=128).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 112, 112)).shape == (2, 128)
        chips = create_backbone("dlib-resnet29", embedding_size=128, framing=False).eval()
        assert chips(torch.zeros(1, 3, CHIP_SIZE, CHIP_SIZE)).shape == (1, 128)
    # 5.6 M parameters, as dlib's network
    assert 5_500_000 < sum(p.numel() for p in net.parameters()) < 5_700_000


def test_framing_cuts_the_chip_box_and_replicates_past_the_edge() -> None:
    net = DlibResNet(chip_box=(10, 24, 104, 118))
    crop = torch.arange(112.0).view(1, 1, 112, 1).expand(1, 3, 112, 112)  # row index
    chip = net.frame(crop)
    assert chip.shape == (1, 3, CHIP_SIZE, CHIP_SIZE)
    assert chip[0, 0, 0, 0] == pytest.approx(24.0, abs=0.5)  # the box's top row
    assert chip[0, 0, -1, 0] == 111.0  # rows past the crop repeat its last row


def test_padded_sum_zero_fills_the_smaller_operand() -> None:
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    total = _padded_sum(a, b)
    assert total.shape == (1, 4, 4, 4)
    assert total[0, :2, :3, :3].eq(3.0).all()
    assert total[0, 2:].eq(2.0).all() and total[0, :, 3].eq(2.0).all()


def test_builder_refuses_other_sizes() -> None:
    with pytest.raises(ValueError, match="128-d"):
        create_backbone("dlib-resnet29", embedding_size=512)
    with pytest.raises(ValueError, match="dropout"):
        create_backbone("dlib-resnet29", embedding_size=128, dropout=0.1)


# --------------------------------------------------------------------------- format


def test_a_file_in_dlibs_format_round_trips(tmp_path: Path) -> None:
    source = random_net(1)
    path = tmp_path / "net.dat"
    write_dlib_file(path, source)
    mean, layers = read_dlib_resnet(path)
    assert mean == pytest.approx((120.5, 110.25, 100.125))
    assert [layer.kind for layer in layers].count("con") == 29
    target = create_backbone("dlib-resnet29", embedding_size=128)
    target.load_pretrained(path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, msg=key)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), source(x))


def test_missing_layers_and_foreign_files_are_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.dat"
    write_dlib_file(short, random_net(), drop_last_conv=True)
    with pytest.raises(DlibFormatError, match="28 conv"):
        load_dlib_resnet(create_backbone("dlib-resnet29", embedding_size=128), short)
    foreign = tmp_path / "foreign.dat"
    foreign.write_bytes(b"\x89PNG\r\n" + bytes(100))
    with pytest.raises(DlibFormatError, match="not a dlib"):
        read_dlib_resnet(foreign)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(short.read_bytes()[:5000])
    with pytest.raises(DlibFormatError, match=r"past the end|end of file"):
        read_dlib_resnet(truncated)


def test_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    from models.embedder import OnnxEmbedder
    from models.export import export_checkpoint

    net = random_net(2)
    checkpoint = {"backbone_name": "dlib-resnet29",
                  "backbone_kwargs": {"embedding_size": 128, "input_size": 112},
                  "backbone_state": net.state_dict(), "head_name": "approach2", "step": 1}
    out = tmp_path / "dlib.onnx"
    metadata = export_checkpoint(checkpoint, out, name="dlib-test", version="1")
    assert metadata.backbone == "dlib-resnet29" and metadata.embedding_size == 128
    pixels = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    onnx_out = OnnxEmbedder(out).embed_pixels(pixels)
    with torch.no_grad():
        x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - 127.5) / 127.5
        torch_out = torch.nn.functional.normalize(net(x), dim=1).numpy()
    assert np.abs((onnx_out * torch_out).sum(1) - 1).max() < 1e-4


# --------------------------------------------------------------------------- parity


@pytest.mark.skipif(
    importlib.util.find_spec("dlib") is None
    or importlib.util.find_spec("face_recognition_models") is None,
    reason="needs the train-teacher extra (dlib-bin, face-recognition-models)",
)
def test_matches_dlib_on_its_own_chips(lfw_images_dir: Path) -> None:
    import dlib
    from PIL import Image

    from training.teacher import _model_files, face_rectangle

    predictor_path, model_path = _model_files()
    predictor = dlib.shape_predictor(predictor_path)
    recogniser = dlib.face_recognition_model_v1(model_path)
    net = create_backbone("dlib-resnet29", embedding_size=128, framing=False)
    net.load_pretrained(model_path)
    paths = sorted(lfw_images_dir.rglob("*.jpg"))
    chips, expected = [], []
    for path in random.Random(3).sample(paths, 4):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        shape = predictor(pixels, dlib.rectangle(*face_rectangle(250, 250, "lfw")))
        chip = dlib.get_face_chip(pixels, shape, CHIP_SIZE, 0.25)
        chips.append(chip)
        expected.append(np.asarray(recogniser.compute_face_descriptor(chip)))
    x = (torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    with torch.no_grad():
        ours = net.eval()(x).numpy()
    assert np.abs(ours - np.stack(expected)).max() < 1e-4


# --------------------------------------------------------------------------- gated


def test_quality_gate_picks_the_branch_per_image(tmp_path: Path) -> None:
    from models.backbones.gated import QualityGated
    from models.embedder import OnnxEmbedder
    from models.export import export_checkpoint

    sharp, blurred = random_net(4), random_net(5)
    gated = create_backbone("dlib-resnet29-gated", embedding_size=128, gate=4.0)
    assert isinstance(gated, QualityGated)
    gated.sharp.load_state_dict(sharp.state_dict())
    gated.blurred.load_state_dict(blurred.state_dict())
    gated.eval()
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)  # q far above 4
    flat = np.full((112, 112, 3), 90, dtype=np.uint8)  # q = 0
    pixels = np.stack([noisy, flat])
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    with torch.no_grad():
        out = gated(x)
        expected_sharp = torch.nn.functional.normalize(sharp(x[:1]), dim=1)
        expected_blurred = torch.nn.functional.normalize(blurred(x[1:]), dim=1)
        q = gated.quality(x)
    assert q[0] > 4.0 and q[1] == 0.0
    torch.testing.assert_close(q, laplacian_quality_torch(x * 127.5 + 127.5))
    torch.testing.assert_close(out[:1], expected_sharp)
    torch.testing.assert_close(out[1:], expected_blurred)
    checkpoint = {"backbone_name": "dlib-resnet29-gated",
                  "backbone_kwargs": {"embedding_size": 128, "gate": 4.0},
                  "backbone_state": gated.state_dict(), "step": 1}
    out_path = tmp_path / "gated.onnx"
    meta = export_checkpoint(checkpoint, out_path, name="gated-test", version="1")
    # no gate record in this checkpoint (training.gate writes one): the threshold still shows
    assert meta.gate is not None and meta.gate.threshold == 4.0
    assert meta.gate.blurred.source == "not recorded in the checkpoint"
    onnx_out = OnnxEmbedder(out_path).embed_pixels(pixels)
    np.testing.assert_allclose(onnx_out, out.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="non-negative"):
        QualityGated(sharp, blurred, gate=-1.0)
