"""Rewrites a quality-gated ONNX graph so that each face runs only the branch it takes.

A gated model exported from ``models.backbones.gated.QualityGated`` computes both
branches on every face and keeps one with ``Where(q >= gate, sharp, blurred)``: half
the compute is thrown away. The rewrite keeps the graph's function and contract (one
``input``, one ``embedding``; same metadata) and changes only how it is computed:

    mask = q(input) >= gate                       (the graph's own gate, on the whole batch)
    sharp_rows, blurred_rows = NonZero(mask), NonZero(Not(mask))
    sharp = SharpBranch(Gather(input, sharp_rows))      (only the sharp faces)
    blurred = BlurredBranch(Gather(input, blurred_rows))  (only the others)
    embedding = ScatterND(ScatterND(zeros, sharp_rows, sharp), blurred_rows, blurred)

Each branch is the original nodes, copied, so a mixed batch is split and scattered back
in order, and a batch of one runs one network. The rewrite needs only ``onnx`` (no
torch) and works on any graph whose output is such a ``Where`` (fp32 or quantized).

:func:`blurred_branch` shuts the gate instead: every face takes the blurred branch (the
student), whatever its q, which gives the student's z of a sharp face, an embedding the
gated graph never computes. :func:`pair_space_graph` gives both: the student on every
face, dlib's branch on the sharp ones, as the three blocks of ``models.comparison``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.comparison import PAIR_SPACE_BLOCKS

#: ``metadata.extra`` key saying how a gated graph computes its branches.
GRAPH_KEY = "gate_graph"
BRANCH_ONLY = "branch-only: each face runs the branch its q selects (gather, scatter back)"
PAIR_SPACE_FORM = ("pair-space: the student runs on every face, the sharp branch on the faces "
                   "its q selects (gather, scatter back); three blocks a face")
#: Name prefixes of the copied branches' nodes: the sharp one's, then the blurred one's.
BRANCH_PREFIXES = ("sharp_rows/", "blurred_rows/")


class GraphRewriteError(ValueError):
    """The graph is not a gated graph this rewrite understands."""


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def _ancestors(graph: onnx.GraphProto, tensor: str) -> set[int]:
    """Indices of the nodes ``tensor`` is computed from (itself included)."""
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        index = producers.get(stack.pop())
        if index is None or index in seen:
            continue
        seen.add(index)
        stack.extend(name for name in graph.node[index].input if name)
    return seen


def _input_dependent(graph: onnx.GraphProto, source: str) -> set[int]:
    """Indices of the nodes whose outputs depend on the tensor ``source``."""
    tainted = {source}
    found: set[int] = set()
    for i, node in enumerate(graph.node):  # nodes are in topological order
        if any(name in tainted for name in node.input):
            found.add(i)
            tainted.update(node.output)
    return found


def find_gate(graph: onnx.GraphProto) -> tuple[onnx.NodeProto, str]:
    """The output ``Where`` of a gated graph and its per-face boolean mask (N,).

    Raises:
        GraphRewriteError: the graph's single output is not ``Where(Unsqueeze(mask), a, b)``.
    """
    if len(graph.output) != 1 or len(graph.input) != 1:
        raise GraphRewriteError("a gated graph has one input and one output")
    producers = _producers(graph)
    where = producers.get(graph.output[0].name)
    if where is None or where.op_type != "Where":
        raise GraphRewriteError(
            f"the output is not produced by a Where node (got "
            f"{None if where is None else where.op_type}): not a gated graph, or already "
            "branch-only"
        )
    condition = producers.get(where.input[0])
    if condition is None or condition.op_type != "Unsqueeze":
        raise GraphRewriteError("the gate's condition is not Unsqueeze(mask) of a per-face mask")
    return where, condition.input[0]


def is_gated_both_branches(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is a gated graph that still runs both branches on every face."""
    try:
        find_gate(model.graph)
    except GraphRewriteError:
        return False
    return True


#: Why a graph is refused by every rewrite that needs a gate.
_NOT_GATED = ("not a gated graph: its output is neither a Where of two branches nor the "
              "branch-only rewrite's scatter")


def _gate_negation(graph: onnx.GraphProto) -> onnx.NodeProto:
    """The branch-only graph's ``Not(mask)`` that picks the blurred rows (``gate/not``)."""
    negations = [n for n in graph.node if n.name == "gate/not" and n.op_type == "Not"]
    if len(negations) != 1:
        raise GraphRewriteError(_NOT_GATED)
    return negations[0]


def _insert_never(graph: onnx.GraphProto, mask: str, name: str, *, constant: str,
                  position: int) -> None:
    """Inserts the node ``name = mask AND false`` (a mask no face passes) at ``position``,
    with its ``false`` as the initializer ``constant``."""
    graph.initializer.append(numpy_helper.from_array(np.zeros(1, dtype=bool), constant))
    graph.node.insert(position, helper.make_node("And", [mask, constant], [name], name=name))


