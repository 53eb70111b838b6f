"""Dataclass schemas of every config group, registered in Hydra's ConfigStore.

Each YAML option extends its schema through its defaults list (``/schema/<group>/<name>@_here_``),
so Hydra itself rejects a typo'd key (``trainer.max_epoch=3``) or a wrong type
(``trainer.max_epochs=three``) while composing. ``lgm_gcp.config.validate`` adds what Hydra lets
through: keys appended with ``+``/``++`` and values left ``???``.

Values the builder passes at the call site (``in_channels``, ``num_classes``, ``in_features``) are
not schema fields: they are derived from the backbone and the dataset, never set by hand.
The string ``"auto"`` in a head or loss field means "the backbone's recipe decides"
(see ``lgm_gcp.models.build``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from lgm_gcp.schedules.margin import POLICIES as MARGIN_POLICIES
from lgm_gcp.schedules.margin import MarginSchedule

# ----------------------------------------------------------------------------------- value ranges


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric field, checked by ``validate`` after composition (None, ``auto``
    and other strings are left to the field's own type and use)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not valid
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


def _ranged(default: Any, rng: Range) -> Any:
    return field(default=default, metadata={"range": rng})


def one_of(default: Any, *options: str) -> Any:
    """A string field with a fixed set of valid values, checked at start-up like a range."""
    return field(default=default, metadata={"choices": options})


def count(default: Any = MISSING) -> Any:
    """A count: an integer >= 1."""
    return _ranged(default, Range(low=1))


def nonneg(default: Any = MISSING) -> Any:
    """A rate, decay, size or index that may be zero."""
    return _ranged(default, Range(low=0))


def count_or_auto(default: Any = "auto", low: float = 1) -> Any:
    """A count (>= ``low``) or the string ``auto``; any other string fails at start-up."""
    return field(default=default, metadata={"range": Range(low=low), "auto": True})


def positive(default: Any = MISSING) -> Any:
    """A strictly positive value (learning rates, variances, clip norms)."""
    return _ranged(default, Range(low=0, low_open=True))


def probability(default: Any = MISSING, high_open: bool = False) -> Any:
    """A probability or fraction in [0, 1] (or [0, 1))."""
    return _ranged(default, Range(low=0, high=1, high_open=high_open))


def resumable(default: Any) -> Any:
    """Mark a field that a resumed run may change: it changes how a run is launched, logged or paced,
    not what it computes (``engine/checkpoint.py`` compares every other key with the checkpoint's
    config). ``default`` is a plain default or a field made by the helpers above."""
    f = default if isinstance(default, dataclasses.Field) else field(default=default)
    f.metadata = MappingProxyType({**f.metadata, "resumable": True})
    return f


# ----------------------------------------------------------------------------------- dataset


@dataclass
class DatasetConfig:
    _target_: str = MISSING
    name: str = MISSING
    root: Optional[str] = resumable(None)
    num_classes: int = count()
    image_size: int = count()
    in_channels: int = count(3)
    mean: List[float] = MISSING
    std: List[float] = MISSING
    download: bool = resumable(False)
    # keep the last partial training batch, as the references' DataLoaders do (CIFAR at 128: 391
    # steps); under DDP one with fewer images than processes is dropped
    drop_last: bool = False


@dataclass
class InMemoryDatasetConfig(DatasetConfig):
    """Datasets that fit in memory: augmentation runs batched on tensors (the fast path)."""

    pad: int = nonneg(0)
    pad_mode: str = one_of("zeros", "zeros", "mean")  # mean: the large-margin CIFAR recipe fills with the mean colour
    flip: bool = False
    device_augment: bool = True  # crop/flip/normalise on the training device, no worker processes
    # hold out this fraction of every class of the training set (fixed seed 0) as a validation set:
    # evaluated each epoch as val_*, it picks the best epoch (best.pt) instead of the test set
    val_fraction: float = probability(0.0, high_open=True)


@dataclass
class FileDatasetConfig(InMemoryDatasetConfig):
    """In-memory datasets read from files (MNIST, Fashion-MNIST, CIFAR)."""

    search: List[str] = field(default_factory=list)  # more folders to find the files in, after root, in order


@dataclass
class DigitsConfig(InMemoryDatasetConfig):
    test_fraction: float = _ranged(0.25, Range(0, 1, low_open=True, high_open=True))
    split_seed: int = nonneg(0)


@dataclass
class SyntheticConfig(InMemoryDatasetConfig):
    train_size: int = count(1024)
    test_size: int = count(256)


@dataclass
class ImageFolderConfig(DatasetConfig):
    train_dir: str = "train"
    val_dir: str = "val"
    resize: int = count(256)
    color_jitter: float = nonneg(0.0)
    lighting: float = nonneg(0.0)
    skip_bad_images: bool = False  # skip (and count) undecodable files instead of stopping with their path
    # tensor: torchvision.io + transforms.v2 on uint8 tensors (1.7-2x the reference's speed); pil: PIL +
    # transforms, torchvision's reference recipe pixel for pixel (lgm_gcp/data/images.py)
    decoder: str = one_of("tensor", "tensor", "pil")
    # folders: <root>/<train_dir>/<class>/*; torchvision: Places365's file lists and data_256/, val_256/
    layout: str = one_of("folders", "folders", "torchvision")
    small: bool = True  # layout=torchvision: the 256x256 images (data_256, val_256), else the *_large ones


# ----------------------------------------------------------------------------------- backbone


@dataclass
class BackboneConfig:
    _target_: str = MISSING


@dataclass
class SmallCNNConfig(BackboneConfig):
    widths: List[int] = field(default_factory=lambda: [32, 64, 128])
    norm: str = one_of("batch", "batch", "group", "none")


@dataclass
class TorchvisionBackboneConfig(BackboneConfig):
    """torchvision architectures; ``last_stride: auto`` takes the head's paper default."""

    last_stride: Any = "auto"
    cifar_stem: bool = False
    weights: Optional[str] = None  # a local torchvision-format state_dict file; nothing downloads


