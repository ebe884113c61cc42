"""The per-command arguments of ``hf-lottery`` (and of ``examples/``), one dataclass per concern.

Run configurations (training recipe, IMP search) live in :mod:`hf_lottery_verify.configs`;
what is here are the inputs and outputs of each command. Positional arguments (a model
folder, a repo id) are added by the command itself. This module imports neither torch nor
transformers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DataArgs",
    "EvalDataArgs",
    "OutputArgs",
    "OverwriteArgs",
    "check_out_folder",
    "FindTicketArgs",
    "SplitKeyArgs",
    "SignatureOptions",
    "SignArgs",
    "ExtractArgs",
    "TriggersArgs",
    "RetrainArgs",
    "PushArgs",
    "VerifyArgs",
    "AnchorArgs",
    "ServeArgs",
    "AttackArgs",
    "CalibrateArgs",
]


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class OutputArgs:
    """How results are printed."""

    _argument_group_name = "output"
    json: bool = _help("print the result as JSON (nothing else on stdout)", default=False)


@dataclass
class OverwriteArgs:
    """Whether a command may write its model folder over existing files."""

    _argument_group_name = "output folder"
    overwrite: bool = _help("write --out even when it is the input folder or not empty (files are replaced)",
                            default=False)


def check_out_folder(out: str, *inputs: str | None, overwrite: bool) -> None:
    """Refuse to write a model folder over an input folder or a non-empty folder unless ``overwrite``.

    Args:
        out (`str`): The ``--out`` folder.
        *inputs (`str`, *optional*): The folders the command reads.
        overwrite (`bool`): ``--overwrite`` was given.

    Raises:
        ConfigError: ``out`` is an input, a file, or a folder that is not empty, and ``overwrite`` is not set.
    """
    from ..errors import ConfigError

    target = Path(out).expanduser()
    if overwrite:
        return
    if any(i is not None and target.resolve() == Path(i).expanduser().resolve() for i in inputs):
        raise ConfigError(f"--out {out} is the input folder: writing there replaces the model you read. Pick "
                          "another folder, or pass --overwrite.")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; pick a new folder, or pass --overwrite "
                          "to replace its files.")


@dataclass
class DataArgs:
    """Which dataset to train and evaluate on."""

    _argument_group_name = "data"
    dataset: str = _help("cifar10, cifar100, fashion_mnist, synthetic or imagefolder:<path>",
                         default="fashion_mnist")
    data_dir: str | None = _help("dataset files or cache folder", default=None)
    train_limit: int | None = _help("use at most this many (seeded random) training samples", default=None)
    test_limit: int | None = _help("use at most this many test samples", default=None)


@dataclass
class EvalDataArgs:
    """An optional test split to measure accuracy on."""

    _argument_group_name = "evaluation data"
    dataset: str | None = _help("measure accuracy on this dataset's test split (cifar10, fashion_mnist, ...)",
                                default=None)
    data_dir: str | None = _help("dataset files or cache folder", default=None)
    test_limit: int | None = _help("evaluate on at most this many test samples", default=None)


@dataclass
class FindTicketArgs:
    """Inputs and outputs of ``find-ticket``."""

    _argument_group_name = "run"
    out: str = _help("output and resume folder (re-run the same command to resume)")
    arch: str = _help("timm architecture (cifar_resnet20_a is the paper's ResNet-20)", default="cifar_resnet20")
    cpu: bool = _help("train on the CPU even when a GPU is visible", default=False)


@dataclass
class SplitKeyArgs:
    """Scheme V1: the key-mask split."""

    _argument_group_name = "key mask"
    ratio: float = _help("share of the kept weights that goes into the private key")
    key_out: str = _help("where to write the private ownership key (JSON; a section is added to an existing key)")
    out: str = _help("public folder for the locked ticket")
    score: Literal["omp", "ewp", "betweenness", "random"] = _help("scorer of Algorithm 1", default="omp")
    seed: int = _help("seed (random scorer, betweenness sampling)", default=0)
    sources: int | None = _help("betweenness only: sample this many source channels (exact when omitted)",
                                default=None)
    weights: Literal["inverse", "neglog", "none", "abs_length"] | None = _help(
        "betweenness only: edge lengths (inverse = 1/sum|kernel|, the default)", default=None)
    compact: bool = _help("save the locked ticket in the compact layout", default=False)


@dataclass
class SignatureOptions:
    """Scheme V2: how the QR signature is embedded (see embed_signature)."""

    _argument_group_name = "signature"
    copies: int | None = _help("copies of the symbol (default: 3, spread over the stages that fit; never all in one)",
                               default=None)
    module_weights: int = _help("kept weights per kernel that encodes a 1 (1 = the paper's)", default=2)
    coding: Literal["auto", "pairs", "single"] = _help(
        "pairs: two complementary kernels per module (a flipped kernel is an erasure, not an error); single: one; "
        "auto: pairs where the stage has room and the ticket can pay", default="auto")
    ecc: Literal["L", "M", "Q", "H"] = _help("QR error-correction level (the version is the smallest that fits)",
                                             default="H")
    layers: Literal["spatial", "all"] = _help("candidate convs: the spatial ones, or all (1x1 too)",
                                              default="spatial")
    seed: int = _help("seed of the values of switched-on weights", default=0)

    def embed_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`hf_lottery_verify.signature.embed_signature`: the fields, by name."""
        return asdict(self)


