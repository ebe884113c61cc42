"""The safetensors files of a sparse ticket, and reading the ResNet checkpoint layouts of others.

A model folder written by this library (format version 2):

* ``model.safetensors`` — exactly the timm model's ``state_dict`` under timm's own names
  (``layer1.0.conv1.weight``), dense, zeros where pruned, and nothing else: plain timm
  strict-loads it. Its header metadata holds ``{"format": "pt", "hf_lottery_verify":
  "<json>"}`` with ``format_version``, ``layout``, the architecture, the public ownership
  claim when signed, and a ``sha256`` of the tensor bytes (the owner's own loads detect
  corruption, not only truncation).
* ``masks.safetensors`` — one bit-packed ``U8`` tensor per masked parameter, under the
  parameter's name (:func:`~hf_lottery_verify.codecs.pack_bits`, most significant bit
  first); header metadata ``hf_lottery_verify_masks`` with per-mask ``shape`` and
  ``kept`` counts and the ``sha256`` of the weights they belong to. A convenience for
  loading: verification never reads it (a suspect's mask comes from its weights).
* ``compact=True`` instead writes a ``model.safetensors`` in the *compact* layout for
  extreme tickets: for each masked parameter only the kept values
  (``compact.values.<name>``, same dtype, bit-exact) and an Elias–Fano code of their
  positions (``compact.low.<name>``, ``compact.high.<name>``); no masks file. A 2%-dense
  CIFAR ResNet-18 drops from 44.7 MB to ~1.2 MB; only this library reads it.

Folders of format version 1 (masks inside ``model.safetensors`` as ``masks.<name>``, written by
0.1) are refused with what to do; as a suspect their weights are still read. Reading also accepts plain timm folders (``config.json`` with ``architecture``),
transformers ``TimmWrapper`` checkpoints (``timm_model.`` prefix) and bare state dicts,
and maps names to timm's canonical ones. Only safetensors is ever read: a folder holding
only pickle files raises :class:`~hf_lottery_verify.errors.PickleRefusedError`.

Every file is opened and checked by one strict reader (:mod:`.files`: regular files only,
safetensors by its own rules, bounded JSON) and ``config.json`` is read by an allow-list
(:mod:`.config`), whoever wrote them. Beyond that, :func:`read_checkpoint` trusts the
contents (it is for the owner's own files: stored masks and checksums are enforced).
Reading a *suspect* — which must not trust headers, stored masks or checksums — is
:func:`hf_lottery_verify.suspect.read_suspect`.

Modules (one concept each; every name is importable from ``hf_lottery_verify.storage``):

* :mod:`.fileformat` — file names, header keys, prefixes, :data:`FORMAT_VERSION`,
  :class:`CheckpointContents`, :func:`masks_path_for` and :func:`tensor_digest`.
* :mod:`.files` — :func:`open_regular`, :func:`read_json` and :func:`read_safetensors`: the
  checks on every file read.
* :mod:`.config` — :func:`read_config`: ``config.json`` by an allow-list of checked fields.
* :mod:`.writing` — :func:`write_checkpoint` (dense or compact layout, atomic).
* :mod:`.reading` — :func:`read_checkpoint` and the readers of our header metadata, the
  compact layout, shard indexes and foreign layouts.
"""

from __future__ import annotations

from .config import read_config
from .fileformat import (
    CONFIG_NAME,
    FORMAT_VERSION,
    MASKS_METADATA_KEY,
    MASKS_NAME,
    METADATA_KEY,
    PICKLE_SUFFIXES,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    CheckpointContents,
    masks_path_for,
    tensor_digest,
)
from .fileformat import VALUES_PREFIX as VALUES_PREFIX
from .files import name_some, read_safetensors
from .reading import (
    canonicalize_state_dict,
    decode_compact,
    find_weight_files,
    parse_metadata,
    read_checkpoint,
    strip_foreign_entries,
)
from .writing import write_checkpoint

__all__ = [
    "WEIGHTS_NAME",
    "MASKS_NAME",
    "WEIGHTS_INDEX_NAME",
    "CONFIG_NAME",
    "METADATA_KEY",
    "MASKS_METADATA_KEY",
    "FORMAT_VERSION",
    "PICKLE_SUFFIXES",
    "CheckpointContents",
    "write_checkpoint",
    "read_checkpoint",
    "read_safetensors",
    "parse_metadata",
    "masks_path_for",
    "tensor_digest",
    "canonicalize_state_dict",
    "strip_foreign_entries",
    "decode_compact",
    "find_weight_files",
    "read_config",
    "name_some",
]
