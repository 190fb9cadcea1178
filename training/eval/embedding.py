"""One embedding interface over an ONNX artifact, a training checkpoint or a module.

Every model takes RGB uint8 (N, 112, 112, 3) pixels and returns L2-normalised float32
embeddings (N, D). ONNX artifacts run through :class:`models.embedder.OnnxEmbedder`
(the service's own code path); checkpoints are rebuilt with
:class:`models.checkpoint.Checkpoint`. torch is imported only when a torch
model is actually used, so ONNX evaluation needs no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from models.comparison import Comparison, normalise, queries

if TYPE_CHECKING:
    from models.artifact import ModelMetadata

logger = logging.getLogger(__name__)

#: File endings read as training checkpoints (anything else must be ``.onnx``).
CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".tar"})


@runtime_checkable
class EmbeddingModel(Protocol):
    """What evaluation needs from a model."""

    @property
    def input_size(self) -> tuple[int, int]: ...

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """L2-normalised (N, D) embeddings of RGB uint8 (N, H, W, 3) at ``input_size``."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready metadata identifying the model in results."""
        ...


def artifact_metadata(model: EmbeddingModel) -> ModelMetadata | None:
    """The metadata of an ONNX artifact's model (:class:`OnnxModel`); None for others."""
    return model.embedder.metadata if isinstance(model, OnnxModel) else None


def comparison_of(model: EmbeddingModel) -> Comparison:
    """How ``model``'s embeddings are compared (``models.comparison``): an ONNX artifact's
    metadata says; every other model compares by cosine."""
    metadata = artifact_metadata(model)
    return "cosine" if metadata is None else metadata.comparison


def query_side(model: EmbeddingModel, stored: np.ndarray) -> np.ndarray:
    """The vectors ``stored`` embeddings of ``model`` are compared with: ``a . query_side(b)``
    is the similarity of a and b under the model's comparison."""
    return queries(stored, comparison_of(model))


class FlipAveraged:
    """Test-time flip averaging around a model: the embedding of a face is the normalised
    sum of the model's embeddings of it and of its mirror image (twice the network time)."""

    def __init__(self, model: EmbeddingModel) -> None:
        comparison = comparison_of(model)
        if comparison != "cosine":
            raise ValueError("flip averaging needs one unit vector per face; this model's "
                             f"comparison is {comparison!r} (three blocks a face)")
        self.model = model

    @property
    def input_size(self) -> tuple[int, int]:
        return self.model.input_size

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        mirrored = np.ascontiguousarray(pixels[:, :, ::-1])  # (N, H, W, 3): W reversed
        return normalise(self.model.embed_pixels(pixels) + self.model.embed_pixels(mirrored))

    def describe(self) -> dict[str, Any]:
        return self.model.describe()  # results record the setting under settings.flip


class OnnxModel:
    """An ONNX artifact (``model.onnx`` + ``model.json``) run by ONNX Runtime."""

    def __init__(
        self, path: str | Path, *, threads: int | None = None,
        branch: Literal["blurred"] | None = None,
    ) -> None:
        from models.embedder import OnnxEmbedder

        self.path = Path(path)
        self.embedder = OnnxEmbedder(self.path, threads=threads, branch=branch)

    @property
    def branch(self) -> str | None:
        """The one branch of a gated artifact this model runs (None: the artifact)."""
        return self.embedder.branch

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.embedder.input_size)  # type: ignore[return-value]

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.embedder.embed_pixels(pixels)

    def describe(self) -> dict[str, Any]:
        meta = self.embedder.metadata.model_dump(mode="json")
        keep = ("name", "version", "backbone", "head", "embedding_size", "training_data",
                "git_commit", "created_at", "onnx_sha256")
        described = {"format": "onnx", "path": str(self.path), **{k: meta.get(k) for k in keep}}
        return {**described, "branch": self.branch} if self.branch else described


class TorchModuleModel:
    """A backbone ``nn.Module`` (architecture contract: normalised RGB NCHW -> raw z).

    Used directly by training-time validation, and by :class:`TorchCheckpointModel`;
    the module runs in evaluation mode and gets its previous mode back afterwards.
    """

    def __init__(
        self,
        module: Any,
        *,
        name: str = "torch-module",
        device: str = "cpu",
        input_size: int = 112,
        info: dict[str, Any] | None = None,
    ) -> None:
        import torch

        self._torch = torch
        self.module = module.to(device)
        self.device = torch.device(device)
        self._input_size = (input_size, input_size)
        self._info = {"format": "torch", "name": name, **(info or {})}

    @property
    def input_size(self) -> tuple[int, int]:
        return self._input_size

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        batch = np.asarray(pixels)
        if batch.ndim != 4 or batch.shape[-1] != 3 or tuple(batch.shape[1:3]) != self.input_size:
            raise ValueError(f"expected (N, {self.input_size}, 3) RGB pixels, got {batch.shape}")
        if len(batch) == 0:
            raise ValueError("no pixels to embed")
        tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        tensor = (tensor.permute(0, 3, 1, 2).float() - 127.5) / 127.5
        was_training = self.module.training  # a training loop's module: restore its mode
        self.module.eval()
        try:
            with torch.inference_mode():
                raw = self.module(tensor)
        finally:
            self.module.train(was_training)
        if isinstance(raw, (tuple, list)):  # backbones that also return the norm
            raw = raw[0]
        return normalise(raw.float().cpu().numpy())

    def describe(self) -> dict[str, Any]:
        return dict(self._info)


