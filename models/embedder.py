"""Runs an exported model artifact with ONNX Runtime (no torch).

Used by the service and by evaluation alike, so both feed the network the same way:
an RGB image of any size is resized to the artifact's ``input_size`` (bicubic), its
channels put in ``colour_order``, normalised with ``mean``/``std`` and laid out NCHW.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from models.artifact import ArtifactError, ModelMetadata, load_metadata
from models.comparison import normalise, queries
from models.runtime import open_session

logger = logging.getLogger(__name__)


def resize_to_input(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (H, W, 3) array of ``image`` resized to ``size`` = (height, width)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    height, width = size
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def to_tensor(pixels: Sequence[np.ndarray] | np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    """Stacks RGB (H, W, 3) arrays in [0, 255] into the network's float32 NCHW input."""
    batch = np.asarray(pixels, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB pixels, got shape {batch.shape}")
    if tuple(batch.shape[1:3]) != tuple(metadata.input_size):
        raise ValueError(f"pixels are {batch.shape[1:3]}, the model needs {metadata.input_size}")
    if metadata.colour_order == "BGR":
        batch = batch[..., ::-1]
    mean = np.asarray(metadata.mean, dtype=np.float32)
    std = np.asarray(metadata.std, dtype=np.float32)
    return np.ascontiguousarray(((batch - mean) / std).transpose(0, 3, 1, 2))


class OnnxEmbedder:
    """An ONNX model artifact loaded into an ONNX Runtime session.

    Args:
        onnx_path: the ``.onnx`` file; its ``.json`` metadata must sit beside it.
        providers: ONNX Runtime execution providers in order of preference; by default
            CUDA when this onnxruntime build offers it, else CPU.
        threads: intra-op threads for the CPU provider (``None``: ONNX Runtime decides).
        spin: whether idle intra-op threads busy-wait for the next piece of work (``None``:
            ONNX Runtime's default, they do). ``False`` lets them sleep, leaving the cores
            to the rest of the process and to other processes: on a 2-core machine shared
            with other work, a 2-face batch took 16 ms instead of 38 ms.
        branch: ``"blurred"``: only the blurred branch (the student) of a gated artifact,
            for every face whatever its q (``models.branch_only.blurred_branch``); ``None``:
            the artifact as it is.
    """

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        spin: bool | None = None,
        branch: Literal["blurred"] | None = None,
    ) -> None:
        self.path = Path(onnx_path)
        self.metadata = load_metadata(self.path)
        self.branch = branch
        source: str | bytes = str(self.path)
        same_side: bytes | None = None  # a pair-space model's one-network form
        if branch is None and self.metadata.comparison == "pair-space":
            source, same_side = self._pair_space_sources()
        if branch is not None:
            if branch != "blurred":
                raise ValueError(f"unknown branch {branch!r}; a gated artifact has 'blurred'")
            if self.metadata.gate is None:
                raise ArtifactError(f"{self.path} is not a gated model: it has no branches")
            if self.metadata.comparison == "pair-space":
                raise ArtifactError(f"{self.path} is a pair-space model: the third block of "
                                    "its vectors is already the student's z of every face")
            import onnx  # like onnxruntime, only where an artifact is run

            from models.branch_only import GraphRewriteError, blurred_branch

            try:
                source = blurred_branch(onnx.load(str(self.path))).SerializeToString()
            except GraphRewriteError as exc:
                raise ArtifactError(f"{self.path}: {exc}") from exc
            except Exception as exc:  # onnx raises protobuf and checker errors of its own
                raise ArtifactError(f"cannot read the graph of {self.path}: {exc}") from exc
        try:
            self.session = open_session(source, providers=providers, threads=threads, spin=spin)
            self._same_side = None if same_side is None else open_session(
                same_side, providers=providers, threads=threads, spin=spin)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if self.metadata.input_name not in inputs:
            raise ArtifactError(
                f"{self.path} has inputs {sorted(inputs)}, metadata names "
                f"'{self.metadata.input_name}'"
            )
        if self.metadata.output_name not in outputs:
            raise ArtifactError(
                f"{self.path} has outputs {sorted(outputs)}, metadata names "
                f"'{self.metadata.output_name}'"
            )
        self.providers = self.session.get_providers()
        logger.info(
            "loaded %s (%s) on %s", self.metadata.name, self.metadata.version, self.providers
        )

    def _pair_space_sources(self) -> tuple[bytes, bytes]:
        """The pair-space graph as read (checked against the metadata's SHA-256 again, so
        both sessions come from the file that was checked) and its one-network form."""
        import onnx

        from models.branch_only import GraphRewriteError, same_side_graph

        data = self.path.read_bytes()
        if self.metadata.onnx_sha256 and hashlib.sha256(data).hexdigest() != (
                self.metadata.onnx_sha256):
            raise ArtifactError(f"{self.path} changed while it was loaded")
        try:
            return data, same_side_graph(onnx.load_from_string(data)).SerializeToString()
        except GraphRewriteError as exc:
            raise ArtifactError(f"{self.path} says comparison 'pair-space': {exc}") from exc
        except Exception as exc:  # onnx raises protobuf errors of its own
            raise ArtifactError(f"cannot read the graph of {self.path}: {exc}") from exc

    @property
    def input_size(self) -> tuple[int, int]:
        return self.metadata.input_size

    def prepare(self, image: Image.Image) -> np.ndarray:
        """The RGB uint8 pixels of ``image`` as the network sees them."""
        return resize_to_input(image, self.metadata.input_size)

    def embed_pixels(
        self, pixels: Sequence[np.ndarray] | np.ndarray, *, same_side: bool = False
    ) -> np.ndarray:
        """Embeddings (N, D) of RGB uint8 arrays already at the input size: unit vectors,
        or for a pair-space model the stored vectors of unit blocks (``models.comparison``).

        Args:
            same_side: (pair-space models; ignored by others) the faces will be compared
                only with faces on their own side of the gate, e.g. the two faces of a
                ``/verify`` that are both sharp or both blurred: a sharp face then runs
                dlib's branch alone and its third block repeats its first
                (``models.branch_only.same_side_graph``), half the cost. A sharp face
                embedded so and compared with a blurred one is compared across the two
                networks.
        """
        if len(pixels) == 0:
            return np.zeros((0, self.metadata.embedding_size), dtype=np.float32)
        tensor = to_tensor(pixels, self.metadata)
        session = self._same_side if same_side and self._same_side is not None else self.session
        (raw,) = session.run([self.metadata.output_name], {self.metadata.input_name: tensor})
        raw = np.asarray(raw, dtype=np.float32).reshape(len(tensor), -1)
        if raw.shape[1] != self.metadata.embedding_size:
            raise ArtifactError(
                f"model returned {raw.shape[1]}-d embeddings, metadata says "
                f"{self.metadata.embedding_size}"
            )
        return normalise(raw, self.metadata.comparison)

    def queries(self, stored: np.ndarray) -> np.ndarray:
        """The vectors that this model's stored vectors are compared with (``models.comparison``):
        ``stored(a) . queries(b)`` is the similarity of faces a and b."""
        return queries(stored, self.metadata.comparison)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised embeddings of PIL images of any size and mode."""
        return self.embed_pixels([self.prepare(image) for image in images])
