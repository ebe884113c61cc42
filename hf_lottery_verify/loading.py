"""``load_model``: any ResNet checkpoint layout (ours, timm, TimmWrapper, state dicts, Hub repos) as our model.

Loading *trusts* the checkpoint (it is for the owner's own files and for models one
wants to use): checksums and stored masks are checked strictly. Verification reads a
suspect with :func:`hf_lottery_verify.suspect.read_suspect` instead, which trusts
nothing; both resolve Hub repo ids with :func:`hf_lottery_verify.suspect.resolve_source`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import torch

from .architectures import check_architecture
from .configuration_sparse_resnet import SparseResNetConfig
from .errors import CheckpointError, MissingWeightsError, ShapeMismatchError, UnexpectedWeightsError
from .masks import masks_from_weights
from .modeling_sparse_resnet import SparseResNetForImageClassification
from .storage import CheckpointContents, read_checkpoint
from .suspect import resolve_source

__all__ = ["load_model"]


def _infer_shape_args(state_dict: Mapping[str, torch.Tensor], arch: str) -> tuple[int | None, int | None]:
    """(num_labels, in_chans) read off the classifier and stem weights."""
    import timm

    cfg = timm.get_pretrained_cfg(arch.split(".")[0])
    first_conv = (cfg.first_conv if cfg else None) or "conv1"
    classifier = (cfg.classifier if cfg else None) or "fc"
    first = first_conv if isinstance(first_conv, str) else first_conv[0]
    head = classifier if isinstance(classifier, str) else classifier[0]
    stem = state_dict.get(f"{first}.weight")
    fc = state_dict.get(f"{head}.weight")
    return (int(fc.shape[0]) if fc is not None else None, int(stem.shape[1]) if stem is not None else None)


def _config_from_contents(
    contents: CheckpointContents,
    *,
    arch: str | None,
    num_labels: int | None,
    in_chans: int | None,
) -> SparseResNetConfig:
    cfg = dict(contents.config or {})
    if cfg.get("model_type") == SparseResNetConfig.model_type and arch is None:
        config = SparseResNetConfig.from_dict(cfg)
    else:
        arch = arch or cfg.get("arch") or cfg.get("architecture") or contents.metadata.get("arch")
        if arch is None:
            raise CheckpointError(
                "Cannot tell the architecture of this checkpoint (no config.json with 'architecture'); "
                "pass arch='resnet18' (or the right timm name).",
                path=contents.path,
            )
        check_architecture(arch)
        model_args = dict(cfg.get("model_args") or {})
        label_names = cfg.get("label_names")
        kwargs: dict[str, Any] = {}
        if label_names and (num_labels is None or num_labels == len(label_names)):
            kwargs["id2label"] = dict(enumerate(label_names))
        pretrained = cfg.get("pretrained_cfg") or {}  # read_config kept only its checked mean, std and input_size
        if pretrained.get("mean") and pretrained.get("std"):
            kwargs.update(image_mean=tuple(pretrained["mean"]), image_std=tuple(pretrained["std"]))
        config = SparseResNetConfig(arch=arch.split(".")[0], model_args=model_args or None, **kwargs)
    check_architecture(config.arch)
    inferred_labels, inferred_chans = _infer_shape_args(contents.state_dict, config.arch)
    labels = num_labels or inferred_labels
    if labels is not None and labels != config.num_labels:
        config.num_labels = labels
    chans = in_chans or inferred_chans
    if chans is not None:
        config.in_chans = chans
    return config


def _load_state_strict(model: SparseResNetForImageClassification, state_dict: Mapping[str, torch.Tensor], *, path: str | None) -> None:
    expected = model.timm_model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise MissingWeightsError(missing, path=path, arch=model.config.arch)
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        raise UnexpectedWeightsError(unexpected, path=path, arch=model.config.arch)
    for name, ref in expected.items():
        got = state_dict[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise ShapeMismatchError(name, expected=ref.shape, got=got.shape, path=path)
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"'{name}' holds NaN or infinite values; the checkpoint is unusable.", path=path)
    model.timm_model.load_state_dict(dict(state_dict), strict=True)


def load_model(
    source: str | os.PathLike | Mapping[str, torch.Tensor] | CheckpointContents,
    *,
    arch: str | None = None,
    num_labels: int | None = None,
    in_chans: int | None = None,
    masks: Literal["stored", "weights"] = "stored",
    config: SparseResNetConfig | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> SparseResNetForImageClassification:
    """Load any ResNet checkpoint layout as a :class:`SparseResNetForImageClassification`.

    Accepts this library's folders (dense or compact), plain timm folders
    (``config.json`` with ``architecture``), transformers ``TimmWrapper`` checkpoints
    (``timm_model.`` prefix), single ``.safetensors`` files, in-memory state dicts and Hub
    repo ids. Masks come from the file when it stores them; otherwise they are derived
    from the non-zero weights of the prunable parameters.

    Args:
        source: Folder, file, state dict, Hub repo id, or already-read contents.
        arch: timm architecture; required for bare state dicts and files without a config.
        num_labels: Number of classes (read off the classifier weight when omitted).
        in_chans: Input channels (read off the stem weight when omitted).
        masks: ``"stored"`` uses stored masks when present; ``"weights"`` always derives
            masks from the non-zero weights (what verification does with a suspect).
        config: A configuration to use instead of the checkpoint's.
        revision: Hub revision when ``source`` is a repo id.
        cache_dir: Hub cache folder.
        token: Hub token.
        local_files_only: Do not touch the network.
        force_download: Download a Hub repo again even when it is cached.

    Returns:
        The model in eval mode, weights and masks loaded.

    Raises:
        PickleRefusedError: Only pickle weights are available.
        CorruptCheckpointError: Truncated or corrupted safetensors.
        MissingWeightsError, UnexpectedWeightsError, ShapeMismatchError: The weights do not
            fit the architecture.
        UnknownArchitectureError, UnsupportedArchitectureError: Bad ``arch``.
        HubError: A repo id could not be fetched.

    Example:
        >>> model = load_model("path/to/folder")            # doctest: +SKIP
        >>> model = load_model(state_dict, arch="resnet18")  # doctest: +SKIP
    """
    if isinstance(source, CheckpointContents):
        contents = source
    elif isinstance(source, Mapping):
        contents = read_checkpoint(source)
    else:
        local, _ = resolve_source(source, revision=revision, cache_dir=cache_dir, token=token,
                                  local_files_only=local_files_only, force_download=force_download)
        contents = read_checkpoint(local, check_masks=masks == "stored")
    if config is None:
        config = _config_from_contents(contents, arch=arch, num_labels=num_labels, in_chans=in_chans)
    model = SparseResNetForImageClassification(config)
    _load_state_strict(model, contents.state_dict, path=contents.path)
    model.ownership_claim = contents.metadata.get("ownership")
    if contents.masks is not None and masks == "stored":
        model.set_masks(contents.masks, apply=False)
    else:
        params = model.timm_parameters()
        model.set_masks(masks_from_weights(params, model.prunable_names()), apply=False)
    model.eval()
    return model
