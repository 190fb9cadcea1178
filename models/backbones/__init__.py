"""Face backbones (METHODS §1) behind a registry.

``create_backbone("ir50", embedding_size=512)`` returns an ``nn.Module`` whose forward maps
a float (N, 3, 112, 112) batch, normalised as ``(pixel - 127.5) / 127.5``, RGB, to the raw
embedding z (N, D). Registered: ``ir18``, ``ir34``, ``ir50``, ``ir100`` (the paper nets) and
``ir-tiny`` (one unit per stage at 1/8 width, for tests), and ``dlib-resnet29`` (dlib's
face-recognition ResNet, to fine-tune from its released weights) and
``dlib-resnet29-gated`` (dlib's network for sharp inputs, a student for blurred ones).
Every IR builder also takes ``width_multiplier`` to scale the stage widths.
"""

from __future__ import annotations

from models.backbones.dlib_resnet import DlibResNet
from models.backbones.gated import QualityGated
from models.backbones.iresnet import IRBlock, IResNet
from models.backbones.registry import create_backbone, list_backbones, register_backbone

__all__ = [
    "DlibResNet", "IRBlock", "IResNet", "QualityGated", "create_backbone", "list_backbones",
    "register_backbone",
]
