"""The *reference*: a compact description of the published model, kept in the owner's key.

Re-aligning a suspect's channels needs to know what the owner's channels look like, but
not the whole model: per masked convolution the mask (Elias–Fano coded, ~7.6 bits per kept
weight at 2% density) and the L2 norm of every output row and input column over its kept
positions; the small dense tensors in full (stem convolution, batch norms, a small
classifier); and every tensor's shape. A 2%-dense CIFAR ResNet-50 (94 MB dense) needs 1.9 MB,
a CIFAR ResNet-20 33 kB.

The reference lives in the ``reference`` section of an
:class:`~hf_lottery_verify.ownership_key.OwnershipKey`. It is recorded once, when the model
is published (:func:`with_reference`), and the key's public commitment covers it: a claimant
cannot swap in a reference fitted to someone else's model after the key was anchored.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch
from torch import nn

from ..architectures import create_resnet
from ..codecs import decode_positions, encode_positions, pack_bits, unpack_bits
from ..errors import CheckpointError, KeyMismatchError, MaskError
from ..masks import prunable_parameter_names
from ..ownership_key import REFERENCE_SECTION, OwnershipKey, mask_digest
from ..spaces import ChannelSpace, channel_spaces

__all__ = ["REFERENCE_FORMAT", "Reference", "make_reference", "reference_from_key", "with_reference"]

REFERENCE_FORMAT = 1
"""Layout version of the key's ``reference`` section."""

FULL_TENSOR_MAX = 100_000
"""Unmasked weights (stem, classifier) with at most this many entries are stored in full."""

_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