class TorchCheckpointModel(TorchModuleModel):
    """The backbone of a training checkpoint (``backbone_name``, ``backbone_kwargs``,
    ``backbone_state``). Loading unpickles the file: only load checkpoints you trust."""

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        from models.checkpoint import Checkpoint

        self.path = Path(path)
        checkpoint = Checkpoint.load(self.path)
        backbone, backbone_name = checkpoint.build_backbone().eval(), checkpoint.backbone_name
        info = {
            "format": "torch-checkpoint",
            "path": str(self.path),
            "backbone": backbone_name,
            "backbone_kwargs": {
                k: v for k, v in checkpoint.backbone_kwargs.items()
                if isinstance(v, (int, float, str, bool, type(None)))
            },
            "head": checkpoint.get("head_name"),
            "step": checkpoint.get("step"),
            "epoch": checkpoint.get("epoch"),
        }
        super().__init__(
            backbone, name=self.path.stem, device=device,
            input_size=int(getattr(backbone, "input_size", 112)), info=info,
        )


class DlibModel:
    """dlib's face recogniser with its own alignment, for comparisons (``--model dlib``).

    Each 112 crop (degraded or not) is padded by edge replication (dlib's chip reaches
    past the crop's bottom), dlib's 5-point shape predictor finds the landmarks inside
    the face rectangle of ``training.teacher.face_rectangle`` and dlib cuts and
    describes its own 150x150 chip: what a user of the face_recognition library gets
    on an aligned face. Needs the ``train-teacher`` extra. The descriptors are
    L2-normalised here; dlib's own rule (Euclidean 0.6) is the same ranking.

    Args:
        threads: crops described in parallel (dlib releases the GIL while it computes).
    """

    #: Edge replication around every crop, in pixels of the 112 crop.
    PAD = 16

    def __init__(self, *, threads: int | None = None) -> None:
        from training.teacher import DlibTeacher, face_rectangle

        self.teacher = DlibTeacher(face_mode="aligned")
        self._rectangle = face_rectangle
        self.threads = max(1, threads or 1)

    @property
    def input_size(self) -> tuple[int, int]:
        return (112, 112)

    def _describe(self, crop: np.ndarray) -> np.ndarray:
        dlib = self.teacher._dlib
        side = crop.shape[0]
        padded = np.ascontiguousarray(np.pad(crop, ((self.PAD,) * 2, (self.PAD,) * 2, (0, 0)),
                                             mode="edge"))
        left, top, right, bottom = self._rectangle(side, side, "aligned")
        rect = dlib.rectangle(left + self.PAD, top + self.PAD, right + self.PAD,
                              bottom + self.PAD)
        shape = self.teacher.predictor(padded, rect)
        return np.asarray(self.teacher.model.compute_face_descriptor(padded, shape),
                          dtype=np.float32)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        from concurrent.futures import ThreadPoolExecutor

        batch = np.asarray(pixels, dtype=np.uint8)
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) RGB pixels, got {batch.shape}")
        with ThreadPoolExecutor(self.threads) as pool:
            rows = list(pool.map(self._describe, batch))
        return normalise(np.stack(rows))

    def describe(self) -> dict[str, Any]:
        from training.teacher import TEACHER_NAME

        return {"format": "dlib", "name": TEACHER_NAME, "alignment": "dlib 5-point chip"}


def load_model(
    path: str | Path, *, device: str = "cpu", threads: int | None = None,
    branch: Literal["blurred"] | None = None,
) -> EmbeddingModel:
    """An ONNX artifact (``.onnx``, or a folder holding ``model.onnx``), a checkpoint, or
    ``dlib`` (dlib's face recogniser, :class:`DlibModel`); ``branch="blurred"``: only the
    student of a gated ONNX artifact, for every face."""
    if branch is not None and (str(path) == "dlib" or Path(path).suffix in CHECKPOINT_SUFFIXES):
        raise ValueError("a branch can only be chosen in a gated ONNX artifact")
    if str(path) == "dlib":
        return DlibModel(threads=threads)
    path = Path(path)
    if path.is_dir():
        path = path / "model.onnx"
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if path.suffix == ".onnx":
        return OnnxModel(path, threads=threads, branch=branch)
    if path.suffix in CHECKPOINT_SUFFIXES:
        return TorchCheckpointModel(path, device=device)
    raise ValueError(
        f"{path}: unknown model format; use an .onnx artifact or a checkpoint "
        f"({', '.join(sorted(CHECKPOINT_SUFFIXES))})"
    )


class PixelBatches(Protocol):
    """Pixels produced a slice at a time (e.g. degraded on demand)."""

    def __len__(self) -> int: ...

    def __getitem__(self, item: slice) -> np.ndarray: ...


def embed_batched(
    model: EmbeddingModel,
    pixels: np.ndarray | Sequence[np.ndarray] | PixelBatches,
    *,
    batch_size: int = 128,
    progress: bool = True,
    desc: str = "embedding",
) -> np.ndarray:
    """Embeds ``pixels`` (N, H, W, 3) ``batch_size`` at a time, with a progress bar."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    total = len(pixels)
    chunks = []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for begin in range(0, total, batch_size):
            batch = np.asarray(pixels[begin : begin + batch_size])
            chunks.append(np.asarray(model.embed_pixels(batch), dtype=np.float32))
            bar.update(len(batch))
    if not chunks:
        raise ValueError("no images to embed")
    return np.concatenate(chunks)
