"""``SparseResNetForImageClassification``: a timm ResNet with masks, as a transformers model.

The wrapped timm model lives in ``model.timm_model``; masks are a dict keyed by timm's
parameter names (``layer2.0.conv1.weight``) in ``model.masks``. Saving writes this
library's safetensors layout (:mod:`hf_lottery_verify.storage`); loading never
unpickles. After ``import hf_lottery_verify``, ``AutoConfig`` and
``AutoModelForImageClassification`` load saved folders and Hub repos.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

from .architectures import check_architecture, create_resnet
from .configuration_sparse_resnet import SparseResNetConfig
from .errors import CheckpointError, MissingWeightsError, ShapeMismatchError, UnexpectedWeightsError
from .masks import (
    MaskDict,
    apply_masks_,
    check_masks,
    count_kept,
    count_total,
    masks_from_weights,
    prunable_parameter_names,
)
from .pruning import prune
from .storage import WEIGHTS_NAME, CheckpointContents, read_checkpoint, write_checkpoint

__all__ = ["SparseResNetPreTrainedModel", "SparseResNetForImageClassification", "load_model"]

logger = logging.getLogger(__name__)


class SparseResNetPreTrainedModel(PreTrainedModel):
    """Base class: configuration class, input name and (no-op) weight init."""

    config_class = SparseResNetConfig
    base_model_prefix = "timm_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        """timm initialises its own weights in its constructor; keep them."""


class SparseResNetForImageClassification(SparseResNetPreTrainedModel):
    """A sparse timm ResNet image classifier.

    Args:
        config: The model configuration (architecture, labels, input channels).

    Example:
        >>> from hf_lottery_verify import SparseResNetConfig, SparseResNetForImageClassification
        >>> model = SparseResNetForImageClassification(SparseResNetConfig(arch="cifar_resnet8"))
        >>> masks = model.prune_(density=0.2)
        >>> round(model.density, 3)
        0.2
    """

    def __init__(self, config: SparseResNetConfig) -> None:
        super().__init__(config)
        self.timm_model = create_resnet(
            config.arch, num_classes=config.num_labels, in_chans=config.in_chans, **(config.model_args or {})
        )
        self._masks: MaskDict = {}
        self.signature_key = None  # set by embed_signature (Scheme V2); never saved with the model
        self.signing_report: dict[str, Any] | None = None
        self.ownership_claim: dict[str, Any] | None = None  # public claim read from a loaded checkpoint
        self.post_init()

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutputWithNoAttention | tuple:
        """Classify a batch of images.

        Args:
            pixel_values: ``(batch, in_chans, H, W)`` float tensor (normalised).
            labels: Optional class indices; when given, the cross-entropy loss is returned.
            output_hidden_states: Also return the last feature map.
            return_dict: Return a tuple instead of a ``ModelOutput`` when ``False``.

        Returns:
            ``ImageClassifierOutputWithNoAttention`` with ``loss``, ``logits`` and ``hidden_states``.
        """
        if output_hidden_states:
            features = self.timm_model.forward_features(pixel_values)
            logits = self.timm_model.forward_head(features)
            hidden_states: tuple[torch.Tensor, ...] | None = (features,)
        else:
            logits = self.timm_model(pixel_values)
            hidden_states = None
        loss = None
        if labels is not None:
            loss = self._loss(logits, labels)
        if return_dict is False:
            out = (logits,) + ((hidden_states,) if hidden_states is not None else ())
            return ((loss,) + out) if loss is not None else out
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=hidden_states)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem = self.config.problem_type
        if problem is None:
            problem = "single_label_classification" if labels.dtype in (torch.long, torch.int) else "multi_label_classification"
        if problem == "regression":
            return nn.functional.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        if problem == "multi_label_classification":
            return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return nn.functional.cross_entropy(logits.float(), labels)

    # ------------------------------------------------------------------ masks

    @property
    def masks(self) -> MaskDict:
        """The masks by timm parameter name (a new dict; edit through :meth:`set_masks`)."""
        return dict(self._masks)

    def timm_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters of the wrapped timm model by timm name."""
        return dict(self.timm_model.named_parameters())

    def prunable_names(self, *, include_stem: bool = False, include_classifier: bool = False) -> list[str]:
        """Names of the weights that pruning touches by default (all convs but the stem)."""
        return prunable_parameter_names(
            self.timm_model, include_stem=include_stem, include_classifier=include_classifier
        )

    def set_masks(self, masks: Mapping[str, torch.Tensor], *, apply: bool = True) -> None:
        """Replace the masks and zero the pruned weights.

        Args:
            masks: Boolean tensors keyed by timm parameter name; parameters not named
                stay dense. Tensors are moved to the parameters' devices.
            apply: Zero the pruned weights now (``True``). Use ``False`` only when the
                weights are known to be masked already.

        Raises:
            MaskError: Unknown names, non-boolean masks or shape mismatches.
        """
        params = self.timm_parameters()
        check_masks(masks, params)
        self._masks = {n: m.detach().to(params[n].device).clone() for n, m in masks.items()}
        if apply:
            apply_masks_(params, self._masks)

    def apply_masks(self) -> None:
        """Zero the pruned weights (after loading weights from elsewhere, say)."""
        apply_masks_(self.timm_parameters(), self._masks)

    def prune_(
        self,
        *,
        density: float | None = None,
        fraction: float | None = None,
        method: str = "global_magnitude",
        seed: int = 0,
        include_stem: bool = False,
        include_classifier: bool = False,
    ) -> MaskDict:
        """Prune the model in place and return the new masks.

        Parameters without a mask get an all-ones mask first (the default set: every
        conv weight except the stem).

        Args:
            density: Target fraction of the masked weights to keep.
            fraction: Alternatively, share of the currently kept weights to remove.
            method: ``global_magnitude`` (default), ``layer_magnitude``, ``global_random``
                or ``layer_random``.
            seed: Seed for random methods.
            include_stem: Also prune the stem convolution.
            include_classifier: Also prune the classifier.

        Returns:
            The new masks.
        """
        params = self.timm_parameters()
        masks = dict(self._masks)
        for name in self.prunable_names(include_stem=include_stem, include_classifier=include_classifier):
            masks.setdefault(name, torch.ones_like(params[name], dtype=torch.bool))
        new = prune(params, masks, method=method, density=density, fraction=fraction, seed=seed)
        self.set_masks(new)
        return self.masks

    @property
    def density(self) -> float:
        """Kept fraction of the masked weights (1.0 when there are no masks)."""
        total = count_total(self._masks)
        return count_kept(self._masks) / total if total else 1.0

    def _apply(self, fn: Any, recurse: bool = True) -> SparseResNetForImageClassification:
        # Masks are a plain dict (names contain dots): after any move, put each mask on its
        # parameter's device. Only devices follow; dtype casts or to_empty() never touch them.
        super()._apply(fn, recurse)
        if getattr(self, "_masks", None):
            params = dict(self.timm_model.named_parameters())
            self._masks = {n: m.to(params[n].device) for n, m in self._masks.items()}
        return self

    # ------------------------------------------------------------------ saving and loading

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        compact: bool = False,
        signature: str | None = None,
        key_path: str | os.PathLike | None = None,
        signature_options: Mapping[str, Any] | None = None,
        eval_data: Any = None,
        safe_serialization: bool = True,
        push_to_hub: bool = False,
        **kwargs: Any,
    ) -> Path:
        """Save ``config.json`` and ``model.safetensors`` (weights plus packed masks).

        With ``signature``, the QR signature (Scheme V2) is embedded first when the model
        is not signed yet, and the ownership key is written to ``key_path`` only — never
        into the saved folder.

        Args:
            save_directory: Folder to write (created if needed).
            compact: Store only kept values and a position code for masked weights
                (loadable bit-exactly by this library only).
            signature: Text to embed as a QR code in the mask (see
                :func:`~hf_lottery_verify.signature.embed_signature`).
            key_path: Where to write the ownership key; required with ``signature`` and
                refused inside ``save_directory``.
            signature_options: Extra arguments for ``embed_signature`` (``seed``, ``copies``,
                ``module_weights``, ``rewind``, ``layers``, ``ecc``).
            eval_data: An :class:`~hf_lottery_verify.data.ImageData` split: the accuracy
                before and after embedding is measured and kept in ``self.signing_report``.
            safe_serialization: Must stay ``True``: this library never writes pickles.
            push_to_hub: Not handled here; push the saved folder with the hub functions.

        Returns:
            The folder.

        Raises:
            ValueError: ``safe_serialization=False``, ``push_to_hub=True`` or ``signature``
                without ``key_path``.
            KeyFileError: ``key_path`` lies inside ``save_directory``.
            SignatureError: The model is already signed with another text.
        """
        if not safe_serialization:
            raise ValueError("hf_lottery_verify only writes safetensors; drop safe_serialization=False.")
        if push_to_hub:
            raise ValueError("save_pretrained(push_to_hub=True) is not supported; save, then push the folder.")
        unsupported = set(kwargs) - {"max_shard_size", "token", "is_main_process"}
        if unsupported:
            raise TypeError(f"save_pretrained() does not support {sorted(unsupported)}: it always writes the "
                            "model's own weights and masks to one model.safetensors.")
        folder = Path(save_directory)
        if not kwargs.get("is_main_process", True):
            return folder  # under several processes only the main one writes (and signs)
        claims: dict[str, Any] = {}
        if signature is not None:
            self._sign_for_saving(signature, folder, key_path, signature_options, eval_data)
        if self.signature_key is not None:
            sec = self.signature_key.sections.get("signature", {})
            claims = {"signed": True, "schemes": ["V2"], "qr_version": sec.get("qr", {}).get("version")}
        elif self.ownership_claim:
            claims = dict(self.ownership_claim)  # re-saving a loaded signed model keeps its claim
        folder.mkdir(parents=True, exist_ok=True)
        self.config.density = round(self.density, 8) if self._masks else None
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(folder)
        metadata: dict[str, Any] = {"arch": self.config.arch}
        if claims:
            metadata["ownership"] = claims
        write_checkpoint(folder / WEIGHTS_NAME, self.timm_model.state_dict(), masks=self._masks, compact=compact,
                         metadata=metadata)
        return folder

    def _sign_for_saving(self, text: str, folder: Path, key_path: str | os.PathLike | None,
                         options: Mapping[str, Any] | None, eval_data: Any) -> None:
        from .errors import SignatureError
        from .ownership_key import check_key_outside
        from .signature import SIGNATURE_SECTION, embed_signature

        if key_path is None:
            raise ValueError("save_pretrained(signature=...) needs key_path=...: the key is the proof of ownership.")
        check_key_outside(key_path, folder)
        if self.signature_key is None and (self.ownership_claim or {}).get("signed"):
            raise SignatureError("This model was loaded from a checkpoint that already claims a QR signature "
                                 "(header 'ownership'); signing it again would overwrite parts of the first one. "
                                 "Sign the unsigned ticket instead.")
        if self.signature_key is not None:
            signed_text = self.signature_key.sections.get(SIGNATURE_SECTION, {}).get("text")
            if signed_text != text:
                raise SignatureError(f"This model is already signed with {signed_text!r}; refusing to sign it again "
                                     f"with {text!r}. Start from the unsigned ticket.")
            self.signature_key.save(key_path)
            return
        before = self._accuracy(eval_data)
        key = embed_signature(self, text, **dict(options or {}))
        after = self._accuracy(eval_data)
        key.save(key_path)
        self.signing_report = {
            "signature": text,
            "key_path": str(key_path),
            "changes": key.section(SIGNATURE_SECTION)["changes"],
            "accuracy_before": before,
            "accuracy_after": after,
            "accuracy_change": None if before is None else after - before,
        }
        logger.info("Signed before saving: %s", self.signing_report)

    def _accuracy(self, data: Any) -> float | None:
        if data is None:
            return None
        from .training import evaluate

        return evaluate(self, data)["accuracy"]

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: SparseResNetConfig | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> SparseResNetForImageClassification:
        """Load a saved folder or Hub repo (safetensors only; never unpickles).

        Args:
            pretrained_model_name_or_path: A local folder or a Hub repo id.
            config: Use this configuration instead of the folder's ``config.json``.
            revision: Hub branch, tag or commit.
            cache_dir: Hub cache folder.
            token: Hub token.
            local_files_only: Do not touch the network.
            **kwargs: Accepted for compatibility with the Auto classes; ``trust_remote_code``
                is never honoured.

        Returns:
            The model, in eval mode.

        Raises:
            CheckpointError: The checkpoint is missing, corrupt, pickle-only or mismatched.
            HubError: The repo cannot be fetched.
        """
        if kwargs.get("trust_remote_code"):
            logger.warning("trust_remote_code is ignored: hf_lottery_verify never runs code from a checkpoint.")
        model = load_model(
            pretrained_model_name_or_path,
            config=config,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
        return model


# --------------------------------------------------------------------------- load_model


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
        model_args = dict(cfg.get("model_args") or {})
        label_names = cfg.get("label_names")
        kwargs: dict[str, Any] = {}
        if label_names and (num_labels is None or num_labels == len(label_names)):
            kwargs["id2label"] = dict(enumerate(label_names))
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
        local = Path(source)
        if not local.exists():
            from .hub import download_model_folder, looks_like_repo_id

            if not looks_like_repo_id(str(source)):
                raise CheckpointError(f"No such file or folder: {source}", path=str(source))
            local = download_model_folder(
                str(source), revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
            )
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


AutoConfig.register(SparseResNetConfig.model_type, SparseResNetConfig, exist_ok=True)
AutoModelForImageClassification.register(SparseResNetConfig, SparseResNetForImageClassification, exist_ok=True)