@dataclass
class CifarBackboneConfig(BackboneConfig):
    pass


@dataclass
class ResNet20Config(BackboneConfig):
    width: int = count(16)


# ----------------------------------------------------------------------------------- head


@dataclass
class HeadConfig:
    _target_: str = MISSING
    dropout: Any = probability("auto", high_open=True)  # float, or auto = the backbone recipe's dropout
    mlp: Any = "auto"  # list of hidden widths after pooling (VGG recipes), or auto
    mlp_norm: Any = "auto"  # BatchNorm1d in the MLP: true, or its eps (the large-margin VGG-16 mod: 1e-4), or auto
    bottleneck: Optional[int] = count(None)  # a last Linear to this many features, no activation (2-D plots)


@dataclass
class GAPConfig(HeadConfig):
    pass


@dataclass
class FlattenConfig(HeadConfig):
    size: int = count(7)  # adaptive-pool to size x size, then flatten (torchvision's VGG)


@dataclass
class CovarianceHeadConfig(HeadConfig):
    dim: int = count(256)
    iterations: int = count(5)
    activation: str = one_of("auto", "auto", "relu", "relu6")  # auto: ReLU6 for MobileNetV2 and ShuffleNetV2
    sqrt: str = one_of("newton_schulz", "newton_schulz", "eigh")  # eigh: the exact root, for comparison
    # how newton_schulz is evaluated (same values); auto: gram where the map has fewer positions than dim
    algorithm: str = one_of("auto", "auto", "matmul", "spectral", "gram")
    vec_order: str = one_of("row", "row", "col")  # row: iSQRT-COV checkpoints; col: 3G-Net checkpoints
    # the 1x1 reduction conv's init; auto: the backbone recipe (PyTorch's default on ShuffleNetV2)
    reduce_init: str = one_of("auto", "auto", "kaiming", "default")


@dataclass
class ThreeGConfig(CovarianceHeadConfig):
    blocks: int = nonneg(3)
    jitter: float = nonneg(1e-7)
    vec_order: str = one_of("col", "row", "col")
    # the gate score conv W_b: zero (every gate starts at ½) or kaiming (the reference's; saturates at start)
    gate_init: str = one_of("zero", "zero", "kaiming")


