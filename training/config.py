"""Typed training configuration: pydantic models loaded from YAML, unknown keys rejected.

A config file is a mapping whose sections mirror :class:`TrainConfig`. A file may name
another file under the top-level key ``base`` (a path relative to itself); the base is
loaded first (recursively) and the file's mapping is merged over it section by section,
so an experiment file only says what differs from the recipe::

    base: casia_base.yaml
    head:
      name: approach2

Every section is a pydantic model that forbids unknown keys (a typo is an error that
names the valid keys) and checks every value against its type hint, strictly: an
integer field refuses ``"3"`` and ``true``, a number field takes an integer but not a
boolean, and a section left empty in YAML (``null``) gets its defaults. Pydantic's
errors become a :class:`ConfigError` that names the dotted key. Loading has no side
effects.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from training.degrade import CameraEffects


class ConfigError(ValueError):
    """A configuration file is malformed, names an unknown key or has a wrongly typed value."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2), not as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


# --------------------------------------------------------------------------- types

Number = Annotated[float, Strict()]
"""A float field: strict mode still takes an int (stored as a float) but not a bool or a string."""

_S = TypeVar("_S", bound=BaseModel)


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


Section = Annotated[_S, BeforeValidator(_none_is_empty)]
"""A section that is always present: ``null`` (a YAML key with nothing under it) is ``{}``."""


