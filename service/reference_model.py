"""A non-learned reference embedder, built as a real ONNX artifact without torch.

This is **not** a face-recognition model: it has no trained weights. It turns the
image grey, averages it over an ``cell`` x ``cell`` grid and subtracts the mean of the
resulting vector, so the cosine of two embeddings is the correlation of two heavily
blurred thumbnails. On ORL (40 subjects, controlled light) that is enough for the same
subject to score higher than different subjects most of the time (measured: top-1
identification 0.90 with five enrolled images per subject), which makes it a small,
honest model for service tests, demos and benchmarks before a trained model exists.

The artifact follows the project contract (``models.artifact``): ``.onnx`` plus its
``.json`` metadata, input float32 NCHW RGB normalised ``(pixel - 127.5) / 127.5``.
"""

from __future__ import annotations

from pathlib import Path

from models.artifact import ModelMetadata, write_metadata

REFERENCE_MODEL_NAME = "lrfr-reference-pixels"
#: Cosine thresholds of the reference model, measured once on all ORL image pairs
#: (different-subject pairs above the threshold at the given rate); a baseline, not a claim.
REFERENCE_THRESHOLDS: dict[str, float | None] = {"1e-2": 0.80, "1e-3": 0.86, "1e-4": 0.91}


def build_reference_model(
    onnx_path: str | Path,
    *,
    version: str = "reference-1",
    input_size: int = 112,
    cell: int = 8,
    thresholds: dict[str, float | None] | None = None,
) -> ModelMetadata:
    """Writes the reference ONNX model and its metadata.

    Args:
        onnx_path: where to write the ``.onnx`` file; the ``.json`` goes beside it.
        version: the model version recorded in the metadata (galleries are tied to it).
        input_size: side of the square network input.
        cell: side of the averaging cell; the embedding has ``(input_size // cell) ** 2``
            dimensions.
        thresholds: cosine thresholds by FAR; defaults to ``REFERENCE_THRESHOLDS``.

    Returns:
        The metadata written beside the model.

    Raises:
        ValueError: ``input_size`` is not a multiple of ``cell``.
    """
    import onnx  # a dev/train dependency; the service itself only reads ONNX files
    from onnx import TensorProto, helper

    if cell <= 0 or input_size % cell:
        raise ValueError(f"input_size {input_size} must be a positive multiple of cell {cell}")
    grid = input_size // cell
    dims = grid * grid
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["grey"], axes=[1], keepdims=1),
        helper.make_node(
            "AveragePool", ["grey"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat"], ["centre"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "centre"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "reference_pixels",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["N", 3, input_size, input_size]
            )
        ],
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
        name=REFERENCE_MODEL_NAME,
        version=version,
        input_size=(input_size, input_size),
        embedding_size=dims,
        backbone=f"avgpool{cell}-grey (non-learned)",
        thresholds=dict(REFERENCE_THRESHOLDS if thresholds is None else thresholds),
        opset=17,
        extra={"note": "non-learned pixel-statistics baseline for tests and demos"},
    )
    write_metadata(onnx_path, metadata)
    return metadata