# ----------------------------------------------------------------------------------- loss


@dataclass
class LossConfig:
    _target_: str = MISSING


@dataclass
class SoftmaxLossConfig(LossConfig):
    init: str = one_of("auto", "auto", "default", "normal")  # classifier init; auto: the backbone recipe
    label_smoothing: float = probability(0.0)
    class_weights: Optional[List[float]] = None
    ignore_index: int = -100


@dataclass
class LargeMarginLossConfig(SoftmaxLossConfig):
    reg_lambda: float = nonneg(0.3)
    deg_logit: Optional[float] = nonneg(None)


@dataclass
class MarginScheduleConfig:
    """L-GM's margin schedule; its defaults are the schedule's own (schedules/margin.py)."""

    policy: str = one_of(MarginSchedule.policy, *MARGIN_POLICIES)
    value: float = nonneg(MarginSchedule.value)
    step: int = count(MarginSchedule.step)
    gamma: float = nonneg(MarginSchedule.gamma)
    min: float = nonneg(MarginSchedule.min)
    max: float = nonneg(MarginSchedule.max)


@dataclass
class LGMLossConfig(LossConfig):
    margin: MarginScheduleConfig = field(default_factory=MarginScheduleConfig)
    likelihood_weight: float = nonneg(0.1)
    # half (Caffe/TF: ½‖x-μ‖²) | full (TPAMI: ‖x-μ‖²) | paper (Σ-scaled + ½log|Σ|)
    likelihood_form: str = one_of("half", "half", "full", "paper")
    covariance: str = one_of("isotropic", "isotropic", "diagonal")
    log_det: bool = False
    update_sigma: bool = False
    sigma_init: float = positive(1.0)
    means_init: str = one_of("msra", "msra", "xavier")  # msra: Caffe CIFAR example; xavier: Caffe MNIST
    means_weight_decay: bool = True  # the references decay the means; σ is never decayed
    means_lr_mult: float = nonneg(1.0)  # the Caffe CIFAR-100 example uses 2
    sigma_param: str = one_of("log", "log", "raw")  # the learned variance parameter; raw: Caffe's clamped σ
    sigma_offset: float = nonneg(0.0)  # added to the isotropic σ; the Caffe layer adds 1e-4


# ----------------------------------------------------------------------------------- lr policy


@dataclass
class LRScheduleConfig:
    _target_: str = MISSING
    base_lr: float = positive(0.1)
    epochs: int = resumable(count())
    per_iteration: bool = False
    warmup_epochs: float = nonneg(0.0)
    warmup_start: float = probability(0.0)  # fraction of base_lr at step 0 of the warmup


@dataclass
class ConstantLRConfig(LRScheduleConfig):
    pass


@dataclass
class CosineLRConfig(LRScheduleConfig):
    min_lr: float = nonneg(0.0)


@dataclass
class MultiStepLRConfig(LRScheduleConfig):
    milestones: List[int] = field(default_factory=lambda: [30, 60, 90])
    gamma: float = positive(0.1)
    milestones_in_steps: bool = False


@dataclass
class StepLRConfig(LRScheduleConfig):
    step_size: int = count(30)
    gamma: float = positive(0.1)


@dataclass
class ExponentialLRConfig(LRScheduleConfig):
    gamma: float = positive(0.98)


@dataclass
class PolynomialLRConfig(LRScheduleConfig):
    power: float = positive(2.0)
    length: Optional[float] = positive(None)  # epochs over which the polynomial reaches zero (default: epochs)
    offset: float = 0.0  # epoch offset e0 in (1 - (e - e0)/length)^power


@dataclass
class LogSpacedLRConfig(LRScheduleConfig):
    final_lr: float = positive(1e-4)


@dataclass
class PiecewiseLinearLRConfig(LRScheduleConfig):
    knots: List[Any] = MISSING  # [[epoch, lr], ...]; constant after the last knot


@dataclass
class LinearLRConfig(LRScheduleConfig):
    final_lr: float = nonneg(0.0)


