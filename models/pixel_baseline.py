"""Non-learned pixel embedders as real ONNX artifacts, built with ``onnx.helper`` (no torch).

The "embedding" is the input average-pooled over ``cell`` x ``cell`` squares (after
averaging the colour channels when ``grey``), flattened, with its mean removed, so the
cosine of two embeddings is the correlation of two blurred thumbnails. Not a face
recogniser: a floor every trained model must beat, and a small honest stand-in model
for the service's tests, demos and benchmarks and for timing the evaluation pipeline.
The service's reference model (``service.reference_model``) and the evaluation's pixel
baseline (``training.eval.baseline``) are both built here.
"""

from __future__ import annotations

from pathlib import Path

from models.artifact import ModelMetadata, write_metadata


def build_pixel_model(
    onnx_path: str | Path,
    *,
    name: str,
    cell: int,
    grey: bool,
    input_size: int = 112,
    version: str = "1",
    backbone: str,
    thresholds: dict[str, float | None] | None = None,
    extra: dict[str, object] | None = None,
) -> ModelMetadata:
    """Writes the ONNX graph and its metadata beside it; returns the metadata.

    Args:
        onnx_path: the ``.onnx`` file to write (``.json`` goes beside it).
        name, version, backbone, thresholds, extra: recorded in the metadata.
        cell: side of the averaging squares; ``input_size`` must be a multiple of it.
        grey: average the colour channels first (embedding ``(input_size/cell)^2``-d),
            else keep them (``3 (input_size/cell)^2``-d).
        input_size: side of the square input.

    Raises:
        ValueError: ``input_size`` is not a positive multiple of ``cell``.
    """
    import onnx  # the service, dev and train extras carry it
    from onnx import TensorProto, helper

    if cell <= 0 or input_size % cell:
        raise ValueError(f"input_size {input_size} must be a positive multiple of cell {cell}")
    grid = input_size // cell
    dims = grid * grid * (1 if grey else 3)
    nodes = (
        [helper.make_node("ReduceMean", ["input"], ["grey"], axes=[1], keepdims=1)]
        if grey else []
    )
    nodes += [
        helper.make_node(
            "AveragePool", ["grey" if grey else "input"], ["pooled"],
            kernel_shape=[cell, cell], strides=[cell, cell],
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat"], ["centre"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "centre"], ["embedding"]),
    ]
    input_shape: list[str | int] = ["N", 3, input_size, input_size]
    graph = helper.make_graph(
        nodes,
        name.replace("-", "_"),
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dims])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lrfr"
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(onnx_path))
    metadata = ModelMetadata(
        name=name,
        version=version,
        input_size=(input_size, input_size),
        embedding_size=dims,
        backbone=backbone,
        thresholds=thresholds if thresholds is not None else {},
        opset=17,
        extra=extra or {},
    )
    write_metadata(onnx_path, metadata)
    return metadata
