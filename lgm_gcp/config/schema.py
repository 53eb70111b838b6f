"""The configs that name no class: the root, the trainer, evaluation and a preset's reference fingerprint, with
the paper tables. Their fields are written in the vocabulary of every option's signature (``Annotated`` types
with ``lgm_gcp.options.fields``' ranges and markers, ``Literal`` choices), and ``derive.schema_of`` turns each
into the schema Hydra composes with, as it turns an option class's signature: one way to declare a field.

Each YAML extends its schema through its defaults list (``/schema/<group>/<name>@_here_``), so Hydra itself
rejects a typo'd key (``trainer.max_epoch=3``) or a wrong type (``trainer.max_epochs=three``) while
composing. ``lgm_gcp.config.validate`` adds what Hydra lets through: keys appended with ``+``/``++``,
values left ``???``, and the ranges and choices the fields carry in their metadata. The engine reads the
resolved trainer and evaluation values as these dataclasses (``engine/train.py``: ``typed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from omegaconf import MISSING

from lgm_gcp.options.derive import schema_of
from lgm_gcp.options.fields import COUNT, NONNEG, OR_AUTO, POSITIVE, RESUMABLE, Count, Index, Probability, Range

# ----------------------------------------------------------------------------------- trainer

CountOrAuto = Annotated[Union[int, str], COUNT, OR_AUTO]


@dataclass
class TrainerConfig:
    max_epochs: Annotated[int, COUNT, RESUMABLE] = 30
    # end the run here (finished, as Caffe's max_iter); the LR follows max_epochs
    max_steps: Annotated[Optional[int], COUNT, RESUMABLE] = None
    batch_size: Count = 64  # global batch, split across DDP ranks
    eval_batch_size: Annotated[Optional[int], COUNT, RESUMABLE] = None
    devices: Annotated[CountOrAuto, RESUMABLE] = 1  # int, or auto (every visible GPU; 1 on CPU)
    accelerator: Annotated[Literal["auto", "cpu", "cuda"], RESUMABLE] = "auto"
    # loader worker processes per rank (image folders; in-memory datasets use none); auto: the rank's
    # share of the node's CPUs less one, 1 to 8 (lgm_gcp/data/loader.py)
    num_workers: Annotated[Union[int, str], NONNEG, OR_AUTO, RESUMABLE] = "auto"
    prefetch_factor: Annotated[int, COUNT, RESUMABLE] = 2  # batches each worker keeps ready
    deterministic: bool = False
    sync_bn: bool = False
    log_every: Annotated[int, COUNT, RESUMABLE] = 20  # steps between TensorBoard scalars
    eval_every: Annotated[int, COUNT, RESUMABLE] = 1  # epochs between evaluations (the last epoch is always evaluated)
    # steps between mid-epoch `last` checkpoints; 0 = at epoch ends only
    checkpoint_every: Annotated[Index, RESUMABLE] = 0
    auto_resume: Annotated[bool, RESUMABLE] = True  # resume from <run dir>/checkpoints/last.pt when it exists
    resume: Annotated[Optional[str], RESUMABLE] = None  # resume from this checkpoint file instead
    progress: Annotated[bool, RESUMABLE] = True  # progress bars when stderr is a terminal (never in logs or CI)
    # GradScaler for fp16; heads and L-GM distances stay fp32
    amp: Literal[False, "bf16", "fp16"] = False
    channels_last: Annotated[bool, RESUMABLE] = False
    compile: Annotated[Union[bool, str], RESUMABLE] = False  # false | true (inductor) | a torch.compile backend name
    grad_clip: Annotated[Optional[float], POSITIVE] = None  # max global gradient norm
    # keep and evaluate an EMA of the weights (e.g. 0.9998)
    ema_decay: Annotated[Optional[float], Range(0, 1, low_open=True, high_open=True)] = None
    # skip steps with a non-finite loss/gradient instead of stopping
    skip_nonfinite: Annotated[bool, RESUMABLE] = False
    allow_extra: bool = False  # accept keys added with + on schema-backed groups
    force_resume: Annotated[bool, RESUMABLE] = False  # resume although the config differs from the checkpoint's
    # the GCP study's loss-landscape probe every N steps (0: off; lgm_gcp/analysis/landscape.py), its step
    # sizes δ from landscape_range[0] to [1] in landscape_points steps (the study: every 500, [0.1, 75], 50)
    landscape_every: Annotated[Index, RESUMABLE] = 0
    landscape_range: Annotated[List[float], RESUMABLE] = field(default_factory=lambda: [0.1, 75.0])
    landscape_points: Annotated[int, COUNT, RESUMABLE] = 50


# ----------------------------------------------------------------------------------- root


@dataclass
class EvalConfig:
    ten_crop: bool = False  # TenCrop evaluation (image-folder datasets)
    # the centre crop and its horizontal mirror (fast-MPN-COV's fine-grained evaluation; image-folder datasets)
    mirror: bool = False
    ten_crop_average: Literal["softmax", "logits"] = "softmax"  # what is averaged over the crops (ten or two)
    only: bool = False  # evaluate the initial weights (weights=FILE) once and stop: what lgm-gcp-eval runs


@dataclass
class ReferenceFingerprint:
    """What the paper's reference builds and trains for a preset, stated in the preset with its source.
    Documentation that tests check (tests/test_presets.py): it changes nothing a run does, and a run's
    config.yaml keeps it as the record of what the run set out to reproduce."""

    source: str = MISSING  # the paper, the reference repository and its files
    parameters: Count = MISSING  # trainable parameters of the built network (its input size and classes)
    dropout: Probability = 0.0  # the classifier's dropout probability (0: none)
    train_images: Count = MISSING
    steps_per_epoch: Count = MISSING
    lr_at_step: List[Any] = field(default_factory=list)  # [[global step, LR], ...]
    margin_at_step: List[Any] = field(default_factory=list)  # [[global step, L-GM alpha], ...]
    config: Dict[str, Any] = field(default_factory=dict)  # values the composed config must hold, nested


@dataclass
class RootConfig:
    seed: Index = 0
    # documentation: a resume does not compare it
    reference: Annotated[Optional[ReferenceFingerprint], RESUMABLE] = None
    # initialise the whole network from this file: a released checkpoint of the four reference repositories,
    # a torchvision model or an lgm-gcp checkpoint, its key layout chosen by content (lgm_gcp/weights)
    weights: Annotated[Optional[str], RESUMABLE] = None  # the starting weights: a run's own checkpoint supersedes them
    # fine-tune from this file (any layout weights reads): the backbone must fill entirely, the head's tensors
    # load where their shapes agree, and the classifier (the loss's parameters) starts new, for any class count
    finetune: Annotated[Optional[str], RESUMABLE] = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    dataset: Any = MISSING
    backbone: Any = MISSING
    head: Any = MISSING
    loss: Any = MISSING
    lr_policy: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # tracker name -> its config (lgm_gcp/loggers): they record a run and change nothing it computes
    logger: Annotated[Dict[str, Any], RESUMABLE] = field(default_factory=dict)


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
    metafiles: List[str] = field(default_factory=list)  # several papers' metafiles in one table
    published: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # row label -> column label -> value
    # published models that no row trains: label -> "value (source)", listed under the table
    references: Dict[str, str] = field(default_factory=dict)


# the schemas Hydra composes with, derived from the dataclasses above (lgm_gcp/config/register.py)
ROOT_SCHEMA = schema_of(RootConfig)
# the groups whose options name no class: their schemas come from the dataclasses above
HAND_SCHEMAS = {"trainer": {"trainer": schema_of(TrainerConfig)}}
