"""Typed exceptions of hf_lottery_verify.

Every exception subclasses :class:`HfLotteryError` *and* a built-in exception, so a
generic ``except ValueError`` (or ``OSError``, ``KeyError``) still catches it. Each one
carries the fields a caller needs to react (``path``, ``param_name``, ``expected``, ...)
and a message that says what to do next.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from huggingface_hub import errors as hub_errors

__all__ = [
    "HfLotteryError",
    # checkpoints
    "CheckpointError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "PickleRefusedError",
    "MissingWeightsError",
    "UnexpectedWeightsError",
    "ShapeMismatchError",
    "MaskInconsistencyError",
    # architectures
    "UnknownArchitectureError",
    "UnsupportedArchitectureError",
    "UnsupportedStructureError",
    "InconsistentChannelsError",
    # masks and pruning
    "MaskError",
    "DensityError",
    # registries
    "UnknownNameError",
    # signatures and keys
    "SignatureError",
    "SignatureTooLargeError",
    "KeyMismatchError",
    "KeyFileError",
    "KeyFileNotFoundError",
    # configuration, training and data
    "ConfigError",
    "DatasetError",
    "TrainingError",
    "HubError",
    "HubRepoNotFoundError",
    "HubGatedRepoError",
    "HubRevisionNotFoundError",
    "HubEntryNotFoundError",
    "HubHTTPError",
    # black-box queries and model cards
    "EndpointError",
    "CardError",
    "CardTemplateNotFoundError",
]


class HfLotteryError(Exception):
    """Base class of every error raised on purpose by hf_lottery_verify."""

    def __str__(self) -> str:  # the message as given: KeyError would repr() it, OSError format errno/filename
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- checkpoints


class CheckpointError(HfLotteryError, ValueError):
    """A checkpoint (file, folder or state dict) cannot be loaded as asked.

    Args:
        message: What went wrong and what to do about it.
        path: The file or folder involved, when there is one.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The model file or folder to read does not exist (and is not a Hub repo id).

    Both a :class:`CheckpointError` and a ``FileNotFoundError``, so ``except FileNotFoundError``
    catches it too.

    Args:
        message (`str`): What is missing and what to do about it.
        path (`str`, *optional*): The file or folder that was asked for.
    """


class CorruptCheckpointError(CheckpointError):
    """A safetensors file is truncated, has a malformed header or unreadable tensors."""


class PickleRefusedError(CheckpointError):
    """Only pickle-based weights (``pytorch_model.bin``, ``*.pt``, ...) were found.

    Unpickling runs arbitrary code chosen by whoever wrote the file, so this library
    never does it: convert the checkpoint to safetensors in a trusted environment.
    """


class MissingWeightsError(CheckpointError, KeyError):
    """The checkpoint lacks parameters the architecture needs."""

    def __init__(self, missing: Sequence[str], *, path: str | None = None, arch: str | None = None) -> None:
        self.missing = list(missing)
        self.arch = arch
        shown = ", ".join(self.missing[:8]) + (" ..." if len(self.missing) > 8 else "")
        where = f" for architecture '{arch}'" if arch else ""
        super().__init__(
            f"{len(self.missing)} parameter(s) missing from the checkpoint{where}: {shown}. "
            "Check that the checkpoint matches the architecture (pass arch=... explicitly) "
            "and that it is not a partial or sharded save.",
            path=path,
        )


class UnexpectedWeightsError(CheckpointError):
    """The checkpoint holds tensors the architecture does not have."""

    def __init__(self, unexpected: Sequence[str], *, path: str | None = None, arch: str | None = None) -> None:
        self.unexpected = list(unexpected)
        self.arch = arch
        shown = ", ".join(self.unexpected[:8]) + (" ..." if len(self.unexpected) > 8 else "")
        super().__init__(
            f"{len(self.unexpected)} tensor(s) in the checkpoint do not belong to architecture "
            f"'{arch}': {shown}. The checkpoint was probably saved from another architecture; "
            "pass the right arch=... .",
            path=path,
        )


class ShapeMismatchError(CheckpointError):
    """A tensor's shape differs from the one the architecture (or mask) expects."""

    def __init__(
        self,
        param_name: str,
        *,
        expected: Sequence[int],
        got: Sequence[int],
        path: str | None = None,
    ) -> None:
        self.param_name = param_name
        self.expected = tuple(expected)
        self.got = tuple(got)
        super().__init__(
            f"Shape mismatch for '{param_name}': the architecture expects {self.expected}, "
            f"the checkpoint has {self.got}. The checkpoint belongs to another architecture or "
            "another number of labels/input channels; pass matching arch, num_labels and in_chans.",
            path=path,
        )


