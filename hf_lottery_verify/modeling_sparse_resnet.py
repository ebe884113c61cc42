"""``SparseResNetForImageClassification``: a timm ResNet with masks, as a transformers model.

The wrapped timm model lives in ``model.timm_model``; masks are a dict keyed by timm's
parameter names (``layer2.0.conv1.weight``) in ``model.masks``. Saving writes this
library's safetensors layout (:mod:`hf_lottery_verify.storage`); loading
(:func:`load_model`: any ResNet checkpoint layout — ours, timm, TimmWrapper, state dicts,
Hub repos — as this class) never unpickles; it trusts the checkpoint (checksums and stored
masks are checked strictly), while verification reads a suspect with
:func:`hf_lottery_verify.suspect.read_suspect`, which trusts nothing. After
``import hf_lottery_verify``, ``AutoConfig`` and ``AutoModelForImageClassification`` load
saved folders and Hub repos.
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
from transformers.utils.hub import convert_file_size_to_int

from . import _registration
from .architectures import create_resnet
from .configuration_sparse_resnet import SparseResNetConfig, config_from_checkpoint
from .errors import CheckpointError, MissingWeightsError, ShapeMismatchError, UnexpectedWeightsError
from .image_processing import REMOTE_CODE_AUTO_MAP, save_loaders
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
from .suspect import resolve_source

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
        # The public ownership claim (who claims, when, a hash commitment to the private key);
        # never anything private. Set by signing or read from a loaded checkpoint's header.
        self.ownership_claim: dict[str, Any] | None = None
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
        """Parameters of the wrapped timm model by timm name.

        For an object that may be a model, a bare timm network or a state dict, use
        :func:`hf_lottery_verify.masks.timm_parameters` (same result for a model).

        Returns:
            `dict[str, nn.Parameter]`: The parameters (not copies) by timm name, in
            ``named_parameters`` order.
        """
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
            params = self.timm_parameters()
            self._masks = {n: m.to(params[n].device) for n, m in self._masks.items()}
        return self

    # ------------------------------------------------------------------ saving and loading

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        compact: bool = False,
        signature: str | None = None,
        key: str | os.PathLike | None = None,
        owner: str | None = None,
        safe_serialization: bool = True,
        max_shard_size: int | str | None = None,
        is_main_process: bool = True,
        push_to_hub: bool = False,
        **kwargs: Any,
    ) -> Path:
        """Save ``config.json``, ``model.safetensors`` (timm weights only) and ``masks.safetensors``, plus what
        other loaders need: ``preprocessor_config.json`` (the image processor, once the config
        carries its normalisation) and, for the dense layout, the self-contained
        ``modeling_sparse_resnet.py`` that ``auto_map`` names (loaded only with ``trust_remote_code=True``).

        With ``signature``, the QR signature (Scheme V2) is embedded first
        (:func:`~hf_lottery_verify.signature.embed_signature`) and the private ownership key
        is written to ``key`` only — never into the saved folder, and never kept on the
        model: the model keeps only the public claim (:attr:`ownership_claim`), which goes
        into the header metadata.

        Args:
            save_directory (`str` or `os.PathLike`): Folder to write (created if needed).
            compact (`bool`, *optional*, defaults to `False`): Store only kept values and a
                position code for masked weights (bit-exact; readable by this library only).
            signature (`str`, *optional*): Text to embed as a QR code in the mask (see
                :func:`~hf_lottery_verify.signature.embed_signature`).
            key (`str` or `os.PathLike`, *optional*): The key file; required with
                ``signature``; refused inside ``save_directory``. A new file is made, or an
                existing key without a signature gains one (derived from its secret).
            owner (`str`, *optional*): Public name put into the ownership claim.
            safe_serialization (`bool`, *optional*, defaults to `True`): Must stay ``True``:
                this library never writes pickles.
            max_shard_size (`int` or `str`, *optional*): Accepted for compatibility; the
                weights always go to one file, so a limit smaller than the weights raises.
            is_main_process (`bool`, *optional*, defaults to `True`): Under several
                processes only the main one writes (and signs).
            push_to_hub (`bool`, *optional*, defaults to `False`): Not handled here; use
                :meth:`push_to_hub`.

        Returns:
            The folder.

        Raises:
            ValueError: ``safe_serialization=False``, ``push_to_hub=True``, ``signature``
                without ``key``, or a ``max_shard_size`` below the weights' size.
            TypeError: An unsupported keyword argument.
            KeyFileError: ``key`` lies inside ``save_directory``.
            KeyMismatchError: The key already holds a signature.
            SignatureError: The model already carries a signature claim.
        """
        if not safe_serialization:
            raise ValueError("hf_lottery_verify only writes safetensors; drop safe_serialization=False.")
        if push_to_hub:
            raise ValueError("save_pretrained(push_to_hub=True) is not supported; call model.push_to_hub(repo_id, ...).")
        if kwargs:
            raise TypeError(f"save_pretrained() got unsupported argument(s) {sorted(kwargs)}; it writes the "
                            "model's own config, weights and masks (token and revision belong to push_to_hub).")
        folder = Path(save_directory)
        state = self.timm_model.state_dict()
        if max_shard_size is not None:
            limit = convert_file_size_to_int(max_shard_size)
            size = sum(t.numel() * t.element_size() for t in state.values())
            if size > limit:
                raise ValueError(f"The weights take {size} bytes, more than max_shard_size={max_shard_size}; "
                                 "hf_lottery_verify writes one model.safetensors (strict-loadable by timm).")
        if not is_main_process:
            return folder
        if signature is not None:
            self._sign_for_saving(signature, folder, key, owner)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.density = round(self.density, 8) if self._masks else None
        self.config.architectures = [type(self).__name__]
        if compact:  # the compact layout is readable by this library only
            vars(self.config).pop("auto_map", None)
        else:
            self.config.auto_map = dict(REMOTE_CODE_AUTO_MAP)
        self.config.save_pretrained(folder)
        metadata: dict[str, Any] = {"arch": self.config.arch}
        if self.ownership_claim:
            metadata["ownership"] = dict(self.ownership_claim)
        write_checkpoint(folder / WEIGHTS_NAME, state, masks=self._masks, compact=compact, metadata=metadata)
        save_loaders(self.config, folder, compact=compact)
        return folder

    def _sign_for_saving(self, text: str, folder: Path, key_path: str | os.PathLike | None, owner: str | None) -> None:
        from .ownership_key import check_key_outside
        from .signature import sign

        if key_path is None:
            raise ValueError("save_pretrained(signature=...) needs key=<path>: the key is the proof of ownership.")
        check_key_outside(key_path, folder)
        sign(self, text, key=key_path, owner=owner)

    def push_to_hub(self, repo_id: str, *, signature: str | None = None, key: Any = None, owner: str | None = None,
                    **options: Any) -> Any:
        """Publish the model: config, weights, masks, a model card and an ownership badge, in one commit.

        Two calls: :func:`~hf_lottery_verify.signature.sign` when ``signature`` is given, then
        :func:`hf_lottery_verify.publishing.publish`, which anchors the key with the publishing
        commit; the private key is never uploaded.

        Args:
            repo_id (`str`): ``owner/name`` on the Hub (or the server in ``HF_ENDPOINT``).
            signature (`str`, *optional*): Embed this QR signature first (see :meth:`save_pretrained`).
            key (`OwnershipKey`, `str` or `os.PathLike`, *optional*): The key (a path with
                ``signature``); a key file gains the reference and the anchor.
            owner (`str`, *optional*): Public name in the ownership claim.
            **options: The options of :func:`~hf_lottery_verify.publishing.push_model` (``private``,
                ``token``, ``revision``, ``commit_message``, ``card_data``, ``eval_results``, ``compact``).

        Returns:
            The :class:`~hf_lottery_verify.publishing.Publication` (commit sha, URL, the anchored key).

        Raises:
            TypeError: An unsupported keyword argument (``safe_serialization``, ``max_shard_size``, ...).
            HubError: The upload failed.
        """
        from .publishing import publish

        if signature is not None:
            self._sign_for_saving(signature, Path(repo_id), key, owner)
        return publish(self, repo_id, key=key, owner=owner, **options)

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
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> SparseResNetForImageClassification:
        """Load a saved folder or Hub repo (safetensors only; never unpickles, never runs remote code).

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): A local folder, file or Hub repo id.
            config (`SparseResNetConfig`, *optional*): Use this configuration instead of the folder's.
            revision (`str`, *optional*): Hub branch, tag or commit.
            cache_dir (`str` or `os.PathLike`, *optional*): Hub cache folder.
            token (`str` or `bool`, *optional*): Hub token.
            local_files_only (`bool`, *optional*, defaults to `False`): Do not touch the network.
            dtype (`torch.dtype` or `str`, *optional*): Cast floating-point weights to this dtype
                (``torch_dtype`` is accepted as an alias; ``"auto"`` keeps the stored dtype).
            **kwargs: ``force_download``, ``proxies`` (must be ``None``), ``subfolder`` (must
                be empty) and transformers' internal ``_``-prefixed arguments are accepted;
                ``trust_remote_code`` is ignored with a warning; anything else raises ``TypeError``.

        Returns:
            The model, in eval mode.

        Raises:
            TypeError: Unsupported arguments (``device_map``, quantisation, ...).
            CheckpointError: The checkpoint is missing, corrupt, pickle-only or mismatched.
            HubError: The repo cannot be fetched.
        """
        if model_args:
            raise TypeError("from_pretrained() takes no extra positional arguments.")
        if "torch_dtype" in kwargs:
            dtype = dtype or kwargs.pop("torch_dtype")
        if kwargs.pop("trust_remote_code", None):
            logger.warning("trust_remote_code is ignored: hf_lottery_verify never runs code from a checkpoint.")
        force_download = bool(kwargs.pop("force_download", False))
        if kwargs.pop("proxies", None) is not None:
            raise TypeError("from_pretrained(proxies=...) is not supported; configure proxies in the environment.")
        if kwargs.pop("subfolder", "") or None:
            raise TypeError("from_pretrained(subfolder=...) is not supported; pass the folder itself.")
        unsupported = sorted(k for k in kwargs if not k.startswith("_") and k not in ("code_revision",
                                                                                      "adapter_kwargs"))
        if unsupported:
            raise TypeError(f"from_pretrained() does not support {unsupported}: a sparse ticket loads on the CPU "
                            "in its stored dtype; move it with .to(...) afterwards.")
        model = load_model(pretrained_model_name_or_path, config=config, revision=revision, cache_dir=cache_dir,
                           token=token, local_files_only=local_files_only, force_download=force_download)
        if dtype is not None and dtype != "auto":
            model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        return model


AutoConfig.register(SparseResNetConfig.model_type, SparseResNetConfig, exist_ok=True)
AutoModelForImageClassification.register(SparseResNetConfig, SparseResNetForImageClassification, exist_ok=True)
_registration.install_hooks()  # the configuration's registration waited for this module (imported first)


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
    model_args: Mapping[str, Any] | None = None,
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
        model_args: Extra timm arguments of ``arch`` (narrow widths, say) for a source
            without a config.
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
        config = config_from_checkpoint(contents, arch=arch, num_labels=num_labels, in_chans=in_chans,
                                       model_args=model_args)
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