@dataclass
class SignArgs:
    """Inputs and outputs of ``sign``."""

    _argument_group_name = "sign"
    signature: str = _help("text to embed (an owner id, a date, ...)")
    key_out: str = _help("where to write the private ownership key (never overwritten; a section is added to an "
                         "existing key without one)")
    out: str = _help("folder for the signed ticket")
    rewind: str | None = _help("rewind-weights folder: values for switched-on weights", default=None)
    owner: str | None = _help("public owner name for the ownership claim", default=None)
    compact: bool = _help("save in the compact layout", default=False)


@dataclass
class ExtractArgs:
    """Inputs of ``extract``."""

    _argument_group_name = "extract"
    key: str = _help("the owner's key (JSON)")


@dataclass
class TriggersArgs:
    """Scheme V3: the trigger set added to the key."""

    _argument_group_name = "trigger set"
    key: str = _help("the ownership key to add the trigger set to (created if missing)")
    num_classes: int = _help("classes of the model's task")
    arch: str | None = _help("architecture, when the key file does not exist yet", default=None)
    n: int = _help("number of trigger images", default=100)
    image_size: int = _help("side of the generated images", default=32)
    channels: int = _help("channels of the generated images", default=3)
    adi: str | None = _help("use an Adi-style folder (pics/*.jpg + labels-cifar.txt) instead", default=None)
    adi_mode: Literal["resize", "center_crop"] = _help("Adi images: resize, or the original centre crop",
                                                      default="resize")


@dataclass
class RetrainArgs:
    """Inputs and outputs of ``retrain``."""

    _argument_group_name = "retrain"
    rewind: str = _help("the rewind weights (find-ticket's rewind/)")
    out: str = _help("folder for the retrained ticket")
    key: str | None = _help("the ownership key (its trigger set is mixed in)", default=None)
    rewind_epoch: int | None = _help("epoch k (default: read from the rewind folder)", default=None)
    triggers_per_batch: int | None = _help("trigger images per batch (default: 1 per 128 training images)",
                                           default=None)
    cpu: bool = _help("train on the CPU even when a GPU is visible", default=False)