class MaskInconsistencyError(CheckpointError):
    """Stored masks and stored weights disagree (weights are non-zero where the mask prunes)."""


# --------------------------------------------------------------------------- architectures


class UnknownArchitectureError(HfLotteryError, ValueError):
    """The architecture name is not registered with timm."""

    def __init__(self, arch: str, *, suggestions: Iterable[str] = ()) -> None:
        self.arch = arch
        self.suggestions = list(suggestions)
        hint = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(
            f"Unknown architecture '{arch}'.{hint} Use a timm ResNet name (e.g. 'resnet18', "
            "'resnet50') or one of this library's CIFAR variants ('cifar_resnet8', 'cifar_resnet20', "
            "'cifar_resnet18', 'cifar_resnet50'); `timm.list_models('*resnet*')` lists them all."
        )


class UnsupportedArchitectureError(HfLotteryError, ValueError):
    """The architecture exists in timm but is not a ResNet this library can wrap."""

    def __init__(self, arch: str, *, model_class: str) -> None:
        self.arch = arch
        self.model_class = model_class
        super().__init__(
            f"Architecture '{arch}' builds a timm {model_class}, not a ResNet. hf_lottery_verify "
            "wraps timm ResNets only (resnet*, resnet*d, wide_resnet*, cifar_resnet*)."
        )


class UnsupportedStructureError(UnsupportedArchitectureError):
    """A timm ResNet uses a part whose channels this library cannot follow.

    Attention gates (squeeze-excitation), anti-aliasing filters, grouped convolutions,
    a stem pool replaced by a convolution, norms other than batch norm with running
    statistics, or a pooling head that concatenates features.

    Args:
        arch (`str`): The architecture name (``"?"`` when unknown).
        module (`str`): The offending module's name.
        reason (`str`): What is not supported.
    """

    def __init__(self, arch: str, *, module: str, reason: str) -> None:
        self.arch = arch
        self.model_class = "ResNet"
        self.module = module
        self.reason = reason
        ValueError.__init__(
            self,
            f"Cannot describe the channel spaces of '{arch}': {reason} at '{module}'. Channel spaces (and the "
            "structural attacks and re-alignment built on them) support timm ResNets with BasicBlock or "
            "Bottleneck blocks, CIFAR/ImageNet/deep stems, batch norm, ReLU, and convolution, identity or "
            "zero-padding shortcuts.",
        )


class InconsistentChannelsError(CheckpointError):
    """Tensors of a checkpoint disagree on the size of a channel space.

    Args:
        space (`str`): The space's name.
        param_name (`str`): The tensor whose size disagrees.
        expected (`int`): The space's size (read off its first tensor).
        got (`int`): The tensor's size along the space's dimension.
        path (`str`, *optional*): The checkpoint, when known.
    """

    def __init__(self, space: str, *, param_name: str, expected: int, got: int, path: str | None = None) -> None:
        self.space = space
        self.param_name = param_name
        self.expected = expected
        self.got = got
        super().__init__(
            f"Channel space '{space}' has {expected} channels, but '{param_name}' indexes {got}: the checkpoint's "
            "tensors do not fit together (a damaged or hand-edited file), so it cannot be re-aligned.",
            path=path,
        )


# --------------------------------------------------------------------------- masks


class MaskError(HfLotteryError, ValueError):
    """A mask dict does not fit the model (unknown name, wrong shape or dtype)."""

    def __init__(self, message: str, *, param_name: str | None = None) -> None:
        super().__init__(message)
        self.param_name = param_name


class DensityError(MaskError):
    """A requested density or pruning fraction cannot be reached."""


# --------------------------------------------------------------------------- registries