@dataclass
class Reference:
    """What channel re-alignment needs to know about the owner's published model.

    Attributes:
        arch: timm architecture name.
        model_args: Extra ``timm.create_model`` arguments of the architecture (``None`` if none).
        shapes: Shape of every tensor of the model's state dict (parameters and buffers).
        masks: The published masks (boolean, by parameter name).
        row_norms: For every convolution weight and ``fc.weight``: the L2 norm of each output
            row over its kept positions (all positions for unmasked weights), float32.
        col_norms: The same for each input column.
        tensors: Tensors kept in full: batch norm ``weight``/``bias``/``running_mean``/
            ``running_var``, unmasked convolutions and the classifier weight when they have
            at most :data:`FULL_TENSOR_MAX` entries, biases.
        mask_digest: :func:`~hf_lottery_verify.ownership_key.mask_digest` of ``masks``.
        format_version: Layout version.
    """

    arch: str
    model_args: dict[str, Any] | None
    shapes: dict[str, tuple[int, ...]]
    masks: dict[str, torch.Tensor]
    row_norms: dict[str, torch.Tensor]
    col_norms: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    mask_digest: str = ""
    format_version: int = REFERENCE_FORMAT

    @property
    def in_chans(self) -> int:
        """Input image channels."""
        return int(self.spaces[0].size)

    @property
    def num_classes(self) -> int:
        """Rows of the classifier (0 without one)."""
        shape = self.shapes.get("fc.weight")
        return int(shape[0]) if shape else 0

    @cached_property
    def _structure(self) -> nn.Module:
        with torch.device("meta"):
            return create_resnet(self.arch, num_classes=max(self.num_classes, 1), in_chans=_stem_in_chans(self.shapes),
                                 **(self.model_args or {}))

    @cached_property
    def spaces(self) -> list[ChannelSpace]:
        """The architecture's channel spaces (:func:`~hf_lottery_verify.spaces.channel_spaces`), in forward order.

        Raises:
            KeyMismatchError: The stored shapes do not fit the architecture.
        """
        spaces = channel_spaces(self._structure)
        sizes = {n: tuple(t.shape) for n, t in self._structure.state_dict().items()}
        wrong = [n for n, s in self.shapes.items() if sizes.get(n, s) != s] + [n for n in sizes if n not in self.shapes]
        if wrong:
            raise KeyMismatchError(f"The reference's tensors do not fit architecture '{self.arch}' "
                                   f"({', '.join(wrong[:4])}); the key's reference section is damaged.")
        return spaces

    @cached_property
    def bn_eps(self) -> dict[str, float]:
        """The ``eps`` of every batch norm of the architecture."""
        return {n: float(m.eps) for n, m in self._structure.named_modules() if isinstance(m, nn.BatchNorm2d)}

    @cached_property
    def kept_per_row(self) -> dict[str, torch.Tensor]:
        """Kept weights of each output row of every masked weight (``int64``)."""
        return {n: m.reshape(m.shape[0], -1).sum(1) for n, m in self.masks.items()}

    @cached_property
    def kept_per_column(self) -> dict[str, torch.Tensor]:
        """Kept weights of each input column of every masked weight (``int64``)."""
        return {n: m.transpose(0, 1).reshape(m.shape[1], -1).sum(1) for n, m in self.masks.items()}

    @cached_property
    def live_only(self) -> Reference:
        """This reference without the kept weights that cannot influence the published model's output.

        Verification compares suspects with it (:mod:`hf_lottery_verify.liveness`): a suspect's
        function-free weights are zeroed before they are compared, so the reference's must not
        count either. Derived from the committed reference alone, so it is as binding as the
        reference; ``self`` when nothing is function-free.
        """
        from ..liveness import liveness

        state = {**self.masks, **self.tensors}
        state.update({n: torch.ones(s, dtype=torch.bool) for n, s in self.shapes.items()  # big dense weights: all read
                      if len(s) >= 2 and n not in state})
        dead = liveness(state, arch=self.arch, model_args=self.model_args, spaces=self.spaces)
        masks = {n: m & dead.live[n] if n in dead.dead_nonzero else m for n, m in self.masks.items()}
        if all(masks[n] is m for n, m in self.masks.items()):
            return self
        out = replace(self, masks=masks)
        out.__dict__.update({k: v for k, v in self.__dict__.items() if k in ("_structure", "spaces", "bn_eps")})
        out.__dict__["live_only"] = out
        return out

    def nbytes(self) -> int:
        """Size of the reference as stored in a key: tensor bytes plus the section's JSON."""
        data, tensors = self.to_section()
        return len(json.dumps(data)) + sum(t.numel() * t.element_size() for t in tensors.values())

    # ------------------------------------------------------------------ key section

    def to_section(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The JSON-safe section and its tensors (names without the ``reference.`` prefix)."""
        tensors: dict[str, torch.Tensor] = {}
        masks_meta: dict[str, dict[str, Any]] = {}
        for name, mask in self.masks.items():
            kept = int(mask.sum())
            low, high, low_bits = encode_positions(mask)
            packed = pack_bits(mask)
            if low.numel() + high.numel() < packed.numel():
                tensors[f"mask.low.{name}"], tensors[f"mask.high.{name}"] = low, high
                masks_meta[name] = {"codec": "elias_fano", "kept": kept, "low_bits": int(low_bits)}
            else:
                tensors[f"mask.bits.{name}"] = packed
                masks_meta[name] = {"codec": "bits", "kept": kept}
        for name, t in self.row_norms.items():
            tensors[f"row_norm.{name}"] = t.float()
        for name, t in self.col_norms.items():
            tensors[f"col_norm.{name}"] = t.float()
        for name, t in self.tensors.items():
            tensors[f"tensor.{name}"] = t
        data = {
            "format": self.format_version,
            "arch": self.arch,
            "model_args": self.model_args,
            "shapes": {n: list(s) for n, s in self.shapes.items()},
            "masks": masks_meta,
            "mask_digest": self.mask_digest,
        }
        return data, tensors

    @classmethod
    def from_section(cls, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Reference:
        """Rebuild a reference from a key section (the inverse of :meth:`to_section`).

        Raises:
            KeyMismatchError: Unknown format, or the section and its tensors do not fit together.
        """
        version = data.get("format")
        if not isinstance(version, int) or version < 1 or version > REFERENCE_FORMAT:
            raise KeyMismatchError(f"The key's reference section has format {version!r}; this version of "
                                   f"hf_lottery_verify reads formats 1..{REFERENCE_FORMAT} (upgrade it).")
        try:
            shapes = {str(n): tuple(int(v) for v in s) for n, s in data["shapes"].items()}
            _check_shapes(str(data["arch"]), shapes, data.get("model_args"))  # before anything is decoded
            masks: dict[str, torch.Tensor] = {}
            for name, meta in data["masks"].items():
                shape = shapes[name]
                if meta["codec"] == "elias_fano":
                    masks[name] = decode_positions(tensors[f"mask.low.{name}"], tensors[f"mask.high.{name}"],
                                                   int(meta["low_bits"]), kept=int(meta["kept"]), shape=shape)
                else:
                    masks[name] = unpack_bits(tensors[f"mask.bits.{name}"], shape)
                    if int(masks[name].sum()) != int(meta["kept"]):
                        raise MaskError(f"mask of '{name}' holds {int(masks[name].sum())} kept weights, "
                                        f"the section says {meta['kept']}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KeyMismatchError(f"The key's reference section is damaged ({type(exc).__name__}: {exc}); "
                                   "restore the key from its backup.") from exc

        def strip(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        model_args = data.get("model_args")
        return cls(arch=str(data["arch"]), model_args=dict(model_args) if model_args else None, shapes=shapes,
                   masks=masks, row_norms=strip("row_norm."), col_norms=strip("col_norm."), tensors=strip("tensor."),
                   mask_digest=str(data.get("mask_digest", "")), format_version=int(version))


def _check_shapes(arch: str, shapes: Mapping[str, tuple[int, ...]], model_args: Any) -> None:
    """Refuse a reference whose shapes are not exactly those of ``arch`` (a hostile key could declare any)."""
    from ..key_sections import ARCH_RE

    if not ARCH_RE.match(arch) or (model_args is not None and not isinstance(model_args, dict)):
        raise KeyMismatchError(f"The key's reference names an invalid architecture {arch[:40]!r}.")
    fc = shapes.get("fc.weight", (1,))
    if not 1 <= int(fc[0]) <= 100_000 or _stem_in_chans(shapes) not in (1, 3):
        raise KeyMismatchError("The key's reference has an implausible label count or input channel count.")
    expected = _architecture_shapes(arch, int(fc[0]), _stem_in_chans(shapes), json.dumps(model_args, sort_keys=True))
    if expected != dict(shapes):
        raise KeyMismatchError(f"The key's reference shapes do not fit architecture '{arch}'; the section is damaged.")


@functools.lru_cache(maxsize=32)
def _architecture_shapes(arch: str, num_classes: int, in_chans: int, model_args: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        structure = create_resnet(arch, num_classes=num_classes, in_chans=in_chans, **(json.loads(model_args) or {}))
    return {n: tuple(t.shape) for n, t in structure.state_dict().items()}


def _stem_in_chans(shapes: Mapping[str, tuple[int, ...]]) -> int:
    for name in ("conv1.weight", "conv1.0.weight"):
        if name in shapes:
            return int(shapes[name][1])
    return 3


def _source_parts(source: nn.Module | Mapping[str, torch.Tensor], arch: str | None,
                  masks: Mapping[str, torch.Tensor] | None, model_args: Mapping[str, Any] | None
                  ) -> tuple[dict[str, torch.Tensor], str, dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    from ..storage import canonicalize_state_dict

    if isinstance(source, nn.Module):
        config = getattr(source, "config", None)
        net = getattr(source, "timm_model", source)
        arch = arch or getattr(config, "arch", None) or (getattr(net, "pretrained_cfg", None) or {}).get("architecture")
        if model_args is None and config is not None:
            model_args = getattr(config, "model_args", None)
        if masks is None and hasattr(source, "set_masks"):
            masks = source.masks
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    elif isinstance(source, Mapping):
        state = {k: v.detach().cpu() for k, v in canonicalize_state_dict(source).items()}
    else:
        raise TypeError(f"make_reference() takes a model or a state dict, not {type(source).__name__}.")
    if not arch:
        raise CheckpointError("make_reference() needs arch=... (the timm architecture of the state dict).")
    return state, str(arch).split(".")[0], (dict(masks) if masks is not None else None), (
        dict(model_args) if model_args else None)


@torch.no_grad()
def make_reference(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    *,
    arch: str | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> Reference:
    """Describe the published model compactly, for re-aligning suspects later.

    Args:
        model_or_state_dict: The published model (a
            :class:`~hf_lottery_verify.SparseResNetForImageClassification` or a timm ResNet),
            or its state dict under timm's names.
        arch (`str`, *optional*): The timm architecture; read off the model when omitted
            (required for a state dict).
        masks (`Mapping[str, torch.Tensor]`, *optional*): The published masks; defaults to
            the model's masks, or (state dict) to the non-zero pattern of every convolution
            but the stem.
        model_args (`Mapping[str, Any]`, *optional*): Extra ``timm.create_model`` arguments
            (read off the model's config when omitted).

    Returns:
        The :class:`Reference`.

    Raises:
        CheckpointError: A state dict without ``arch``.
        MaskError: A mask that names no tensor, or does not have its tensor's shape.
        MissingWeightsError, UnsupportedArchitectureError: The state dict does not describe
            a timm ResNet of ``arch`` whose channels can be followed.

    Example:
        >>> reference = make_reference(ticket)                       # doctest: +SKIP
        >>> add_reference_to_key(key, reference)                     # doctest: +SKIP
    """
    state, arch, masks, model_args = _source_parts(model_or_state_dict, arch, masks, model_args)
    spaces = channel_spaces(state, arch=arch, model_args=model_args)
    convs = [c for s in spaces for c in s.producer_convs]
    if masks is None:
        with torch.device("meta"):
            structure = create_resnet(arch, in_chans=spaces[0].size, **(model_args or {}))
        masks = {c: state[c] != 0 for c in prunable_parameter_names(structure)}
    for name, mask in masks.items():
        if name not in state:
            raise MaskError(f"The mask '{name}' names no tensor of the {arch} model.", param_name=name)
        if tuple(mask.shape) != tuple(state[name].shape):
            raise MaskError(f"The mask of '{name}' has shape {tuple(mask.shape)}, the weight "
                            f"{tuple(state[name].shape)}.", param_name=name)
    masks = {n: m.detach().cpu().bool() for n, m in masks.items()}
    weights = [*convs, *(["fc.weight"] if "fc.weight" in state else [])]
    row_norms, col_norms, full = {}, {}, {}
    for name in weights:
        w = state[name].double()
        if name in masks:
            w = w * masks[name]
        row_norms[name] = w.reshape(w.shape[0], -1).norm(dim=1).float()
        col_norms[name] = w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1).float()
        if name not in masks and w.numel() <= FULL_TENSOR_MAX:
            full[name] = state[name].float().clone()
    for space in spaces:
        for name in space.producers:
            if name not in convs:  # batch norm tensors and conv biases
                full[name] = state[name].float().clone()
    if "fc.bias" in state:
        full["fc.bias"] = state["fc.bias"].float().clone()
    shapes = {n: tuple(int(s) for s in t.shape) for n, t in state.items()}
    return Reference(arch=arch, model_args=model_args, shapes=shapes, masks=masks, row_norms=row_norms,
                     col_norms=col_norms, tensors=full, mask_digest=mask_digest(masks))


def reference_from_key(key: OwnershipKey) -> Reference | None:
    """The reference stored in ``key``, or ``None`` when it has none.

    Args:
        key (`OwnershipKey`): The owner's key.

    Returns:
        The :class:`Reference`, or ``None``.

    Raises:
        KeyMismatchError: The section is damaged, of an unknown format, or of another architecture.
    """
    if REFERENCE_SECTION not in key.sections:
        return None
    reference = Reference.from_section(key.sections[REFERENCE_SECTION], key.section_tensors(REFERENCE_SECTION))
    if reference.arch != key.arch:
        raise KeyMismatchError(f"The key's reference describes a '{reference.arch}', the key a '{key.arch}'.")
    return reference


def with_reference(key: OwnershipKey, model: nn.Module) -> OwnershipKey:
    """A copy of ``key`` with the reference of the model about to be published (the key itself is unchanged).

    Publishing records it once, before the key's commitment is published: verification
    re-aligns a suspect's channels to it, and the commitment covers it, so nobody can swap
    in a reference fitted to someone else's model later. Besides the channel fingerprints
    (:func:`make_reference`) the section records how the model reads its inputs and names
    its classes (``published``: label count, channels, image size, normalisation,
    ``label2id``), which the black-box checks query with.

    Args:
        key (`OwnershipKey`): The owner's key, without a reference.
        model (`nn.Module`): The model as it is published, with its masks.

    Returns:
        The new key.

    Raises:
        KeyMismatchError: The key already holds a reference, or belongs to another architecture.
    """
    arch = getattr(getattr(model, "config", None), "arch", None) or key.arch
    if key.arch != str(arch).split(".")[0]:
        raise KeyMismatchError(f"The key belongs to architecture '{key.arch}', the model is a '{arch}'.")
    data, tensors = make_reference(model, arch=arch, masks=getattr(model, "masks", None) or None).to_section()
    config = getattr(model, "config", None)
    if config is not None:
        mean, std = getattr(config, "image_mean", None), getattr(config, "image_std", None)
        data["published"] = {
            "num_labels": int(config.num_labels), "in_chans": int(getattr(config, "in_chans", 3)),
            "image_size": int(getattr(config, "image_size", 32)),
            "image_mean": list(mean) if mean else None, "image_std": list(std) if std else None,
            "label2id": {str(k): int(v) for k, v in (config.label2id or {}).items()},
        }
    return key.with_section(REFERENCE_SECTION, data, tensors)
