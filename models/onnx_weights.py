"""A branch of an exported quality-gated artifact back as torch weights.

The bundled model is an ONNX file; the training run that made its student may be gone
(runs are not kept between machines). To fine-tune *that* student, its weights are read
back from the graph: the exporter keeps the convolutions' names
(``blurred.units.3.conv1.weight``), while each frozen affine (``Affine``: ``x * gamma +
beta``) becomes an anonymous ``Mul`` then ``Add`` right after its convolution, the
final ``fc`` an anonymous ``MatMul`` (weight transposed) inside the branch, and a tensor
equal in both branches (the input mean) is stored once and named again by an
``Identity``. Every tensor of
the branch's state is found by that structure and checked for shape against a fresh
:class:`~models.backbones.dlib_resnet.DlibResNet`; nothing is guessed by value.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from models.backbones import create_backbone
from models.checkpoint import Checkpoint

#: The network of each branch of a gated artifact (``models/backbones/gated.py``).
BRANCH_BACKBONE = "dlib-resnet29"

#: The affine after each convolution of a DlibResNet: affine prefix -> convolution prefix.
_AFFINE_OF = {"stem_affine": "stem", "affine1": "conv1", "affine2": "conv2"}


class OnnxWeightsError(ValueError):
    """The graph does not hold the branch as this module expects."""


class _Graph:
    def __init__(self, path: str | Path) -> None:
        graph = onnx.load(str(path)).graph
        self.initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.nodes = list(graph.node)
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
            # a tensor both branches hold once (the input mean) is the other's Identity
            if node.op_type == "Identity" and node.input[0] in self.initializers:
                self.initializers[node.output[0]] = self.initializers[node.input[0]]

    def only_consumer(self, value: str, op_type: str) -> onnx.NodeProto:
        found = [n for n in self.consumers[value] if n.op_type == op_type]
        if len(found) != 1:
            raise OnnxWeightsError(f"{value} feeds {len(found)} {op_type} nodes, expected 1")
        return found[0]

    def constant_input(self, node: onnx.NodeProto) -> np.ndarray:
        values = [self.initializers[name] for name in node.input if name in self.initializers]
        if len(values) != 1:
            raise OnnxWeightsError(f"{node.op_type} {node.name} has {len(values)} constant inputs")
        return values[0]

    def in_branch(self, node: onnx.NodeProto, branch: str) -> bool:
        return any(f"/{branch}/" in name for name in node.output)


def branch_state_from_onnx(
    path: str | Path, branch: str, template: nn.Module
) -> dict[str, torch.Tensor]:
    """The state dict of ``template`` (a DlibResNet) holding branch ``branch``
    (``sharp`` or ``blurred``) of the gated ONNX graph at ``path``.

    Raises:
        OnnxWeightsError: a tensor is missing, ambiguous or of the wrong shape.
    """
    graph = _Graph(path)
    state: dict[str, torch.Tensor] = {}
    for key, like in template.state_dict().items():
        module, _, leaf = key.rpartition(".")
        value = _find(graph, branch, module, leaf)
        # the graph holds an affine's (C,) as (1, C, 1, 1): compare without unit axes
        if value.squeeze().shape != tuple(like.squeeze().shape):
            raise OnnxWeightsError(f"{branch}.{key}: {value.shape} in the graph, "
                                   f"{tuple(like.shape)} expected")
        state[key] = torch.from_numpy(np.ascontiguousarray(value).reshape(like.shape).copy())
    return state


def _find(graph: _Graph, branch: str, module: str, leaf: str) -> np.ndarray:
    named = f"{branch}.{module}.{leaf}" if module else f"{branch}.{leaf}"
    if named in graph.initializers:
        return graph.initializers[named]
    head, _, last = module.rpartition(".")
    if last in _AFFINE_OF:  # x * gamma + beta right after its convolution
        conv_name = f"{branch}.{head + '.' if head else ''}{_AFFINE_OF[last]}.weight"
        conv = graph.only_consumer(conv_name, "Conv")
        mul = graph.only_consumer(conv.output[0], "Mul")
        if leaf == "gamma":
            return graph.constant_input(mul)
        return graph.constant_input(graph.only_consumer(mul.output[0], "Add"))
    if module == "fc" and leaf == "weight":
        matmuls = [n for n in graph.nodes if n.op_type == "MatMul" and graph.in_branch(n, branch)
                   and any(name in graph.initializers for name in n.input)]
        if len(matmuls) != 1:
            raise OnnxWeightsError(f"{len(matmuls)} MatMul nodes with weights in branch {branch}")
        return graph.constant_input(matmuls[0]).T
    raise OnnxWeightsError(f"{named} is not in the graph")


def checkpoint_of_branch(path: str | Path, branch: str) -> Checkpoint:
    """Branch ``branch`` of the gated dlib-resnet29 artifact at ``path`` as a training
    checkpoint (``lrfr finetune`` starts from it), its provenance under ``source``."""
    from models.artifact import load_metadata

    metadata = load_metadata(path)
    kwargs = {"embedding_size": metadata.embedding_size, "input_size": metadata.input_size[0]}
    state = branch_state_from_onnx(path, branch, create_backbone(BRANCH_BACKBONE, **kwargs))
    gate = metadata.gate
    head = getattr(getattr(gate, branch, None), "head", None) if gate else None
    return Checkpoint(BRANCH_BACKBONE, kwargs, state, {
        "head_name": head or "",
        "source": f"branch {branch!r} of {metadata.name} {metadata.version} "
                  f"(onnx sha256 {metadata.onnx_sha256})",
    })