class UnknownNameError(HfLotteryError, KeyError):
    """A name was looked up in a registry (scorers, datasets, ...) that does not hold it."""

    def __init__(self, kind: str, name: str, *, available: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        super().__init__(f"Unknown {kind} '{name}'. Available: {', '.join(self.available)}.")


# --------------------------------------------------------------------------- signatures


class SignatureError(HfLotteryError, ValueError):
    """Base class for signature embedding and extraction problems."""


class SignatureTooLargeError(SignatureError):
    """The signature does not fit any candidate layer of the model."""

    def __init__(self, message: str, *, max_chars: int | None = None) -> None:
        super().__init__(message)
        self.max_chars = max_chars


class KeyMismatchError(HfLotteryError, ValueError):
    """An ownership key does not fit the model (wrong architecture, missing layer, ...).

    Raised for every scheme's key (V1 key masks, V2 signatures, V3 trigger sets, the alignment
    reference), so it is not a :class:`SignatureError`.
    """


class KeyFileError(HfLotteryError, OSError):
    """An ownership key file is missing, unreadable, of an unknown version, altered or misplaced.

    Args:
        message (`str`): What is wrong with the key file and what to do about it.
        path (`str`, *optional*): The key file (or its tensor file) involved, when there is one.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class KeyFileNotFoundError(KeyFileError, FileNotFoundError):
    """The ownership key file, or the tensor file its JSON names, does not exist.

    Both a :class:`KeyFileError` and a ``FileNotFoundError``, so ``except FileNotFoundError``
    catches it too.
    """


# --------------------------------------------------------------------------- training, data, hub


class ConfigError(HfLotteryError, ValueError):
    """A configuration value is out of range or inconsistent (a bad flag, on the command line)."""


class DatasetError(HfLotteryError, ValueError):
    """A dataset cannot be found or loaded."""


class TrainingError(HfLotteryError, RuntimeError):
    """Training cannot proceed (diverged, inconsistent resume state, ...)."""


class HubError(HfLotteryError, OSError):
    """A Hub operation failed (network, missing repo or revision, refused upload).

    Where huggingface_hub has an error of the same kind, the subclass below is that error too, so a
    caller's ``except RepositoryNotFoundError`` (``GatedRepoError``, ``RevisionNotFoundError``,
    ``EntryNotFoundError``, ``HfHubHTTPError``) catches it.
    """


class _HubHTTPError(HubError):
    def __init__(self, message: str, *, response: Any) -> None:
        hub_errors.HfHubHTTPError.__init__(self, message, response=response)


class HubRepoNotFoundError(_HubHTTPError, hub_errors.RepositoryNotFoundError):
    """The Hub repo does not exist, or is private and no token with access was given."""


class HubGatedRepoError(_HubHTTPError, hub_errors.GatedRepoError):
    """The Hub repo is gated: accept its terms and pass a token."""


class HubRevisionNotFoundError(_HubHTTPError, hub_errors.RevisionNotFoundError):
    """The branch, tag or commit does not exist in the Hub repo."""


class HubHTTPError(_HubHTTPError, hub_errors.HfHubHTTPError):
    """Another HTTP error of the Hub."""


class HubEntryNotFoundError(HubError, hub_errors.EntryNotFoundError):
    """A file of the Hub repo is missing."""


# --------------------------------------------------------------------------- black-box queries, model cards


class EndpointError(HfLotteryError, OSError):
    """An inference endpoint cannot be queried at all (dead, unreachable or malformed URL).

    Raised only when the very first request gets no HTTP answer after its retries (connection
    refused, timeout, name resolution or TLS failure) or when the URL itself is unusable;
    failures after a first answer are counted in :class:`~hf_lottery_verify.blackbox.QueryResult`
    instead.

    Args:
        message (`str`): What went wrong and what to check.
        url (`str`): The endpoint URL.
        reason (`str`, *optional*): The short transport-level reason (``"connection refused"``, ...).
    """

    def __init__(self, message: str, *, url: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason


class CardError(HfLotteryError, ValueError):
    """A model card or badge cannot be rendered from the values given.

    Args:
        message (`str`): What is wrong and how to fix it.
        field (`str`, *optional*): The argument or metadata field at fault, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CardTemplateNotFoundError(HfLotteryError, FileNotFoundError):
    """A template of ``model_cards/`` is missing from the installation.

    Args:
        name (`str`): The template's file name.
        searched (`Iterable[str]`): The locations that were tried.
    """

    def __init__(self, name: str, *, searched: Iterable[str]) -> None:
        self.name = name
        self.searched = list(searched)
        super().__init__(
            f"Model-card template '{name}' not found (looked in: {', '.join(self.searched)}). The installation "
            "is incomplete: reinstall hf_lottery_verify, or check that pyproject.toml maps model_cards/ to "
            "hf_lottery_verify/model_cards with package-data '*.j2'."
        )
