"""Gives chosen graph inputs/outputs of a serialised ONNX model new (symbolic) shapes.

CenterFace's file declares a fixed 10x3x32x32 input and lists its weights as graph
inputs too (old exporters did). The graph is fully convolutional, so the input and the
four outputs are re-declared with symbolic sizes; ``value_info`` is dropped (its shapes
were traced at the fixed size) and so are the inputs that merely repeat an initializer,
which lets ONNX Runtime fold the weights as constants (about 1.5x faster at 640x480).
Done in memory with the ``onnx`` package when the detector loads; the vendored file
stays byte-identical to its source (its SHA-256 is tested).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Dim = int | str


def with_dynamic_shapes(model: bytes, shapes: Mapping[str, Sequence[Dim]]) -> bytes:
    """``model`` with the graph inputs/outputs named in ``shapes`` re-declared as float
    tensors of those dimensions (ints fixed, strings symbolic).

    Raises:
        ValueError: ``model`` is not an ONNX model, or a name is not a graph input/output.
    """
    import onnx  # the service extra; only the detector's loading needs it
    from onnx import helper

    try:
        proto = onnx.load_from_string(model)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ValueError(f"not an ONNX model: {exc}") from exc
    graph = proto.graph
    if not graph.node:
        raise ValueError("not an ONNX model: the graph has no nodes")
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    known = {v.name for v in inputs} | {v.name for v in graph.output}
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise ValueError(f"{unknown} are not graph inputs or outputs; have {sorted(known)}")

    def declared(value: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
        if value.name not in shapes:
            return value
        return helper.make_tensor_value_info(
            value.name, onnx.TensorProto.FLOAT, list(shapes[value.name])
        )

    new_inputs = [declared(v) for v in inputs]
    new_outputs = [declared(v) for v in graph.output]
    del graph.input[:]
    graph.input.extend(new_inputs)
    del graph.output[:]
    graph.output.extend(new_outputs)
    del graph.value_info[:]
    return proto.SerializeToString()