class _Section(BaseModel):
    """Base of the sections: unknown keys rejected, assignment unchecked (as a dataclass)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)


# --------------------------------------------------------------------------- sections


class UnlabelledConfig(_Section):
    """Faces without identity labels, mixed into every batch for distillation only.

    Their samples get the distillation term (towards the teacher's descriptor of the
    sharp crop, from ``cache``) and never the margin head. The faces are aligned 112
    crops, listed by a manifest (``faces-extra/manifest.csv``: ``file``, ``source``,
    ``border_frac``) or found under ``root``.

    Attributes:
        root: the folder of the crops; manifest paths and cache keys are relative to it.
        manifest: a CSV with a ``file`` column, relative to ``root`` (``None``: every
            image under ``root``, recursively).
        sources: keep only the rows whose ``source`` column is one of these
            (``None``: all), e.g. ``[aaf]`` to leave UTKFace out.
        max_border_frac: drop crops whose ``border_frac`` (the share of the crop that
            lies outside the source photo, filled black) exceeds this.
        cache: the teacher cache of these crops (``lrfr teacher-cache --kind
            unlabelled``), keyed by path relative to ``root``.
        fraction: the share of every batch taken from these faces (exactly
            ``round(fraction * B)`` samples); the rest are labelled. An epoch is one
            pass over the labelled faces; the unlabelled ones cycle on their own.
    """

    root: StrictStr = ""
    manifest: StrictStr | None = "manifest.csv"
    sources: list[StrictStr] | None = None
    max_border_frac: Number = 1.0
    cache: StrictStr = ""
    fraction: Number = 0.5


class DataConfig(_Section):
    """Where the training faces come from and how they are decoded and augmented.

    Attributes:
        kind: ``folder`` (one folder per identity, CASIA-WebFace layout), ``recordio``
            (insightface ``train.rec`` + ``train.idx``) or ``lfw_people`` (an LFW people
            list such as ``peopleDevTrain.txt``).
        root: the dataset folder (for ``recordio``: the folder holding ``train.rec``
            and ``train.idx``, or the ``.rec`` file itself; for ``lfw_people``: the LFW
            folder with ``images/`` and the people files).
        people_file: for ``lfw_people``: the people list, relative to ``root``.
        people_folds: for ``lfw_people`` with a multi-fold list (``people.txt``): the
            folds to train on (``None``: all).
        face_mode: how a file becomes a 112 crop (``training.faces``): ``aligned``
            (already aligned, resized if needed) or ``lfw`` (fixed deep-funneled box).
            ``None`` picks ``lfw`` for ``lfw_people`` and ``aligned`` otherwise.
        min_images: identities with fewer images are dropped (``lfw_people``/``folder``).
        num_workers: decoding worker processes (0: decode in the training process).
        prefetch_factor: batches each worker prepares ahead.
        flip: horizontal flip with probability 0.5.
        crop_scale: random-resized-crop area range, e.g. ``[0.8, 1.0]`` (``None``: off).
        colour_jitter: brightness/contrast/saturation jitter strength (0: off).
        limit_classes: keep only the first N identities (smoke runs).
        unlabelled: faces without identities for the distillation term
            (:class:`UnlabelledConfig`; needs ``distill``).
    """

    kind: Literal["folder", "recordio", "lfw_people"] = "folder"
    root: StrictStr = ""
    people_file: StrictStr = "peopleDevTrain.txt"
    people_folds: list[StrictInt] | None = None
    face_mode: Literal["aligned", "lfw"] | None = None
    min_images: StrictInt = 1
    num_workers: StrictInt = 4
    prefetch_factor: StrictInt = 4
    flip: StrictBool = True
    crop_scale: list[Number] | None = None
    colour_jitter: Number = 0.0
    limit_classes: StrictInt | None = None
    unlabelled: UnlabelledConfig | None = None


class CrossResConfig(_Section):
    """Cross-Resolution Batch Training (METHODS §5).

    Attributes:
        fraction: p, the share of every batch that is degraded (exactly round(p * B)).
        r_min: smallest side r (inclusive).
        r_max: largest side r (exclusive); r is uniform over the integers in
            [r_min, r_max).
        sides: alternatively, a discrete set to draw r from (overrides r_min/r_max).
        down: reduction kernel (antialiased), ``bicubic`` or ``area``.
        up: enlargement kernel back to 112.
        camera: camera effects on the degraded samples' small images (blur, noise, tone
            curve, JPEG; :class:`training.degrade.CameraEffects`, its fields as keys, ``{}``
            for its defaults); ``None``: the resize alone.
    """

    fraction: Number = 0.5
    r_min: StrictInt = 7
    r_max: StrictInt = 112
    sides: list[StrictInt] | None = None
    down: Literal["bicubic", "area", "bilinear", "lanczos"] = "bicubic"
    up: Literal["bicubic", "bilinear", "lanczos"] = "bicubic"
    camera: CameraEffects | None = None


class ModelConfig(_Section):
    """The backbone (``models.backbones.create_backbone``).

    Attributes:
        backbone: registry name (ir18, ir34, ir50, ir100, ir-tiny).
        embedding_size: D.
        dropout: before the embedding FC.
        input_size: side of the network input; crops are resized to it (bicubic).
        kwargs: further builder options, e.g. ``{width_multiplier: 0.5}``.
        init_weights: start from released weights instead of a random init (backbones
            with a ``load_pretrained`` method): ``dlib`` (dlib's face-recognition ResNet
            from the ``face-recognition-models`` package, for ``dlib-resnet29``), a path
            to such a file, or a training checkpoint (``.pt``/``.pth``) of the same
            backbone (a new schedule from its weights: a second stage). ``None``: random.
    """

    backbone: StrictStr = "ir50"
    embedding_size: StrictInt = 512
    dropout: Number = 0.0
    input_size: StrictInt = 112
    kwargs: dict[StrictStr, Any] = Field(default_factory=dict)
    init_weights: StrictStr | None = None


class HeadConfig(_Section):
    """The margin head (``models.heads.create_head``); ``params`` are checked by the head."""

    name: StrictStr = "arcface"
    params: dict[StrictStr, Any] = Field(default_factory=dict)


class OptimConfig(_Section):
    """SGD with momentum.

    Attributes:
        lr: peak learning rate (after warm-up).
        momentum: SGD momentum.
        weight_decay: L2 weight decay on convolution/linear weights and class centres.
        nesterov: Nesterov momentum.
        decay_norm_and_bias: also decay BatchNorm/PReLU parameters and biases (off:
            the usual practice, they get no weight decay).
        grad_clip: clip the global gradient norm to this value (``None``: off).
    """

    lr: Number = 0.1
    momentum: Number = 0.9
    weight_decay: Number = 5e-4
    nesterov: StrictBool = False
    decay_norm_and_bias: StrictBool = False
    grad_clip: Number | None = 5.0


class ScheduleConfig(_Section):
    """Learning-rate schedule, evaluated per iteration.

    Attributes:
        epochs: training length.
        warmup_epochs: linear warm-up from ``warmup_start`` x lr (may be fractional).
        warmup_start: starting factor of the warm-up.
        kind: ``step`` (multiply by ``gamma`` at each milestone epoch) or ``cosine``
            (from lr to ``min_lr_factor`` x lr over the epochs after warm-up).
        milestones: epochs at which ``step`` decays.
        gamma: step decay factor.
        min_lr_factor: the end of the cosine, as a factor of lr.
    """

    epochs: Number = 18
    warmup_epochs: Number = 1.0
    warmup_start: Number = 0.01
    kind: Literal["step", "cosine"] = "step"
    milestones: list[Number] = Field(default_factory=lambda: [10.0, 14.0, 16.0])
    gamma: Number = 0.1
    min_lr_factor: Number = 0.0


class EngineConfig(_Section):
    """How the loop runs.

    Attributes:
        out_dir: run folder (checkpoints, TensorBoard events, config copy).
        batch_size: images per process per step.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (bf16 where the hardware has it: CUDA with bf16, or a CPU
            with AVX512-BF16/AMX; else fp32), ``fp32``, ``bf16`` or ``fp16`` (CUDA, with
            a gradient scaler).
        channels_last: NHWC memory layout for the convolutions.
        seed: seeds model init, data order, augmentation and degradation.
        log_every: steps between TensorBoard scalar writes.
        checkpoint_every: steps between checkpoints (0: only at epoch ends and the end).
        keep_checkpoints: how many step checkpoints to keep besides ``last.pt``.
        resume: ``auto`` continues from ``out_dir/last.pt`` when present; a path resumes
            from that checkpoint; ``none`` starts fresh.
        max_steps: stop after this many steps in total (``None``: the schedule's end).
        max_minutes: stop (with a checkpoint) after this wall time of this invocation.
        skip_nonfinite: how many consecutive steps with a non-finite loss or gradient
            norm to skip (no optimiser update, counted in ``train/skipped_steps``)
            before stopping; 0 stops at the first (checked at every step).
        sync_batchnorm: SyncBatchNorm across processes under DDP.
        compile: ``torch.compile`` the backbone.
        progress: show a tqdm bar (rank 0 only).
        tensorboard: write TensorBoard scalars (rank 0 only).
    """

    out_dir: StrictStr = "runs/train"
    batch_size: StrictInt = 128
    device: StrictStr = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: StrictBool = True
    seed: StrictInt = 0
    log_every: StrictInt = 20
    checkpoint_every: StrictInt = 1000
    keep_checkpoints: StrictInt = 2
    resume: StrictStr = "auto"
    max_steps: StrictInt | None = None
    max_minutes: Number | None = None
    skip_nonfinite: StrictInt = Field(default=0, ge=0)
    sync_batchnorm: StrictBool = False
    compile: StrictBool = False
    progress: StrictBool = True
    tensorboard: StrictBool = True


class ValidationConfig(_Section):
    """Periodic LFW verification through ``training.eval``.

    Attributes:
        lfw_dir: the LFW folder (``images/`` and the pair files); empty: no validation.
        view: 1 (``pairsDevTest.txt``; for models trained on ``peopleDevTrain``, whose
            identities it does not share) or 2 (``pairs.txt``, 10 folds).
        resolutions: sides r at which both images of every pair are degraded
            (112 = untouched).
        every_steps: validate every N steps (0: only at epoch ends).
        limit_pairs: validate on a balanced subset of this many pairs (``None``: all).
        batch_size: images per forward during validation.
        at_start: also validate before the first step (the untrained baseline).
    """

    lfw_dir: StrictStr = ""
    view: Literal[1, 2] = 1
    resolutions: list[StrictInt] = Field(default_factory=lambda: [112, 28, 14, 7])
    every_steps: StrictInt = 0
    limit_pairs: StrictInt | None = None
    batch_size: StrictInt = 128
    at_start: StrictBool = False


class OctupletConfig(_Section):
    """Octuplet loss (Knoche et al. 2022, METHODS §6).

    Attributes:
        margin: the triplet margin.
        distance: ``euclidean`` on L2-normalised embeddings, or ``cosine`` (1 - cos).
        identities: P identities per batch.
        images_per_identity: K >= 2 images per identity.
        sides: r is drawn per sample from [r_min, r_max) (or from ``sides``).
        r_min: smallest side.
        r_max: largest side (exclusive).
        same_side_per_batch: one r for the whole batch instead of one per sample.
    """

    margin: Number = 0.25
    distance: Literal["euclidean", "cosine"] = "euclidean"
    identities: StrictInt = 16
    images_per_identity: StrictInt = 4
    sides: list[StrictInt] | None = None
    r_min: StrictInt = 7
    r_max: StrictInt = 32
    same_side_per_batch: StrictBool = False


class DeriveNetConfig(_Section):
    """DeriveNet reconstruction (Singh et al., TPAMI 2022, METHODS §6).

    Attributes:
        scale: s of the Derived-Margin softmax.
        alpha: α, the weight of the derived inter-class margin.
        centre_momentum: EMA momentum of the reconstruction-space class centres.
        recent_weight: λ of the ReCent loss.
        decoder_hidden: hidden width of the decoder g.
        pyramid: the multi-resolution pyramid sides (upsampled to the input size).
        target: ``embedding`` (g maps the LR embedding to the HR embedding) or ``image``
            (g reconstructs a ``image_side`` x ``image_side`` HR thumbnail).
        image_side: side of the reconstructed HR thumbnail for ``target: image``.
    """

    scale: Number = 32.0
    alpha: Number = 4.0
    centre_momentum: Number = 0.9
    recent_weight: Number = 1.0
    decoder_hidden: StrictInt = 512
    pyramid: list[StrictInt] = Field(default_factory=lambda: [8, 16, 24, 32])
    target: Literal["embedding", "image"] = "embedding"
    image_side: StrictInt = 16


class FinetuneConfig(_Section):
    """Fine-tuning of a trained model for low resolution.

    Attributes:
        checkpoint: training checkpoint to start from (its backbone; the head is not used).
        method: ``octuplet`` or ``derivenet``.
        octuplet: parameters of ``octuplet``.
        derivenet: parameters of ``derivenet``.
    """

    checkpoint: StrictStr = ""
    method: Literal["octuplet", "derivenet"] = "octuplet"
    octuplet: Section[OctupletConfig] = Field(default_factory=OctupletConfig)
    derivenet: Section[DeriveNetConfig] = Field(default_factory=DeriveNetConfig)


class HintsConfig(_Section):
    """Feature-map hints beside the descriptor distillation (``training.objectives.hints``).

    Attributes:
        layers: submodules of the backbone whose maps of a degraded face are pulled to the
            teacher's maps of the sharp face (dlib-resnet29: ``units.0`` .. ``units.13``;
            the ends of its stages are units 2, 6, 9, 12 and 13).
        weight: the weight of the mean relative squared error of the maps.
        teacher: the teacher's weights for the student's architecture: ``dlib``, a
            weights file, or a training checkpoint (``.pt``) of the same backbone.
    """

    layers: list[StrictStr] = Field(default_factory=lambda: ["units.9", "units.12"])
    weight: Number = 1.0
    teacher: StrictStr = "dlib"


class TeacherTripletConfig(_Section):
    """A batch-hard triplet term of the student against the teacher's descriptors
    (``training.objectives.distill``): per sample, P z_i is the anchor, the teacher's
    descriptors of the batch's sharp images the candidates: those of its identity
    (its own image's included) the positives, the others the negatives. Close to what
    the gated model compares, a blurred face through the student against a sharp one
    through the teacher (the graph serves z; P stays near the identity when it starts
    there). Labelled samples only.

    Attributes:
        weight: the term's weight.
        margin: the triplet margin.
        distance: ``euclidean`` on L2-normalised vectors, or ``cosine`` (1 - cos).
    """

    weight: Number = Field(default=1.0, ge=0)
    margin: Number = Field(default=0.25, ge=0)
    distance: Literal["euclidean", "cosine"] = "euclidean"


class DistillConfig(_Section):
    """Distillation from a teacher's descriptors of the sharp images (``training.teacher``).

    Beside the margin head, a learned linear projection P (D -> 128) maps the student's
    raw embedding z_i of every sample (degraded or not) towards t_i, the cached teacher
    descriptor of the sample's sharp image: loss ``weight * (1 - cos(P z_i, t_i))``,
    averaged over the samples that have a descriptor (the others are masked out).

    Attributes:
        cache: the teacher cache (``.npz`` from ``lrfr teacher-cache``), keyed by image
            path relative to ``data.root``; relative paths are taken as they are
            (from the working directory).
        weight: λ, the weight of the distillation term.
        teacher: the teacher name the cache must hold.
        projection_init: ``random`` or ``identity`` (P = I; needs D = 128: for a student
            that starts from the teacher's own weights, ``model.init_weights: dlib``).
        init_centres: start the margin head's class centres at the mean teacher
            descriptor of each identity (needs D = 128), so a student that starts from
            the teacher begins with a low classification loss instead of random centres
            pulling its features apart.
        base_weight: weight of the margin head's loss in the sum (1: the recipe; a
            student that starts from the teacher needs the head as a light regulariser:
            the teacher's descriptors fill a narrow cone, where a margin of 0.35 rad
            at s = 32 gives a loss of ~11 that would spread them apart).
        hints: feature-map hints from a frozen teacher network (:class:`HintsConfig`);
            ``None``: the descriptors alone.
        triplet: a triplet term against the teacher's descriptors
            (:class:`TeacherTripletConfig`); ``None``: none.
    """

    cache: StrictStr = ""
    weight: Number = 1.0
    teacher: StrictStr = "dlib_face_recognition_resnet_model_v1"
    projection_init: Literal["random", "identity"] = "random"
    init_centres: StrictBool = False
    base_weight: Number = 1.0
    hints: HintsConfig | None = None
    triplet: TeacherTripletConfig | None = None


class TrainConfig(_Section):
    """One training (or fine-tuning) run; every section has the recipe's defaults."""

    name: StrictStr = "run"
    data: Section[DataConfig] = Field(default_factory=DataConfig)
    crossres: Section[CrossResConfig] = Field(default_factory=CrossResConfig)
    model: Section[ModelConfig] = Field(default_factory=ModelConfig)
    head: Section[HeadConfig] = Field(default_factory=HeadConfig)
    optim: Section[OptimConfig] = Field(default_factory=OptimConfig)
    schedule: Section[ScheduleConfig] = Field(default_factory=ScheduleConfig)
    engine: Section[EngineConfig] = Field(default_factory=EngineConfig)
    validation: Section[ValidationConfig] = Field(default_factory=ValidationConfig)
    finetune: FinetuneConfig | None = None
    distill: DistillConfig | None = None

    def __init__(self, /, **data: Any) -> None:
        # model_validate calls this too; so built in code or loaded, a wrong type or range
        # is a ConfigError (a section built alone raises pydantic's ValidationError)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(exc, TrainConfig) from None

    @model_validator(mode="after")
    def check_ranges(self) -> Self:
        validate(self)
        return self


# --------------------------------------------------------------------------- checks


def validate(config: TrainConfig) -> None:
    """Range checks that a type hint cannot express.

    Raises:
        ConfigError: a value is out of range; the message names the key.
    """
    checks: list[tuple[bool, str]] = [
        (0.0 <= config.crossres.fraction <= 1.0, "crossres.fraction must be in [0, 1]"),
        (1 <= config.crossres.r_min < config.crossres.r_max, "need 1 <= crossres.r_min < r_max"),
        (
            config.crossres.sides is None or all(s >= 1 for s in config.crossres.sides),
            "crossres.sides must be positive",
        ),
        (config.engine.batch_size >= 1, "engine.batch_size must be positive"),
        (config.optim.lr > 0, "optim.lr must be positive"),
        (0 <= config.optim.momentum < 1, "optim.momentum must be in [0, 1)"),
        (config.optim.weight_decay >= 0, "optim.weight_decay must be non-negative"),
        (
            config.optim.grad_clip is None or config.optim.grad_clip > 0,
            "optim.grad_clip must be positive or null",
        ),
        (config.schedule.epochs > 0, "schedule.epochs must be positive"),
        (config.schedule.warmup_epochs >= 0, "schedule.warmup_epochs must be non-negative"),
        (0 < config.schedule.warmup_start <= 1, "schedule.warmup_start must be in (0, 1]"),
        (config.data.num_workers >= 0, "data.num_workers must be non-negative"),
        (0 <= config.data.colour_jitter < 1, "data.colour_jitter must be in [0, 1)"),
        (
            config.data.crop_scale is None
            or (len(config.data.crop_scale) == 2 and 0 < config.data.crop_scale[0]
                <= config.data.crop_scale[1] <= 1),
            "data.crop_scale must be [low, high] with 0 < low <= high <= 1",
        ),
        (config.model.input_size >= 16, "model.input_size must be at least 16"),
        (all(r >= 1 for r in config.validation.resolutions), "validation.resolutions >= 1"),
    ]
    if config.distill is not None:
        checks += [
            (bool(config.distill.cache), "distill.cache is empty: name the teacher cache"),
            (config.distill.weight >= 0, "distill.weight must be non-negative"),
        ]
    unlabelled = config.data.unlabelled
    if unlabelled is not None:
        checks += [
            (bool(unlabelled.root), "data.unlabelled.root is empty: name the crops' folder"),
            (bool(unlabelled.cache), "data.unlabelled.cache is empty: name its teacher cache"),
            (0.0 < unlabelled.fraction < 1.0, "data.unlabelled.fraction must be in (0, 1)"),
            (0.0 <= unlabelled.max_border_frac <= 1.0,
             "data.unlabelled.max_border_frac must be in [0, 1]"),
            (config.distill is not None,
             "data.unlabelled needs distill: unlabelled faces only get the distillation term"),
        ]
    if config.finetune is not None:
        octuplet = config.finetune.octuplet
        checks += [
            (octuplet.images_per_identity >= 2, "finetune.octuplet.images_per_identity >= 2"),
            (octuplet.identities >= 2, "finetune.octuplet.identities >= 2"),
            (1 <= octuplet.r_min < octuplet.r_max, "need 1 <= finetune.octuplet.r_min < r_max"),
            (
                0 <= config.finetune.derivenet.centre_momentum < 1,
                "finetune.derivenet.centre_momentum must be in [0, 1)",
            ),
            (len(config.finetune.derivenet.pyramid) >= 1, "finetune.derivenet.pyramid is empty"),
        ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# --------------------------------------------------------------------------- loading

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true/false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def _where(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    """``("data", "crop_scale", 1)`` -> ``data.crop_scale[1]``; ``()`` -> the model's name."""
    if loc[-1:] == ("[key]",):  # a mapping's key (pydantic adds the key, then "[key]")
        loc = loc[:-2]
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else part
    return where or root.__name__


def _section_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class found by following the field names ``loc`` from ``root``."""
    model = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        options = (field.annotation, *get_args(field.annotation))
        nested = [
            t for t in options
            if isinstance(t, type) and get_origin(t) is None and issubclass(t, BaseModel)
        ]
        if not nested:
            return None
        model = nested[0]
    return model


def _config_error(exc: ValidationError, root: type[BaseModel]) -> ConfigError:
    """One :class:`ConfigError` for all the errors of a pydantic validation of ``root``."""
    messages: list[str] = []
    unknown: dict[tuple[int | str, ...], list[str]] = defaultdict(list)
    for error in exc.errors():
        loc, kind, value = error["loc"], error["type"], error["input"]
        if kind == "extra_forbidden":
            unknown[loc[:-1]].append(str(loc[-1]))
            continue
        where = _where(loc, root)
        cause = error.get("ctx", {}).get("error")
        expected = _EXPECTED.get(kind)
        if kind == "literal_error":
            expected = f"one of {error['ctx']['expected']}"
        if isinstance(cause, ConfigError):  # raised by a validator: already says where
            messages.append(str(cause))
        elif expected is None:
            messages.append(f"{where}: {error['msg']}")
        elif value is None:
            messages.append(f"{where}: null is not allowed (expected {expected})")
        elif kind in ("list_type", "dict_type", "model_type"):
            messages.append(f"{where}: expected {expected}, got {type(value).__name__}")
        else:
            messages.append(f"{where}: expected {expected}, got {value!r}")
    for loc, keys in reversed(unknown.items()):
        section = _section_at(root, loc)
        valid = f"; valid keys: {list(section.model_fields)}" if section else ""
        messages.insert(0, f"{_where(loc, root)}: unknown key(s) {sorted(keys)}{valid}")
    return ConfigError("\n".join(messages))


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_raw(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The merged mapping of a config file and its chain of ``base`` files."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config base cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = _yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping")
    raw = dict(raw)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file path")
    return _merge(load_raw(path.parent / base, (*_seen, path)), raw)


def config_from_dict(raw: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a plain mapping (unknown keys rejected)."""
    if isinstance(raw, Mapping):  # keyword arguments of TrainConfig.__init__: strings
        raw = {str(key): value for key, value in raw.items()}
    try:
        return TrainConfig.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise _config_error(exc, TrainConfig) from None


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Loads a YAML config (following ``base``), merges ``overrides`` and validates it.

    Args:
        path: the experiment's YAML file.
        overrides: a nested mapping merged last, e.g. from ``--set engine.batch_size=64``.

    Raises:
        ConfigError: the file is missing or malformed, a key is unknown or a value is
            of the wrong type or range.
    """
    raw = load_raw(path)
    if overrides:
        raw = _merge(raw, overrides)
    return config_from_dict(raw)


def parse_override(text: str) -> dict[str, Any]:
    """``"engine.batch_size=64"`` -> ``{"engine": {"batch_size": 64}}`` (value parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. engine.batch_size=64)")
    parsed: Any = _yaml(value) if value.strip() else ""
    for part in reversed(key.strip().split(".")):
        parsed = {part: parsed}
    return parsed


def merge_overrides(items: list[str]) -> dict[str, Any]:
    """Merges several ``KEY=VALUE`` overrides into one nested mapping."""
    merged: dict[str, Any] = {}
    for item in items:
        merged = _merge(merged, parse_override(item))
    return merged


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as plain data (for checkpoints and the run folder's ``config.yaml``)."""
    return config.model_dump()
