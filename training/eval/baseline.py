"""A pixel baseline as an ONNX artifact, built with ``onnx.helper`` (no torch).

The "embedding" is the face average-pooled to a ``grid`` x ``grid`` colour thumbnail,
flattened, with its mean removed (so the cosine of two embeddings is the correlation
of the thumbnails). It is a floor every trained model must beat, a stand-in model
for tests, and a way to time the evaluation pipeline without a network.
"""

from __future__ import annotations

from pathlib import Path

from models.artifact import ModelMetadata, write_metadata


def build_pixel_baseline(
    onnx_path: str | Path, *, grid: int = 8, input_size: int = 112, version: str = "1"
) -> ModelMetadata:
    """Writes ``onnx_path`` and its metadata; returns the metadata.

    Args:
        onnx_path: the ``.onnx`` file to write (``.json`` goes beside it).
        grid: thumbnail side; ``input_size`` must be divisible by it.
        input_size: side of the square input.
        version: metadata version string.
    """
    import onnx
    from onnx import TensorProto, helper

    if grid < 1 or input_size % grid:
        raise ValueError(f"input_size {input_size} is not divisible by grid {grid}")
    kernel = input_size // grid
    size = 3 * grid * grid
    nodes = [
        helper.make_node(
            "AveragePool", ["input"], ["pooled"], kernel_shape=[kernel, kernel],
            strides=[kernel, kernel],
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "mean"], ["embedding"]),
    ]
    input_shape: list[str | int] = ["N", 3, input_size, input_size]
    graph = helper.make_graph(
        nodes,
        "pixel_baseline",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(onnx_path))
    metadata = ModelMetadata(
        name=f"pixel-baseline-{grid}x{grid}",
        version=version,
        input_size=(input_size, input_size),
        embedding_size=size,
        backbone="pixel-baseline",
        extra={"description": "average-pooled thumbnail, mean removed"},
    )
    write_metadata(onnx_path, metadata)
    return metadata
