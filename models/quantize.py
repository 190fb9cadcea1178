"""Lower-precision copies of a model artifact: int8 (CPU) and fp16 (CUDA); and the
pair-space form of a gated one.

* **int8**: ONNX Runtime's static quantization in QDQ form (per-channel int8 weights,
  uint8 activations), its activation ranges calibrated on real face crops (by default
  the range of 99.999 % of each activation's values, not its extremes: chosen on LFW
  DevTrain, docs/benchmarks.md). The
  network's convolutions, matrix products, additions, ReLUs, pools and pads are
  quantized, except each network's first convolution and last matrix product; the
  quality gate of a gated model (its Laplacian, the threshold, the gather and scatter)
  stays in float32, so q and the branch each face takes are the float model's. A gated
  graph is made
  branch-only first (``models.branch_only``), so each branch is calibrated on the faces
  it will actually see.
* **fp16**: weights and arithmetic in float16, the input and output kept float32 (the
  contract does not change); meant for the CUDA provider. The gate again stays float32.

* **pair-space** (:func:`write_pair_space`): a gated artifact of any precision rewritten
  to give each face the three blocks of ``models.comparison`` (dlib's descriptor of the
  sharp faces, the student's z of every face), so that a sharp face and a blurred one
  are compared by the students' cosine. Its metadata says ``comparison: pair-space``,
  a new version (galleries are tied to it) and no thresholds: run ``lrfr calibrate``.

Each function writes ``model.onnx`` + ``model.json`` (the source's metadata, with
``precision`` and the measured agreement with the source), after checking the copy
against the source on the calibration crops; the callers decide what is good enough.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from models.artifact import ModelMetadata, load_metadata, write_metadata
from models.branch_only import (
    BRANCH_ONLY,
    BRANCH_PREFIXES,
    GRAPH_KEY,
    PAIR_SPACE_FORM,
    blurred_branch,
    is_gated_both_branches,
    make_branch_only,
    pair_space_graph,
)
from models.comparison import PAIR_SPACE_BLOCKS, normalise, sharp_rows
from models.embedder import to_tensor

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
#: Node-name prefixes of the gate's own nodes in a branch-only graph.
_GATE_PREFIX = "gate/"
#: The operators the int8 copy quantizes (the others compute in float32 between them).
INT8_OPS = ("Conv", "MatMul", "Add", "Relu", "AveragePool", "MaxPool", "Pad")


@dataclass(frozen=True)
class Agreement:
    """How closely a converted model reproduces its source on the same crops."""

    faces: int
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float

    def as_dict(self) -> dict[str, float | int]:
        return {"faces": self.faces, "min_cosine": self.min_cosine,
                "mean_cosine": self.mean_cosine, "max_abs_diff": self.max_abs_diff}


def _session(model: str | Path | bytes, threads: int | None = None):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _embed(session, metadata: ModelMetadata, crops: np.ndarray,  # type: ignore[no-untyped-def]
           batch: int = 32) -> np.ndarray:
    parts = [
        session.run([metadata.output_name],
                    {metadata.input_name: to_tensor(crops[i:i + batch], metadata)})[0]
        for i in range(0, len(crops), batch)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 0))


def agreement(reference: np.ndarray, other: np.ndarray) -> Agreement:
    """Cosine and largest absolute difference of two embedding sets, row by row."""
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    oth = other / np.linalg.norm(other, axis=1, keepdims=True)
    cosines = (ref * oth).sum(axis=1)
    return Agreement(
        faces=len(reference),
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        max_abs_diff=float(np.abs(reference - other).max()),
    )


def compare_models(reference: str | Path, other: str | Path, crops: np.ndarray, *,
                   threads: int | None = None) -> Agreement:
    """Agreement of two artifacts' embeddings of ``crops`` (RGB uint8 at the input size)."""
    metadata = load_metadata(reference)
    first = _embed(_session(reference, threads), metadata, crops)
    second = _embed(_session(other, threads), load_metadata(other), crops)
    return agreement(first, second)


def _gate_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes that compute a branch-only graph's gate: kept in float32."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    not_node = next((n for n in graph.node if n.name == f"{_GATE_PREFIX}not"), None)
    if not_node is None:
        return []
    names: set[str] = set()
    stack = [not_node.input[0]]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in names:
            continue
        names.add(node.name)
        stack.extend(name for name in node.input if name)
    names.update(n.name for n in graph.node if n.name.startswith(_GATE_PREFIX))
    return sorted(names)