@dataclass
class PushArgs:
    """Inputs of ``push``."""

    _argument_group_name = "push"
    signature: str | None = _help("sign with this text before publishing (needs --key-out)", default=None)
    key_out: str | None = _help("where to write the private key when signing", default=None)
    key: str | None = _help("an existing private key whose public claim (a hash commitment) to publish",
                            default=None)
    owner: str | None = _help("public owner name in the claim and the card", default=None)
    private: bool = _help("create the repo as private", default=False)
    revision: str | None = _help("branch to commit to", default=None)
    message: str | None = _help("commit message", default=None)
    token: str | None = _help("Hub token (default: the logged-in one or HF_TOKEN)", default=None)
    accuracy: float | None = _help("test accuracy in percent, for the model card", default=None)
    dataset_name: str | None = _help("dataset name for the model card (e.g. cifar10)", default=None)
    split: str = _help("the split --accuracy was measured on", default="test")
    compact: bool = _help("publish the compact layout (not loadable by plain timm)", default=False)


@dataclass
class VerifyArgs:
    """Inputs of ``verify``."""

    _argument_group_name = "verify"
    key: str = _help("your private ownership key (JSON)")
    endpoint: str | None = _help("verify a live inference endpoint (black-box, Scheme V3)", default=None)
    revision: str | None = _help("Hub branch, tag or commit", default=None)
    quick: bool = _help("only read the public claim from the weights header (no weights downloaded)",
                        default=False)
    local_files_only: bool = _help("use the Hub cache only (as HF_HUB_OFFLINE=1)", default=False)
    token: str | None = _help("Hub token", default=None)
    unanchored: bool = _help("check your own model before publishing: owned without an anchored key (the report "
                             "says so)", default=False)
    timeout: float = _help("endpoint request timeout in seconds", default=10.0)
    retries: int = _help("endpoint retries per request", default=2)
    budget: int | None = _help("maximum endpoint requests", default=None)
    badge: str | None = _help("also write an SVG badge of the verdict to this file", default=None)


@dataclass
class AnchorArgs:
    """Inputs of ``anchor``."""

    _argument_group_name = "anchor"
    key: str = _help("your private ownership key (JSON); it gains the anchor record")
    repo: str = _help("a Hub repo of yours to commit the public claim to (created if missing)")
    model: str | None = _help("the model folder you publish elsewhere: its reference is recorded first", default=None)
    owner: str | None = _help("public owner name in the claim", default=None)
    private: bool = _help("create the repo as private (verifiers then need your token)", default=False)
    token: str | None = _help("Hub token", default=None)


@dataclass
class ServeArgs:
    """Inputs of ``serve``."""

    _argument_group_name = "serve"
    port: int = _help("port (0 picks a free one)", default=8000)
    host: str = _help("address to listen on", default="127.0.0.1")
    allow_remote: bool = _help("allow a non-loopback --host", default=False)
    top_k: int = _help("labels per answer", default=5)
    workers: int | None = _help("threads answering requests (default: min(4, CPU cores))", default=None)
    request_timeout: float | None = _help("seconds a client has to send its whole request (default: 10)",
                                          default=None)
    max_pixels: int | None = _help("refuse larger images, read from their header (default: 4096*4096)",
                                   default=None)
    max_body_bytes: int | None = _help("refuse larger requests (default: 10 MiB)", default=None)


@dataclass
class AttackArgs:
    """Inputs and outputs of ``attack``."""

    _argument_group_name = "attack"
    out: str | None = _help("folder for the attacked model (required unless NAME is 'list')", default=None)
    param: list[str] = _help("attack parameters as key=value (e.g. fraction=0.2 method=random); see "
                             "`hf-lottery attack list`", default_factory=list)
    seed: int = _help("seed of the attack", default=0)


@dataclass
class CalibrateArgs:
    """Inputs of ``calibrate``."""

    _argument_group_name = "calibrate"
    key: str = _help("the ownership key to calibrate")
    n: int = _help("number of null models", default=50)
    kinds: list[str] = _help("kinds of null models: init, pruned, trained, signed_other",
                             default_factory=lambda: ["init", "pruned", "signed_other"])
    seed: int = _help("seed of the null models", default=0)