def _copy_branch(
    graph: onnx.GraphProto, nodes: Iterable[int], *, prefix: str, renames: dict[str, str]
) -> list[onnx.NodeProto]:
    """Copies of ``nodes`` (in graph order) reading ``renames``' tensors, outputs prefixed."""
    copies = []
    for index in sorted(nodes):
        node = onnx.NodeProto()
        node.CopyFrom(graph.node[index])
        node.name = f"{prefix}{node.name}" if node.name else ""
        for slot, name in enumerate(node.input):
            if name in renames:
                node.input[slot] = renames[name]
        for slot, name in enumerate(node.output):
            if name:
                renames[name] = node.output[slot] = f"{prefix}{name}"
        copies.append(node)
    return copies


def _prune(graph: onnx.GraphProto) -> None:
    """Removes nodes and initializers nothing reads (the output excepted)."""
    while True:
        used = {name for node in graph.node for name in node.input}
        used.update(output.name for output in graph.output)
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)


def make_branch_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the gated ``model`` that runs each face through its own branch only.

    Raises:
        GraphRewriteError: ``model`` is not a gated graph (see :func:`find_gate`).
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    where, mask = find_gate(graph)
    source = graph.input[0].name
    dependent = _input_dependent(graph, source)
    gate_nodes = _ancestors(graph, mask)
    sharp_nodes = _ancestors(graph, where.input[1]) & dependent
    blurred_nodes = _ancestors(graph, where.input[2]) & dependent

    def const(name: str, values: list[int]) -> onnx.NodeProto:
        tensor = numpy_helper.from_array(np.asarray(values, dtype=np.int64), f"gate/{name}")
        return helper.make_node("Constant", [], [f"gate/{name}"], value=tensor,
                                name=f"gate/{name}")

    split = [
        const("axis0", [0]),
        const("axis1", [1]),
        helper.make_node("Not", [mask], ["gate/blurred_mask"], name="gate/not"),
    ]
    rows: dict[str, str] = {}
    for branch, flag in (("sharp", mask), ("blurred", "gate/blurred_mask")):
        split += [
            helper.make_node("NonZero", [flag], [f"gate/{branch}_nonzero"],
                             name=f"gate/{branch}_nonzero"),
            helper.make_node("Squeeze", [f"gate/{branch}_nonzero", "gate/axis0"],
                             [f"gate/{branch}_rows"], name=f"gate/{branch}_rows"),
            helper.make_node("Gather", [source, f"gate/{branch}_rows"],
                             [f"gate/{branch}_input"], axis=0, name=f"gate/{branch}_gather"),
            helper.make_node("Unsqueeze", [f"gate/{branch}_rows", "gate/axis1"],
                             [f"gate/{branch}_indices"], name=f"gate/{branch}_indices"),
        ]
        rows[branch] = f"gate/{branch}_indices"

    sharp_renames = {source: "gate/sharp_input"}
    sharp_copy = _copy_branch(graph, sharp_nodes, prefix=BRANCH_PREFIXES[0],
                              renames=sharp_renames)
    blurred_renames = {source: "gate/blurred_input"}
    blurred_copy = _copy_branch(graph, blurred_nodes, prefix=BRANCH_PREFIXES[1],
                                renames=blurred_renames)
    sharp_out = sharp_renames[where.input[1]]
    blurred_out = blurred_renames[where.input[2]]

    output = graph.output[0].name
    zero = numpy_helper.from_array(np.zeros(1, dtype=np.float32), "gate/zero")
    merge = [
        helper.make_node("Shape", [source], ["gate/batch"], start=0, end=1, name="gate/batch"),
        helper.make_node("Shape", [sharp_out], ["gate/width"], start=1, name="gate/width"),
        helper.make_node("Concat", ["gate/batch", "gate/width"], ["gate/out_shape"], axis=0,
                         name="gate/out_shape"),
        helper.make_node("ConstantOfShape", ["gate/out_shape"], ["gate/zeros"], value=zero,
                         name="gate/zeros"),
        helper.make_node("ScatterND", ["gate/zeros", rows["sharp"], sharp_out],
                         ["gate/with_sharp"], name="gate/scatter_sharp"),
        helper.make_node("ScatterND", ["gate/with_sharp", rows["blurred"], blurred_out],
                         [output], name="gate/scatter_blurred"),
    ]
    # keep: everything not computed from the input (weights, constants), and the gate itself
    kept = [node for i, node in enumerate(graph.node)
            if (i not in dependent or i in gate_nodes) and node is not where]
    del graph.node[:]
    graph.node.extend(kept + split + sharp_copy + blurred_copy + merge)
    del graph.value_info[:]  # shapes of the removed tensors; ONNX Runtime infers its own
    _prune(graph)
    if graph.output[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise GraphRewriteError("the gated graph's output is not float32")
    onnx.checker.check_model(result)
    return result


def blurred_branch(model: onnx.ModelProto) -> onnx.ModelProto:
    """The gated ``model`` with its gate shut: every face takes the blurred branch, so the
    graph gives the student's embedding of every face with the same input, output and
    casts. ``model`` is a gated graph as exported (both branches, a ``Where``) or its
    branch-only rewrite in any precision (``lrfr quantize`` rewrites before converting).
    The result is branch-only: the sharp branch runs on no row.

    Raises:
        GraphRewriteError: ``model`` is neither form of a gated graph, or its gate is
            already shut.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    if any(node.name == "gate/shut" for node in graph.node):
        raise GraphRewriteError("the gate of this graph is already shut")
    if any(node.name == "pair/every_row" for node in graph.node):
        raise GraphRewriteError("a pair-space graph already gives the student's z of every "
                                "face (its third block)")
    both = is_gated_both_branches(result)
    mask = find_gate(graph)[1] if both else _gate_negation(graph).input[0]
    shut = "gate/shut"
    for node in graph.node:
        node.input[:] = [shut if name == mask else name for name in node.input]
    producer = next((i for i, node in enumerate(graph.node) if mask in node.output), None)
    if producer is None:
        raise GraphRewriteError(f"the gate's mask {mask!r} is not computed in the graph")
    _insert_never(graph, mask, shut, constant="gate/never", position=producer + 1)
    if both:
        result = make_branch_only(result)
    # no onnx.checker here: float16 copies list their casts out of topological order,
    # which ONNX Runtime accepts (it sorts the graph itself)
    return result


def pair_space_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The gated ``model`` rewritten to give each face its pair-space vector
    (``models.comparison``): ``[g, 0, z]`` at or above the gate, ``[0, z, z]`` below it,
    each block raw (the embedder normalises blocks). The student runs on every face, dlib's
    branch on the sharp ones only, so a sharp face costs both networks and a blurred one
    the student alone. ``model`` is either form of a gated graph in any precision.

    Raises:
        GraphRewriteError: ``model`` is neither form of a gated graph, its gate is shut, or
            it is already a pair-space graph.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if is_gated_both_branches(result):
        result = make_branch_only(result)
    graph = result.graph
    names = {node.name for node in graph.node}
    if "pair/every_row" in names:
        raise GraphRewriteError("this graph already gives pair-space vectors")
    if "gate/shut" in names:
        raise GraphRewriteError("the gate of this graph is shut: it has no sharp branch left")
    by_name = {node.name: node for node in graph.node}
    negation, scatter = _gate_negation(graph), by_name.get("gate/scatter_blurred")
    if scatter is None or scatter.op_type != "ScatterND":
        raise GraphRewriteError(_NOT_GATED)
    if "gate/scatter_sharp" not in by_name:
        raise GraphRewriteError("the branch-only graph has no scatter of its sharp rows")
    # what the blurred scatter writes into: the sharp rows' embeddings, zeros elsewhere
    # (in an fp16 copy, through casts: every tensor below is in the scatter's own type)
    mask, with_sharp = negation.input[0], scatter.input[0]
    # the student's rows: every row (Not(mask AND false)); dlib's rows stay the sharp ones
    negation.input[0] = "pair/every_row"
    _insert_never(graph, mask, "pair/every_row", constant="pair/never",
                  position=list(graph.node).index(negation))
    # the blurred scatter now writes z into every row; its readers get the three blocks
    combined = scatter.output[0]
    scatter.output[0] = "pair/student"
    position = list(graph.node).index(scatter) + 1
    for offset, node in enumerate([
        helper.make_node("Unsqueeze", [mask, "gate/axis1"], ["pair/sharp_column"],
                         name="pair/sharp_column"),
        helper.make_node("Sub", ["pair/student", "pair/student"], ["pair/zeros"],
                         name="pair/zeros"),  # zeros of the student's shape and type
        helper.make_node("Where", ["pair/sharp_column", "pair/zeros", "pair/student"],
                         ["pair/blurred_only"], name="pair/blurred_only"),
        helper.make_node("Concat", [with_sharp, "pair/blurred_only", "pair/student"],
                         [combined], axis=1, name="pair/blocks"),
    ]):
        graph.node.insert(position + offset, node)
    width = graph.output[0].type.tensor_type.shape.dim
    if len(width) == 2 and width[1].HasField("dim_value"):
        width[1].dim_value *= PAIR_SPACE_BLOCKS
    return result


def same_side_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """A pair-space graph (:func:`pair_space_graph`) with the student back on the blurred
    faces only: a blurred face still gives ``[0, z, z]``, a sharp one ``[g, 0, g]`` instead
    of ``[g, 0, z]``, at the cost of one network instead of two. Its vectors compare two
    faces on the *same* side of the gate as the pair-space rule does (two sharp faces by
    g, two blurred ones by z); a sharp face against a blurred one would be compared by
    g . z, across the networks, so it is for ``/verify`` pairs the gate does not split.

    Raises:
        GraphRewriteError: ``model`` is not a pair-space graph.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    every_row = next((n for n in graph.node if n.name == "pair/every_row"), None)
    negation = next((n for n in graph.node if n.name == "gate/not"), None)
    if every_row is None or negation is None:
        raise GraphRewriteError("not a pair-space graph (lrfr quantize --to pair-space)")
    negation.input[0] = every_row.input[0]  # the student's rows: the blurred ones again
    graph.node.remove(every_row)
    for initializer in [i for i in graph.initializer if i.name == every_row.input[1]]:
        graph.initializer.remove(initializer)
    return result