def _float_ends(model: onnx.ModelProto) -> list[str]:
    """Each network's first convolution and last matrix product (of each branch of a
    branch-only graph): kept in float32, as the layers int8 hurts most (measured: the
    embeddings' agreement with fp32 rose from 0.99964 to 0.99972 mean cosine)."""
    compute = [n.name for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    prefixes = [p for p in BRANCH_PREFIXES if any(name.startswith(p) for name in compute)]
    groups = [[n for n in compute if n.startswith(p)] for p in prefixes] or [compute]
    return sorted({name for group in groups if group for name in (group[0], group[-1])})


def _optimise_basic(source: Path, target: Path) -> None:
    """ONNX Runtime's hardware-independent graph optimisations (constant folding,
    convolution + scale/shift fusion), written back as a plain ONNX graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])


def _calibration_batches(crops: np.ndarray, metadata: ModelMetadata, gate: float | None,
                         batch: int, seed: int) -> list[np.ndarray]:
    """Input batches of the crops; with a gate, each holds faces of both branches (an empty
    branch would leave its tensors without a range in that batch)."""
    from models.quality import laplacian_score

    order = np.random.default_rng(seed).permutation(len(crops))
    if gate is None:
        groups = [order]
    else:
        sharp = np.array([laplacian_score(crops[i]).laplacian >= gate for i in order])
        groups = [order[sharp], order[~sharp]]
        if min(len(g) for g in groups) == 0:
            raise ValueError("the calibration crops must hold faces on both sides of the gate")
    batches = []
    count = max(1, len(crops) // batch)
    for parts in zip(*(np.array_split(g, count) for g in groups), strict=True):
        batches.append(to_tensor(crops[np.concatenate(parts)], metadata))
    return batches


def _write(model: onnx.ModelProto, onnx_path: Path) -> None:
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(onnx_path))


def _stamp(source: ModelMetadata, onnx_path: Path, *, precision: Precision,
           notes: dict[str, object], branch_only: bool) -> ModelMetadata:
    extra: dict[str, object] = {**source.extra}
    if branch_only:
        extra[GRAPH_KEY] = BRANCH_ONLY
    extra[f"{precision}_conversion"] = notes
    metadata = source.model_copy(update={"precision": precision, "extra": extra})
    write_metadata(onnx_path, metadata)
    return load_metadata(onnx_path)


def write_branch_only(source: str | Path, onnx_path: str | Path, crops: np.ndarray, *,
                      min_cosine: float = 0.99999, threads: int | None = None
                      ) -> tuple[ModelMetadata, Agreement]:
    """The branch-only graph of the gated artifact ``source``, checked on ``crops``.

    Raises:
        ValueError: ``source`` is not a gated graph running both branches, or the rewrite
            disagrees with it (cosine under ``min_cosine``; both files are then removed).
    """
    onnx_path = Path(onnx_path)
    metadata = load_metadata(source)
    model = onnx.load(str(source))
    if not is_gated_both_branches(model):
        raise ValueError(f"{source} is not a gated graph that runs both branches")
    _write(make_branch_only(model), onnx_path)
    reference = _embed(_session(source, threads), metadata, crops)
    rewritten = _embed(_session(onnx_path, threads), metadata, crops)
    check = agreement(reference, rewritten)
    if not check.min_cosine >= min_cosine:
        onnx_path.unlink(missing_ok=True)
        raise ValueError(f"the branch-only graph disagrees with {source}: min cosine "
                         f"{check.min_cosine:.7f} < {min_cosine}")
    extra = {**metadata.extra, GRAPH_KEY: BRANCH_ONLY,
             "branch_only_parity": {**check.as_dict(), "against": Path(source).name}}
    write_metadata(onnx_path, metadata.model_copy(update={"extra": extra}))
    return load_metadata(onnx_path), check


def _prepared(source: str | Path) -> tuple[onnx.ModelProto, ModelMetadata, bool]:
    """The source graph, branch-only when it is gated."""
    metadata = load_metadata(source)
    if metadata.precision != "fp32":
        raise ValueError(f"{source} is already {metadata.precision}; convert the fp32 artifact")
    if metadata.comparison != "cosine":
        raise ValueError(f"{source} is a {metadata.comparison} artifact: convert the artifact "
                         "it was made from, then make the pair-space form of the copy")
    model = onnx.load(str(source))
    gated = is_gated_both_branches(model)
    return (make_branch_only(model) if gated else model), metadata, gated or (
        metadata.extra.get(GRAPH_KEY) == BRANCH_ONLY)


def quantize_int8(
    source: str | Path,
    onnx_path: str | Path,
    crops: np.ndarray,
    *,
    calibrate_method: Literal["minmax", "percentile", "entropy"] = "percentile",
    percentile: float = 99.999,
    float_nodes: Sequence[str] = (),
    reduce_range: bool = False,
    calibration_cache: str | Path | None = None,
    batch: int = 16,
    seed: int = 0,
    threads: int | None = None,
) -> tuple[ModelMetadata, Agreement]:
    """Static int8 (QDQ) copy of the fp32 artifact ``source``, calibrated on ``crops``.

    Args:
        source: an fp32 artifact (a gated one is made branch-only first).
        onnx_path: where the int8 ``.onnx`` goes (its ``.json`` beside it).
        crops: RGB uint8 (N, H, W, 3) crops at the input size, of every quality the model
            will see; for a gated model some on each side of the gate.
        calibrate_method: how activation ranges are read from the calibration outputs:
            ``percentile`` (the default: the range holding ``percentile`` % of each
            activation's values, histogrammed one batch at a time), ``minmax`` (the
            extremes) or ``entropy`` (the range keeping the histogram's entropy).
        percentile: the share of each activation's values its range covers
            (``calibrate_method="percentile"``).
        float_nodes: more nodes (names in the branch-only, basic-optimised graph, e.g.
            ``blurred_rows//blurred/units/units.0/conv1/Conv``) to keep in float32.
        reduce_range: 7-bit weights (for CPUs without VNNI, whose int8 sums can saturate).
        calibration_cache: a JSON file of activation ranges: read when it exists (the crops
            are then not run), written otherwise; for trying several settings on the
            same calibration.
        batch: crops per calibration batch.
        seed: shuffles the crops into batches.
        threads: ONNX Runtime threads for the calibration and the check.

    Returns:
        The metadata written and the agreement with ``source`` on ``crops``.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    onnx_path = Path(onnx_path)
    model, metadata, branch_only = _prepared(source)
    gate = metadata.gate.threshold if metadata.gate is not None else None
    batches = _calibration_batches(crops, metadata, gate, batch, seed)

    class _Reader(CalibrationDataReader):
        def __init__(self, items: list[np.ndarray]) -> None:
            self._items: Iterator[np.ndarray] = iter(items)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else {metadata.input_name: item}

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    cache = Path(calibration_cache) if calibration_cache is not None else None
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        onnx.save(model, str(fp32))
        # fold the affine layers after each convolution into its weights first: quantized
        # as they are, Q/DQ pairs between them would block the fusion ONNX Runtime does
        _optimise_basic(fp32, fp32)
        prepared = onnx.load(str(fp32))
        excluded_ends = _float_ends(prepared)
        names = {node.name for node in prepared.graph.node}
        unknown = sorted(set(float_nodes) - names)
        if unknown:
            raise ValueError(f"float_nodes not in the graph: {unknown[:3]}")
        kept = sorted(set(excluded_ends) | set(float_nodes))
        excluded = _gate_nodes(prepared) + kept
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        if calibrate_method != "minmax" and not (cache is not None and cache.is_file()):
            # histograms, one batch at a time: ONNX Runtime's own loop keeps every batch's
            # activations (11 GB for 1,152 crops here) and cannot stack batches whose
            # branches got different numbers of faces
            cache = cache or Path(scratch) / "ranges.json"
            calibrator = create_calibrator(
                fp32, list(INT8_OPS), augmented_model_path=str(Path(scratch) / "calib.onnx"),
                calibrate_method=methods[calibrate_method],
                providers=["CPUExecutionProvider"],
                extra_options={"symmetric": False, "percentile": percentile})
            with contextlib.redirect_stdout(io.StringIO()):  # a line per batch otherwise
                for item in batches:
                    calibrator.collect_data(_Reader([item]))
            save_tensors_data(calibrator.compute_data(), cache)
            del calibrator
        quantize_static(
            str(fp32), str(onnx_path), _Reader(batches),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(INT8_OPS),
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=methods[calibrate_method],
            calibration_providers=["CPUExecutionProvider"],
            calibration_cache_path=cache,
        )
        reference = _embed(_session(fp32, threads), metadata, crops)
    converted = _embed(_session(onnx_path, threads), metadata, crops)
    check = agreement(reference, converted)
    notes: dict[str, object] = {
        "method": f"onnxruntime static QDQ, per-channel int8 weights, uint8 activations: "
                  f"{'/'.join(INT8_OPS)}{', 7-bit weights' if reduce_range else ''}; "
                  f"float32: the gate and {', '.join(kept)}",
        "calibration": f"{len(crops)} crops, {calibrate_method}"
                       + (f" {percentile}" if calibrate_method == "percentile" else ""),
        "agreement_with_fp32": check.as_dict(),
    }
    return _stamp(metadata, onnx_path, precision="int8", notes=notes,
                  branch_only=branch_only), check


def convert_fp16(source: str | Path, onnx_path: str | Path, crops: np.ndarray, *,
                 threads: int | None = None) -> tuple[ModelMetadata, Agreement]:
    """fp16 copy of the fp32 artifact ``source`` for the CUDA provider (float32 input and
    output, the gate in float32), checked against the source on ``crops`` on the CPU."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx_path = Path(onnx_path)
    model, metadata, branch_only = _prepared(source)
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=_gate_nodes(model))
    _write(half, onnx_path)
    reference = _embed(_session(model.SerializeToString(), threads), metadata, crops)
    converted = _embed(_session(onnx_path, threads), metadata, crops)
    check = agreement(reference, converted)
    notes: dict[str, object] = {
        "method": "onnxruntime.transformers.float16, float32 input/output, the gate in float32",
        "agreement_with_fp32": {**check.as_dict(), "where": "ONNX Runtime CPU provider"},
    }
    return _stamp(metadata, onnx_path, precision="fp16", notes=notes,
                  branch_only=branch_only), check


def write_pair_space(source: str | Path, onnx_path: str | Path, crops: np.ndarray, *,
                     version: str | None = None, min_cosine: float = 0.99999,
                     threads: int | None = None) -> tuple[ModelMetadata, Agreement]:
    """The pair-space form (``models.comparison``) of the gated artifact ``source``, in
    its precision, checked on ``crops``: the block each face's gate picks equals the
    source's embedding of it, the third block of every face equals the source's student
    (its gate shut), and a sharp face's blurred block is zero.

    Args:
        version: the new artifact's version; default ``<source version>+pair-space``.
            It must differ from the source's: galleries are tied to the version, and the
            source's stored vectors are not pair-space vectors.

    Raises:
        ValueError: ``source`` is not gated, is already pair-space, the version is the
            source's, or the rewrite disagrees with the source (both files removed).
    """
    onnx_path = Path(onnx_path)
    metadata = load_metadata(source)
    if metadata.gate is None:
        raise ValueError(f"{source} is not a gated model: the pair's space needs two branches")
    if metadata.comparison != "cosine":
        raise ValueError(f"{source} is already a {metadata.comparison} artifact")
    version = version or f"{metadata.version}+pair-space"
    if version == metadata.version:
        raise ValueError(f"the pair-space artifact needs a version other than {version!r}: "
                         "galleries embedded by the source would pass for its own")
    model = onnx.load(str(source))
    _write(pair_space_graph(model), onnx_path)
    reference = _embed(_session(source, threads), metadata, crops)
    student = _embed(_session(blurred_branch(model).SerializeToString(), threads), metadata,
                     crops)
    vectors = normalise(_embed(_session(onnx_path, threads), metadata, crops), "pair-space")
    blocks = vectors.reshape(len(crops), PAIR_SPACE_BLOCKS, -1)
    sharp = sharp_rows(vectors)
    picked = np.where(sharp[:, None], blocks[:, 0], blocks[:, 1])
    check = agreement(reference, picked.astype(np.float64))
    # the one new thing the graph computes: the student's z of every face, sharp ones too
    student_check = agreement(student, blocks[:, 2].astype(np.float64))
    blurred_block_of_sharp = bool(np.any(blocks[sharp, 1] != 0))
    # written so that a NaN cosine (a block left at zero) fails too
    if not (check.min_cosine >= min_cosine and student_check.min_cosine >= min_cosine) \
            or blurred_block_of_sharp:
        onnx_path.unlink(missing_ok=True)
        raise ValueError(f"the pair-space graph disagrees with {source}: min cosine "
                         f"{check.min_cosine:.7f} with its embeddings, "
                         f"{student_check.min_cosine:.7f} with its student's "
                         f"(>= {min_cosine} wanted); sharp faces' blurred block "
                         f"{'set' if blurred_block_of_sharp else 'zero'}")
    # the source's calibration note describes thresholds this artifact does not have
    extra = {**{k: v for k, v in metadata.extra.items() if k != "calibration"},
             GRAPH_KEY: PAIR_SPACE_FORM,
             "pair_space_parity": {
        **check.as_dict(),
        "student_min_cosine": student_check.min_cosine,
        "against": f"{Path(source).name} ({metadata.version}, sha256 "
                   f"{(metadata.onnx_sha256 or 'unrecorded')[:12]})",
        "sharp_faces": int(sharp.sum()), "blurred_faces": int((~sharp).sum()),
    }}
    write_metadata(onnx_path, metadata.model_copy(update={
        "version": version,
        "comparison": "pair-space",
        "embedding_size": PAIR_SPACE_BLOCKS * metadata.embedding_size,
        "thresholds": dict.fromkeys(metadata.thresholds),
        "quality_calibration": None,
        "extra": extra,
    }))
    return load_metadata(onnx_path), check
