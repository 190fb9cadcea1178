"""Export a backbone to the model artifact: ``model.onnx`` + ``model.json``.

The exporter writes the ONNX graph (legacy TorchScript exporter, opset >= 17, dynamic
batch axis, input ``input``, output ``embedding``), checks that ONNX Runtime reproduces
the PyTorch embeddings (cosine >= ``min_cosine`` on random inputs of several batch
sizes) and only then writes the metadata beside it. A failed check removes both files,
so a half-valid artifact never reaches the service. A quality-gated backbone
(``models.backbones.gated``) gets the ``gate`` section: the gated checkpoint's record
(``training.gate``), checked against the graph's own threshold, and its graph is
rewritten so each face runs only the branch it takes (``models.branch_only``).
"""

from __future__ import annotations

import copy
import logging
import subprocess
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from models.artifact import (
    GateBranch,
    GateInfo,
    ModelMetadata,
    load_metadata,
    metadata_path,
    write_metadata,
)
from models.backbones.gated import QualityGated
from models.branch_only import BRANCH_ONLY, GRAPH_KEY, make_branch_only
from models.checkpoint import Checkpoint, CheckpointError

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


class ExportError(RuntimeError):
    """The ONNX export failed or ONNX Runtime does not reproduce the PyTorch model."""


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit checked out at ``cwd`` (default: this repository), or ``None``."""
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit or None


def _onnx_embeddings(onnx_path: Path | bytes, batch: np.ndarray) -> np.ndarray:
    """Runs the exported graph (a file or its bytes) with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    source = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    return np.asarray(output, dtype=np.float64)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-300)


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    *,
    input_size: int,
    batch_sizes: Sequence[int] = (1, 2, 4),
    min_cosine: float = 0.9999,
    seed: int = 0,
) -> float:
    """Compares PyTorch and ONNX Runtime embeddings on random inputs.

    Args:
        model: the module in evaluation mode.
        onnx_path: its exported graph.
        input_size: side of the square input.
        batch_sizes: one random batch of each size is compared (exercises the dynamic axis).
        min_cosine: the least cosine accepted between the two embeddings of any input.
        seed: seed of the random inputs, so failures are reproducible.

    Returns:
        The smallest cosine seen.

    Raises:
        ExportError: some cosine is below ``min_cosine``, not finite, or the shapes differ.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    worst = 1.0
    for size in batch_sizes:
        # inputs in the normalised pixel range [-1, 1] the network sees
        batch = torch.rand(size, 3, input_size, input_size, generator=generator) * 2.0 - 1.0
        with torch.no_grad():
            expected = model(batch.to(device)).float().cpu().numpy()
        actual = _onnx_embeddings(Path(onnx_path), batch.numpy())
        if actual.shape != expected.shape:
            raise ExportError(
                f"ONNX output shape {actual.shape} differs from PyTorch {expected.shape} "
                f"for batch size {size}"
            )
        cosines = _row_cosines(expected, actual)
        smallest = float(np.min(cosines))
        # written so that NaN fails the check
        if not smallest >= min_cosine:
            raise ExportError(
                f"ONNX Runtime disagrees with PyTorch: cosine {smallest:.6f} < {min_cosine} "
                f"for batch size {size}"
            )
        worst = min(worst, smallest)
    return worst


#: A gated checkpoint without ``training.gate``'s record still states the threshold.
_UNRECORDED = GateBranch(name="not recorded", source="not recorded in the checkpoint")


def gate_info(backbone: nn.Module, gate: GateInfo | None) -> GateInfo | None:
    """The ``gate`` metadata of ``backbone``: ``gate`` checked against the graph, or, for a
    gated graph without a record, its threshold with branches 'not recorded'.

    Raises:
        ValueError: a record for a graph that is not gated, or with another threshold.
    """
    if not isinstance(backbone, QualityGated):
        if gate is not None:
            raise ValueError(f"a gate record for {type(backbone).__name__}, which is not gated")
        return None
    if gate is None:
        return GateInfo(threshold=backbone.gate, sharp=_UNRECORDED, blurred=_UNRECORDED,
                        chosen_on="not recorded in the checkpoint")
    if gate.threshold != backbone.gate:
        raise ValueError(
            f"the gate record says q >= {gate.threshold}, the graph switches at {backbone.gate}"
        )
    return gate


def _rewrite_branch_only(onnx_path: Path, *, side: int, gate: float, min_cosine: float,
                         seed: int = 0) -> float:
    """Rewrites the gated graph at ``onnx_path`` branch-only; returns the least cosine
    between the two graphs on noise images either side of the gate (small amplitudes have
    a low Laplacian q)."""
    import onnx

    both = onnx.load(str(onnx_path))
    rewritten = make_branch_only(both)
    rng = np.random.default_rng(seed)
    # amplitude a in the normalised range: q grows with a; 1e-4 is far under any useful gate
    amplitudes = [1.0, 1e-4, 0.3, 3e-4, 0.1, 1e-3, 0.03, 0.01]
    batch = np.stack([rng.uniform(-a, a, (3, side, side)) for a in amplitudes]).astype(np.float32)
    onnx.save(rewritten, str(onnx_path))
    expected = _onnx_embeddings(both.SerializeToString(), batch)
    actual = _onnx_embeddings(onnx_path, batch)
    worst = float(np.min(_row_cosines(expected, actual)))
    if not worst >= min_cosine:
        raise ExportError(f"the branch-only graph disagrees with the gated graph: cosine "
                          f"{worst:.6f} < {min_cosine} (gate at q {gate})")
    return worst


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def export_onnx(
    backbone: nn.Module,
    onnx_path: str | Path,
    *,
    name: str,
    version: str,
    backbone_name: str,
    head: str | None = None,
    training_data: str | None = None,
    input_size: int | None = None,
    extra: Mapping[str, object] | None = None,
    gate: GateInfo | None = None,
    opset: int = 17,
    parity_samples: int = 4,
    min_cosine: float = 0.9999,
    branch_only: bool = True,
) -> ModelMetadata:
    """Exports ``backbone`` to ``onnx_path`` and writes its metadata beside it.

    The backbone is copied and put in evaluation mode; the caller's module is untouched.

    Args:
        backbone: maps (N, 3, H, W) normalised RGB to raw embeddings (N, D).
        onnx_path: where the ``.onnx`` file goes; the ``.json`` metadata goes beside it.
        name: human name of the model (metadata ``name``).
        version: version string (metadata ``version``).
        backbone_name: registry name of the backbone (metadata ``backbone``).
        head: the margin head it was trained with; for a gated backbone default
            ``gate.head_label()``.
        training_data: a short description of the training set.
        input_size: side of the square input; default ``backbone.input_size`` or 112.
        extra: free-form notes for the metadata.
        gate: the quality gate's record, for a gated backbone (see :func:`gate_info`).
        opset: ONNX opset, at least 17.
        parity_samples: the largest batch of the parity check (batches 1, 2 and this).
        min_cosine: least PyTorch/ONNX Runtime cosine accepted, in (0, 1].
        branch_only: for a gated backbone, rewrite the graph so each face runs only the
            branch its q selects (``models.branch_only``; checked against the graph that
            runs both, on inputs either side of the gate).

    Returns:
        The metadata written (with the ONNX file's SHA-256 and the git commit).

    Raises:
        ValueError: invalid arguments.
        ExportError: export failed or the parity check failed (both files are removed).
    """
    if opset < 17:
        raise ValueError(f"opset must be at least 17, got {opset}")
    if parity_samples < 1:
        raise ValueError(f"parity_samples must be at least 1, got {parity_samples}")
    if not 0.0 < min_cosine <= 1.0:
        raise ValueError(f"min_cosine must be in (0, 1], got {min_cosine}")
    gate = gate_info(backbone, gate)
    if head is None and gate is not None:
        head = gate.head_label()
    side = int(input_size if input_size is not None else getattr(backbone, "input_size", 112))
    onnx_path = Path(onnx_path)
    if onnx_path.suffix != ".onnx":
        raise ValueError(f"the model file must end in .onnx, got {onnx_path}")
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path = metadata_path(onnx_path)
    _remove(meta_path)  # a stale metadata file must not pair with the new graph

    model = copy.deepcopy(backbone).eval()
    device = next(model.parameters()).device
    # batch 2: BatchNorm1d in eval mode is fine with any batch, but tracing at 1 can
    # specialise shapes; the dynamic axis is declared explicitly anyway
    dummy = torch.zeros(2, 3, side, side, device=device)
    try:
        with warnings.catch_warnings():
            # the legacy TorchScript exporter is chosen on purpose (dynamo=False): it
            # handles this static graph with a plain dynamic batch axis
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                model,
                (dummy,),
                str(onnx_path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many unrelated types
        _remove(onnx_path)
        raise ExportError(f"torch.onnx.export failed for {backbone_name}: {exc}") from exc

    batch_sizes = sorted({1, min(2, parity_samples), parity_samples})
    try:
        worst = check_parity(
            model, onnx_path, input_size=side, batch_sizes=batch_sizes, min_cosine=min_cosine
        )
        with torch.no_grad():
            embedding_size = int(model(dummy[:1]).shape[1])
    except Exception:
        _remove(onnx_path)
        raise
    logger.info("ONNX parity ok: min cosine %.8f over batches %s", worst, batch_sizes)
    notes: dict[str, object] = {"parity_min_cosine": worst}
    if gate is not None and branch_only:
        try:
            notes["branch_only_parity_min_cosine"] = _rewrite_branch_only(
                onnx_path, side=side, gate=gate.threshold, min_cosine=min_cosine)
        except Exception:
            _remove(onnx_path)
            raise
        notes[GRAPH_KEY] = BRANCH_ONLY

    metadata = ModelMetadata(
        name=name,
        version=version,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        input_size=(side, side),
        embedding_size=embedding_size,
        backbone=backbone_name,
        head=head,
        training_data=training_data,
        git_commit=git_commit(),
        opset=opset,
        gate=gate,
        extra={**notes, **(dict(extra) if extra else {})},
    )
    write_metadata(onnx_path, metadata)
    logger.info("wrote %s and %s", onnx_path, meta_path)
    return load_metadata(onnx_path)  # re-read: exactly what the service will see


CheckpointLike = Checkpoint | Mapping[str, Any] | str | Path


def as_checkpoint(checkpoint: CheckpointLike) -> Checkpoint:
    """A :class:`Checkpoint` from itself, its dict or its path (loading unpickles: only
    load checkpoints you trust)."""
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    if isinstance(checkpoint, Mapping):
        return Checkpoint.from_dict(checkpoint)
    return Checkpoint.load(checkpoint)


def backbone_from_checkpoint(checkpoint: CheckpointLike) -> tuple[nn.Module, str]:
    """Rebuilds the backbone of a training checkpoint.

    Args:
        checkpoint: a :class:`Checkpoint`, its dict, or the path of a saved one.

    Returns:
        ``(backbone, backbone_name)`` with the trained weights, in evaluation mode.

    Raises:
        CheckpointError: a required key is missing or the weights do not fit the backbone.
    """
    loaded = as_checkpoint(checkpoint)
    return loaded.build_backbone().eval(), loaded.backbone_name


def export_checkpoint(
    checkpoint: CheckpointLike,
    onnx_path: str | Path,
    *,
    name: str,
    version: str,
    head: str | None = None,
    training_data: str | None = None,
    **kwargs: Any,
) -> ModelMetadata:
    """Exports the backbone of a training checkpoint (see :func:`export_onnx`).

    ``head`` defaults to the checkpoint's ``head_name`` when present; a gated checkpoint's
    ``gate`` record (``training.gate``) becomes the metadata's ``gate``, and then ``head``
    defaults to its label. Further keyword arguments (``opset``, ``min_cosine``, ``extra``
    ...) go to :func:`export_onnx`.

    Raises:
        CheckpointError: the checkpoint does not rebuild, or its gate record is invalid.
    """
    loaded = as_checkpoint(checkpoint)
    backbone, backbone_name = backbone_from_checkpoint(loaded)
    gate = _gate_record(loaded)
    if head is None and gate is not None:
        head = gate.head_label()
    if head is None and loaded.get("head_name") is not None:
        head = str(loaded.get("head_name"))
    return export_onnx(
        backbone,
        onnx_path,
        name=name,
        version=version,
        backbone_name=backbone_name,
        head=head,
        training_data=training_data,
        gate=gate,
        **kwargs,
    )


def _gate_record(checkpoint: Checkpoint) -> GateInfo | None:
    record = checkpoint.get("gate")
    if record is None:
        return None
    try:
        return GateInfo.model_validate(record)
    except ValidationError as exc:
        raise CheckpointError(f"the checkpoint's gate record is invalid:\n{exc}") from exc