@dataclass
class GCPPolicyConfig(LRScheduleConfig):
    """LR_norm / LR_fast / LR_adju of the GCP study, looked up per backbone family."""

    policy: str = MISSING  # norm | fast | adju
    family: str = MISSING  # resnet | mobilenet_v2 | shufflenet_v2
    strict_paper: bool = True
    batch_size: int = count()
    weight_decay: float = nonneg()


# ----------------------------------------------------------------------------------- optimizer


@dataclass
class OptimizerConfig:
    _target_: str = MISSING
    _partial_: bool = True
    momentum: float = probability(0.9, high_open=True)
    nesterov: bool = True
    weight_decay: float = nonneg(5e-4)
    decay_norm_and_bias: bool = True  # the references decay every parameter
    classifier_lr_mult: float = nonneg(1.0)


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
    amp: Any = False  # false | bf16 | fp16 (GradScaler for fp16); heads and L-GM distances stay fp32
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


# ----------------------------------------------------------------------------------- logger (trackers)


@dataclass
class TrackerConfig:
    _target_: str = MISSING


@dataclass
class TensorBoardConfig(TrackerConfig):
    folder: str = "tb"  # under the run dir


@dataclass
class CSVConfig(TrackerConfig):
    file: str = "metrics.csv"  # under the run dir


@dataclass
class MLflowConfig(TrackerConfig):
    tracking_uri: Optional[str] = None  # None: MLFLOW_TRACKING_URI, else MLflow's default
    experiment: str = "lgm-gcp"
    log_checkpoint: bool = False  # upload the final last.pt as an artifact (its path is always a tag)


@dataclass
class WandbConfig(TrackerConfig):
    project: str = "lgm-gcp"
    entity: Optional[str] = None
    mode: str = one_of("online", "online", "offline", "disabled")
    tags: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------- root


@dataclass
class EvalConfig:
    ten_crop: bool = False  # TenCrop evaluation (image-folder datasets)
    ten_crop_average: str = one_of("softmax", "softmax", "logits")  # what is averaged over the ten crops
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


SCHEMAS = {
    "dataset": {
        "in_memory": InMemoryDatasetConfig,
        "files": FileDatasetConfig,
        "digits": DigitsConfig,
        "synthetic": SyntheticConfig,
        "image_folder": ImageFolderConfig,
    },
    "backbone": {
        "small_cnn": SmallCNNConfig,
        "torchvision": TorchvisionBackboneConfig,
        "cifar": CifarBackboneConfig,
        "resnet20": ResNet20Config,
    },
    "head": {"gap": GAPConfig, "flatten": FlattenConfig, "covariance": CovarianceHeadConfig, "3g": ThreeGConfig},
    "loss": {"softmax": SoftmaxLossConfig, "large_margin": LargeMarginLossConfig, "lgm": LGMLossConfig},
    "lr_policy": {
        "constant": ConstantLRConfig,
        "cosine": CosineLRConfig,
        "multistep": MultiStepLRConfig,
        "step": StepLRConfig,
        "exponential": ExponentialLRConfig,
        "polynomial": PolynomialLRConfig,
        "logspace": LogSpacedLRConfig,
        "piecewise_linear": PiecewiseLinearLRConfig,
        "linear": LinearLRConfig,
        "gcp_policy": GCPPolicyConfig,
    },
    "optimizer": {"sgd": OptimizerConfig},
    "trainer": {"trainer": TrainerConfig},
    "logger": {"tensorboard": TensorBoardConfig, "csv": CSVConfig, "mlflow": MLflowConfig, "wandb": WandbConfig},
}



def resumable_keys() -> frozenset:
    """The dotted keys (``trainer.max_epochs``) and subtrees (``logger``) marked ``resumable``, in the
    root, the trainer and any schema of a group."""
    keys = {f.name for f in dataclasses.fields(RootConfig) if f.metadata.get("resumable")}
    keys |= {f"trainer.{f.name}" for f in dataclasses.fields(TrainerConfig) if f.metadata.get("resumable")}
    for group, schemas in SCHEMAS.items():
        keys |= {f"{group}.{f.name}" for schema in schemas.values() for f in dataclasses.fields(schema)
                 if f.metadata.get("resumable")}
    return frozenset(keys)
