"""The run configurations, declared once: library defaults, CLI flags, examples' flags and JSON.

Each setting is a typed dataclass field with its help text beside it (``metadata["help"]``);
``transformers.HfArgumentParser`` builds the command line's flags from these declarations
(:mod:`hf_lottery_verify.cli`, ``examples/``), and the library uses the same objects. The
module imports neither torch nor transformers, so ``hf-lottery --help`` stays fast.

* :class:`TrainConfig` — one training run (dense training, IMP rounds, retraining, fine-tuning);
* :class:`IMPConfig` — the extreme-ticket search (IMP with late rewinding) around it;
* :class:`DemoConfig` — the end-to-end walkthrough of ``hf-lottery demo``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["TrainConfig", "IMPConfig", "DemoConfig", "Schedule", "Precision", "IMP_STATE_VERSION"]

Precision = Literal["fp32", "bf16", "fp16"]
Schedule = Literal["multistep", "onecycle", "constant", "cosine"]
IMP_STATE_VERSION = 1


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    The defaults are the paper's CIFAR recipe: SGD, momentum 0.9, weight decay 1e-4, lr 0.1,
    182 epochs, ×0.1 at epochs 91 and 136 (``milestones`` are fractions of ``epochs``:
    0.5 → 91, 0.75 → 136). Use ``schedule="onecycle"`` for short runs. Every field's help
    text is in its ``metadata["help"]`` (also shown by ``hf-lottery find-ticket --help``).

    Raises:
        ConfigError: A value out of range (non-positive epochs, unknown schedule, ...).
    """

    epochs: int = _help("epochs of a full run", default=182)
    batch_size: int = _help("per-process batch size", default=128)
    lr: float = _help("peak learning rate", default=0.1)
    momentum: float = _help("SGD momentum", default=0.9)
    nesterov: bool = _help("use Nesterov momentum", default=False)
    weight_decay: float = _help("L2 weight decay (5e-4 for ResNet-50 in the paper)", default=1e-4)
    schedule: Schedule = _help("learning-rate schedule: multistep, onecycle, cosine or constant", default="multistep")
    milestones: list[float] = _help("fractions of the run where multistep multiplies lr by gamma",
                                    default_factory=lambda: [0.5, 0.75])
    gamma: float = _help("multistep factor", default=0.1)
    warmup_fraction: float = _help("share of the run spent warming up in onecycle", default=0.25)
    label_smoothing: float = _help("cross-entropy label smoothing", default=0.0)
    precision: Precision = _help("fp32, bf16 (autocast) or fp16", default="fp32")
    channels_last: bool = _help("channels-last memory format (on CUDA)", default=True)
    compile: bool = _help("wrap the forward in torch.compile", default=False)
    compile_mode: str | None = _help("torch.compile mode (e.g. reduce-overhead for CUDA graphs)", default=None)
    augment: bool = _help("random crop and flip", default=True)
    pad: int = _help("crop padding in pixels", default=4)
    flip: bool = _help("horizontal flips (turn off for digits and text)", default=True)
    eval_batch_size: int = _help("evaluation batch size", default=1024)
    seed: int = _help("seed of data order and augmentation", default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be positive.")
        if self.schedule not in ("multistep", "onecycle", "constant", "cosine"):
            raise ConfigError(f"Unknown schedule '{self.schedule}': use multistep, onecycle, cosine or constant.")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"Unknown precision '{self.precision}': use fp32, bf16 or fp16.")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError("milestones are fractions of the run, each in (0, 1), e.g. 0.5 0.75.")
        if self.lr < 0 or self.pad < 0 or self.eval_batch_size < 1:
            raise ConfigError("lr and pad must be non-negative (lr 0 freezes the weights) and eval_batch_size positive.")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the settings."""
        return asdict(self)


@dataclass(frozen=True)
class IMPConfig:
    """Settings of an extreme-ticket search (IMP with late rewinding, Section 4.1).

    Raises:
        ConfigError: Ratios outside (0, 1), or a rewind epoch outside ``[0, train.epochs)``.
    """

    train: TrainConfig = field(default_factory=TrainConfig,
                               metadata={"help": "training recipe of every round (the dense run uses it too)"})
    rewind_epoch: int = _help("epoch k whose weights every round rewinds to (paper: 3)", default=3)
    ratios: list[float] = _help("pruning ratios tried in order; a failing round moves to the next one",
                                default_factory=lambda: [0.2, 0.1, 0.05, 0.01])
    epsilon: float = _help("allowed accuracy gap to the dense model, in points", default=1.0)
    max_rounds: int | None = _help("stop after this many pruning rounds (default: until the schedule is exhausted; "
                                   "not part of the resume hash, so a short run can be extended)", default=None)
    scope: Literal["global", "layer"] = _help("global (paper) or per-layer magnitude pruning", default="global")
    include_stem: bool = _help("prune the stem convolution too", default=False)
    include_classifier: bool = _help("prune the classifier too", default=False)
    init_seed: int = _help("seed of the dense weights' initialisation", default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        if not self.ratios or any(not 0 < r < 1 for r in self.ratios):
            raise ConfigError(f"ratios must be fractions in (0, 1), got {self.ratios}.")
        if not 0 <= self.rewind_epoch < self.train.epochs:
            raise ConfigError(f"rewind_epoch must lie in [0, epochs={self.train.epochs}), got {self.rewind_epoch}; "
                              "lower --rewind-epoch or raise --epochs.")
        if self.max_rounds is not None and self.max_rounds < 0:
            raise ConfigError(f"max_rounds must be non-negative, got {self.max_rounds}.")

    def settings_hash(self) -> str:
        """SHA-256 of the canonical JSON of every setting that changes the result."""
        d = asdict(self)
        d.pop("max_rounds")
        for k in ("compile", "compile_mode", "eval_batch_size"):
            d["train"].pop(k)
        d["state_version"] = IMP_STATE_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


@dataclass
class DemoConfig:
    """Settings of ``hf-lottery demo`` (:func:`hf_lottery_verify.workflows.run_demo`).

    The defaults are the CPU walkthrough (≤ 10 minutes on 2 cores): a CIFAR ResNet-20 with
    the paper's identity shortcuts on 10,000 Fashion-MNIST images. ``preset="reduced"`` is a
    ~1-minute smoke run (ResNet-8), ``preset="full"`` the full data and a longer schedule
    (meant for ``device="cuda"``); explicitly given fields win over the preset.

    Raises:
        ConfigError: An unknown preset or device, or an inconsistent schedule.
    """

    _argument_group_name = "demo"
    out: str = _help("report folder (JSON, summary, card, badge, plots; the run's folders under work/)",
                     default="hf-lottery-demo")
    preset: Literal["cpu", "reduced", "full"] = _help(
        "cpu (default, <=10 min on 2 cores), reduced (CI smoke run) or full (all data, longer; use a GPU)",
        default="cpu")
    arch: str | None = _help("architecture (default per preset: cifar_resnet20_a, the paper's option-A ResNet-20)",
                             default=None)
    dataset: str = _help("fashion_mnist (offline, Debian package), cifar10 (with --hub folder: the local Hub "
                         "redirects the Hub client and its cache), synthetic or imagefolder:PATH", default="fashion_mnist")
    data_dir: str | None = _help("dataset folder (default per dataset)", default=None)
    train_limit: int | None = _help("training images (default per preset)", default=None)
    test_limit: int | None = _help("test images (default per preset)", default=None)
    epochs: int | None = _help("epochs of each training run (default per preset)", default=None)
    max_rounds: int | None = _help("IMP pruning rounds (default per preset)", default=None)
    device: Literal["auto", "cpu", "cuda"] = _help("where to train", default="cpu")
    hub: Literal["local", "folder"] = _help("publish to a local Hub server the demo starts, or to a folder",
                                            default="local")
    signature: str = _help("text of the QR signature (Scheme V2)", default="hf-lottery demo owner")
    owner: str = _help("public owner name on the model card", default="demo-owner")
    key_ratio: float = _help("share of kept weights moved into the Scheme V1 key mask", default=0.05)
    seed: int = _help("seed of data order, initialisation, secret, triggers and attacks", default=0)

    def __post_init__(self) -> None:
        if self.preset not in ("cpu", "reduced", "full"):
            raise ConfigError(f"Unknown preset '{self.preset}': use cpu, reduced or full.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"Unknown device '{self.device}': use auto, cpu or cuda.")
        if not 0 < self.key_ratio < 1:
            raise ConfigError(f"key_ratio must lie in (0, 1), got {self.key_ratio}.")
        if self.max_rounds is not None and self.max_rounds < 1:
            raise ConfigError(f"max_rounds must be at least 1 (the demo signs a pruned ticket), got {self.max_rounds}.")

    def resolved(self) -> dict[str, Any]:
        """The preset's values with the explicitly given fields on top (JSON-safe)."""
        presets: dict[str, dict[str, Any]] = {
            "reduced": {"arch": "cifar_resnet8_a", "train_limit": 2000, "test_limit": 500, "epochs": 3,
                        "max_rounds": 1, "ratios": [0.6], "rewind_epoch": 1, "triggers": 30, "batch_size": 64,
                        "finetune_limit": 256},
            "cpu": {"arch": "cifar_resnet20_a", "train_limit": 10000, "test_limit": 2000, "epochs": 4,
                    "max_rounds": 3, "ratios": [0.6, 0.4, 0.2], "rewind_epoch": 1, "triggers": 50,
                    "batch_size": 128, "finetune_limit": 4000},
            "full": {"arch": "cifar_resnet20_a", "train_limit": None, "test_limit": None, "epochs": 30,
                     "max_rounds": 8, "ratios": [0.2, 0.1, 0.05], "rewind_epoch": 2, "triggers": 100,
                     "batch_size": 128, "finetune_limit": None},
        }
        values = dict(presets[self.preset])
        for name in ("arch", "train_limit", "test_limit", "epochs", "max_rounds"):
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        if values["rewind_epoch"] >= values["epochs"]:
            raise ConfigError(f"epochs must exceed the rewind epoch {values['rewind_epoch']}, got {values['epochs']}.")
        values.update({k: v for k, v in asdict(self).items() if k not in values})
        return values
