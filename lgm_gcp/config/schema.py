"""The hand-written schemas: the root config, the trainer, evaluation, a preset's reference fingerprint and
the paper tables. Every other option's schema is derived from its class signature (``derive.py``).

Each YAML extends its schema through its defaults list (``/schema/<group>/<name>@_here_``), so Hydra itself
rejects a typo'd key (``trainer.max_epoch=3``) or a wrong type (``trainer.max_epochs=three``) while
composing. ``lgm_gcp.config.validate`` adds what Hydra lets through: keys appended with ``+``/``++``,
values left ``???``, and the ranges and choices the fields carry in their metadata.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from lgm_gcp.options.fields import COUNT, DROP_RATE, NONNEG, POSITIVE, PROBABILITY, Range

# ----------------------------------------------------------------------------------- value ranges
# (the ranges are options/fields.py's, which the option classes' signatures use too)


def _ranged(default: Any, rng: Range) -> Any:
    return field(default=default, metadata={"range": rng})


def one_of(default: Any, *options: str) -> Any:
    """A string field with a fixed set of valid values, checked at start-up like a range."""
    return field(default=default, metadata={"choices": options})


def count(default: Any = MISSING) -> Any:
    """A count: an integer >= 1."""
    return _ranged(default, COUNT)


def nonneg(default: Any = MISSING) -> Any:
    """A rate, decay, size or index that may be zero."""
    return _ranged(default, NONNEG)


def count_or_auto(default: Any = "auto", low: float = 1) -> Any:
    """A count (>= ``low``) or the string ``auto``; any other string fails at start-up."""
    return field(default=default, metadata={"range": Range(low=low), "auto": True})


def positive(default: Any = MISSING) -> Any:
    """A strictly positive value (learning rates, variances, clip norms)."""
    return _ranged(default, POSITIVE)


def probability(default: Any = MISSING, high_open: bool = False) -> Any:
    """A probability or fraction in [0, 1] (or [0, 1))."""
    return _ranged(default, DROP_RATE if high_open else PROBABILITY)


def resumable(default: Any) -> Any:
    """Mark a field that a resumed run may change: it changes how a run is launched, logged or paced,
    not what it computes (``engine/checkpoint.py`` compares every other key with the checkpoint's
    config). ``default`` is a plain default or a field made by the helpers above."""
    f = default if isinstance(default, dataclasses.Field) else field(default=default)
    f.metadata = MappingProxyType({**f.metadata, "resumable": True})
    return f


# ----------------------------------------------------------------------------------- trainer


@dataclass
class TrainerConfig:
    max_epochs: int = resumable(count(30))
    # end the run here (finished, as Caffe's max_iter); the LR follows max_epochs
    max_steps: Optional[int] = resumable(count(None))
    batch_size: int = count(64)  # global batch, split across DDP ranks
    eval_batch_size: Optional[int] = resumable(count(None))
    devices: Any = resumable(count_or_auto(1))  # int, or auto (every visible GPU; 1 on CPU)
    accelerator: str = resumable(one_of("auto", "auto", "cpu", "cuda"))
    # loader worker processes per rank (image folders; in-memory datasets use none); auto: the rank's
    # share of the node's CPUs less one, 1 to 8 (lgm_gcp/data/loader.py)
    num_workers: Any = resumable(count_or_auto("auto", low=0))
    prefetch_factor: int = resumable(count(2))  # batches each worker keeps ready
    deterministic: bool = False
    sync_bn: bool = False
    log_every: int = resumable(count(20))  # steps between TensorBoard scalars
    eval_every: int = resumable(count(1))  # epochs between evaluations (the last epoch is always evaluated)
    checkpoint_every: int = resumable(nonneg(0))  # steps between mid-epoch `last` checkpoints; 0 = at epoch ends only
    auto_resume: bool = resumable(True)  # resume from <run dir>/checkpoints/last.pt when it exists
    resume: Optional[str] = resumable(None)  # resume from this checkpoint file instead
    progress: bool = resumable(True)  # progress bars when stderr is a terminal (never in logs or CI)
    # GradScaler for fp16; heads and L-GM distances stay fp32
    amp: Any = one_of(False, False, "bf16", "fp16")
    channels_last: bool = resumable(False)
    compile: Any = resumable(False)  # false | true (inductor) | a torch.compile backend name
    grad_clip: Optional[float] = positive(None)  # max global gradient norm
    # keep and evaluate an EMA of the weights (e.g. 0.9998)
    ema_decay: Optional[float] = _ranged(None, Range(0, 1, low_open=True, high_open=True))
    skip_nonfinite: bool = resumable(False)  # skip steps with a non-finite loss/gradient instead of stopping
    allow_extra: bool = False  # accept keys added with + on schema-backed groups
    force_resume: bool = resumable(False)  # resume although the config differs from the checkpoint's
    # the GCP study's loss-landscape probe every N steps (0: off; lgm_gcp/analysis/landscape.py), its step
    # sizes δ from landscape_range[0] to [1] in landscape_points steps (the study: every 500, [0.1, 75], 50)
    landscape_every: int = resumable(nonneg(0))
    landscape_range: List[float] = resumable(field(default_factory=lambda: [0.1, 75.0]))
    landscape_points: int = resumable(count(50))


# ----------------------------------------------------------------------------------- root


@dataclass
class EvalConfig:
    ten_crop: bool = False  # TenCrop evaluation (image-folder datasets)
    # the centre crop and its horizontal mirror (fast-MPN-COV's fine-grained evaluation; image-folder datasets)
    mirror: bool = False
    ten_crop_average: str = one_of("softmax", "softmax", "logits")  # what is averaged over the crops (ten or two)
    only: bool = False  # evaluate the initial weights (weights=FILE) once and stop: what lgm-gcp-eval runs


@dataclass
class ReferenceFingerprint:
    """What the paper's reference builds and trains for a preset, stated in the preset with its source.
    Documentation that tests check (tests/test_presets.py): it changes nothing a run does, and a run's
    config.yaml keeps it as the record of what the run set out to reproduce."""

    source: str = MISSING  # the paper, the reference repository and its files
    parameters: int = count()  # trainable parameters of the built network (its input size and classes)
    dropout: float = probability(0.0)  # the classifier's dropout probability (0: none)
    train_images: int = count()
    steps_per_epoch: int = count()
    lr_at_step: List[Any] = field(default_factory=list)  # [[global step, LR], ...]
    margin_at_step: List[Any] = field(default_factory=list)  # [[global step, L-GM alpha], ...]
    config: Dict[str, Any] = field(default_factory=dict)  # values the composed config must hold, nested


@dataclass
class RootConfig:
    seed: int = nonneg(0)
    reference: Optional[ReferenceFingerprint] = resumable(None)  # documentation: a resume does not compare it
    # initialise the whole network from this file: a released checkpoint of the four reference repositories,
    # a torchvision model or an lgm-gcp checkpoint, its key layout chosen by content (lgm_gcp/weights)
    weights: Optional[str] = resumable(None)  # the starting weights: a run's own checkpoint supersedes them
    # fine-tune from this file (any layout weights reads): the backbone must fill entirely, the head's tensors
    # load where their shapes agree, and the classifier (the loss's parameters) starts new, for any class count
    finetune: Optional[str] = resumable(None)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dataset: Any = MISSING
    backbone: Any = MISSING
    head: Any = MISSING
    loss: Any = MISSING
    lr_policy: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # tracker name -> its config (lgm_gcp/loggers): they record a run and change nothing it computes
    logger: Dict[str, Any] = resumable(field(default_factory=dict))


# ----------------------------------------------------------------------------------- tables (lgm-gcp-table)


@dataclass
class TableAxisConfig:
    keys: List[str] = MISSING  # config-group choices (backbone, head, ...) or dotted config keys (dataset.name)
    labels: Dict[str, str] = MISSING  # "value" or "value1,value2" -> label, in table order


@dataclass
class TableConfig:
    """A paper table: which runs make its rows and columns, what it reports, what was published."""

    title: str = MISSING
    source: str = ""  # where the published numbers come from
    metric: str = "test_top1"  # a key of metrics.json's epoch records
    second_metric: Optional[str] = None  # e.g. test_top5, shown after a slash
    error: bool = False  # report 100 - accuracy
    take: str = "final"  # final | best (the epoch with the best test top-1)
    # where a run's numbers come from: metrics (metrics.json's epoch records) or robustness
    # (robustness.json's summary, written by lgm-gcp-robustness)
    results: str = "metrics"
    extra_metrics: List[str] = field(default_factory=list)  # shown after second_metric
    rows: TableAxisConfig = field(default_factory=TableAxisConfig)
    columns: TableAxisConfig = field(default_factory=TableAxisConfig)
    select: Dict[str, str] = field(default_factory=dict)  # only runs with these values
    metafile: Optional[str] = None  # conf/metafile/<name>.yaml: the published numbers, written once there
    published: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # row label -> column label -> value
    # published models that no row trains: label -> "value (source)", listed under the table
    references: Dict[str, str] = field(default_factory=dict)


# the groups whose options have no class signature to derive a schema from (lgm_gcp/config/register.py)
HAND_SCHEMAS = {"trainer": {"trainer": TrainerConfig}}
