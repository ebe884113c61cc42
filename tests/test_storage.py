from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import hf_lottery_verify as hlv
from hf_lottery_verify.storage import (
    MASKS_METADATA_KEY,
    METADATA_KEY,
    canonicalize_state_dict,
    find_weight_files,
    read_checkpoint,
)

from .helpers import make_model


def _same_weights(a: hlv.SparseResNetForImageClassification, b: hlv.SparseResNetForImageClassification) -> bool:
    sa, sb = a.timm_model.state_dict(), b.timm_model.state_dict()
    return sa.keys() == sb.keys() and all(
        torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa
    )


def _same_masks(a, b) -> bool:
    return a.masks.keys() == b.masks.keys() and all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)


@pytest.mark.parametrize("compact", [False, True])
def test_round_trip_is_bit_exact(tmp_path: Path, tiny_model, compact: bool) -> None:
    # give BN buffers non-trivial values so they are checked too
    tiny_model.train()(torch.randn(4, 3, 32, 32))
    tiny_model.save_pretrained(tmp_path, compact=compact)
    back = hlv.load_model(tmp_path)
    assert _same_weights(tiny_model, back)
    assert _same_masks(tiny_model, back)
    assert back.config.arch == "cifar_resnet8" and back.config.density == pytest.approx(0.2, abs=1e-4)
    meta = read_checkpoint(tmp_path).metadata
    assert meta["layout"] == ("compact" if compact else "dense") and meta["format_version"] == 2
    if compact:
        assert meta["masks"]["layer1.0.conv1.weight"]["shape"] == [16, 16, 3, 3]
        assert not (tmp_path / "masks.safetensors").exists()
    else:
        with safe_open(tmp_path / "masks.safetensors", framework="pt") as f:
            info = json.loads(f.metadata()[MASKS_METADATA_KEY])
        assert info["masks"]["layer1.0.conv1.weight"]["shape"] == [16, 16, 3, 3]


def test_dense_layout_is_plain_timm_loadable(tmp_path: Path, tiny_model) -> None:
    tiny_model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert meta["format"] == "pt" and json.loads(meta[METADATA_KEY])["layout"] == "dense"
    with safe_open(tmp_path / "masks.safetensors", framework="pt") as f:
        mask = f.get_tensor("layer1.0.conv1.weight")
        assert json.loads(f.metadata()[MASKS_METADATA_KEY])["bit_order"] == "big"
    assert mask.dtype == torch.uint8 and mask.numel() == (16 * 16 * 9 + 7) // 8
    plain = timm.create_model("cifar_resnet8")
    assert set(plain.state_dict()) == keys  # exactly the weights, nothing else
    plain.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(plain.eval()(x), tiny_model.eval()(x).logits)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "sparse_resnet" and cfg["architecture"] == "cifar_resnet8"
    assert cfg["num_classes"] == 10 and cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    # timm's own loader reads the folder as a local-dir model
    local = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert torch.equal(local.eval()(x), tiny_model.eval()(x).logits)


def test_format_version_1_folders_still_load(tmp_path: Path, tiny_model) -> None:
    from hf_lottery_verify.codecs import pack_bits

    sd = {k: v.contiguous() for k, v in tiny_model.timm_model.state_dict().items()}
    masks = tiny_model.masks
    tensors = dict(sd) | {f"masks.{n}": pack_bits(m) for n, m in masks.items()}
    info = {n: {"shape": list(m.shape), "kept": int(m.sum())} for n, m in masks.items()}
    meta = {"format_version": 1, "layout": "dense", "bit_order": "big", "masks": info, "arch": "cifar_resnet8"}
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt", METADATA_KEY: json.dumps(meta)})
    back = hlv.load_model(tmp_path)
    assert _same_weights(tiny_model, back) and _same_masks(tiny_model, back)


def test_masks_file_of_other_weights_is_refused(tmp_path: Path, tiny_model) -> None:
    tiny_model.save_pretrained(tmp_path / "a")
    other = make_model(density=0.3, seed=1)
    other.save_pretrained(tmp_path / "b")
    (tmp_path / "a" / "masks.safetensors").write_bytes((tmp_path / "b" / "masks.safetensors").read_bytes())
    with pytest.raises(hlv.MaskInconsistencyError, match="other weights"):
        hlv.load_model(tmp_path / "a")
    (tmp_path / "a" / "masks.safetensors").unlink()  # without the masks file, masks come from the weights
    assert _same_masks(tiny_model, hlv.load_model(tmp_path / "a"))


def test_compact_layout_is_small_for_extreme_tickets(tmp_path: Path) -> None:
    model = make_model("cifar_resnet20", density=0.02)
    model.save_pretrained(tmp_path / "dense")
    model.save_pretrained(tmp_path / "compact", compact=True)
    dense = (tmp_path / "dense" / "model.safetensors").stat().st_size
    compact = (tmp_path / "compact" / "model.safetensors").stat().st_size
    assert compact < dense / 10
    assert _same_weights(model, hlv.load_model(tmp_path / "compact"))


def test_automodel_loads_saved_folder(tmp_path: Path, tiny_model) -> None:
    from transformers import AutoConfig, AutoModelForImageClassification

    tiny_model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "sparse_resnet"
    auto = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(auto, hlv.SparseResNetForImageClassification)
    assert _same_weights(tiny_model, auto) and _same_masks(tiny_model, auto)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(tiny_model.eval()(x).logits, auto(x).logits)


def test_loads_plain_timm_folder_and_derives_masks(tmp_path: Path, tiny_model) -> None:
    timm.models.save_for_hf(tiny_model.timm_model, tmp_path, safe_serialization=True)
    assert not (tmp_path / "pytorch_model.bin").exists()
    back = hlv.load_model(tmp_path)
    assert back.config.arch == "cifar_resnet8" and back.config.num_labels == 10
    assert _same_weights(tiny_model, back)
    assert _same_masks(tiny_model, back)  # masks recovered from the non-zero weights


def test_loads_timm_wrapper_checkpoint(tmp_path: Path, tiny_model) -> None:
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    wrapper = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="cifar_resnet8", num_labels=10))
    wrapper.timm_model.load_state_dict(tiny_model.timm_model.state_dict())
    wrapper.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert all(k.startswith("timm_model.") for k in f.keys())
    # the timm 1.0.31 trap: num_classes duplicated into model_args
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_args"] = {"num_classes": 10}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    back = hlv.load_model(tmp_path)
    assert _same_weights(tiny_model, back) and _same_masks(tiny_model, back)


def test_loads_state_dicts_with_foreign_prefixes(tiny_model) -> None:
    sd = {f"module._orig_mod.{k}": v for k, v in tiny_model.timm_model.state_dict().items()}
    back = hlv.load_model(sd, arch="cifar_resnet8")
    assert _same_weights(tiny_model, back)
    assert canonicalize_state_dict({"timm_model.fc.bias": torch.zeros(1)}).keys() == {"fc.bias"}


def test_single_file_with_our_metadata_needs_no_arch(tmp_path: Path, tiny_model) -> None:
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    back = hlv.load_model(tmp_path / "model.safetensors")
    assert _same_weights(tiny_model, back)


# ----------------------------------------------------------------------------- error paths


def test_truncated_file_raises_typed_error(tmp_path: Path, tiny_model) -> None:
    tiny_model.save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    for cut in (len(data) - 100, 100, 4, 0):
        f.write_bytes(data[:cut])
        with pytest.raises(hlv.CorruptCheckpointError, match="truncated or corrupt"):
            hlv.load_model(tmp_path)


def test_flipped_bytes_fail_the_checksum(tmp_path: Path, tiny_model) -> None:
    tiny_model.save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-50] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(hlv.CorruptCheckpointError, match="Checksum mismatch"):
        hlv.load_model(tmp_path)


def test_malformed_header_metadata(tmp_path: Path, tiny_model) -> None:
    sd = tiny_model.timm_model.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "model.safetensors",
              metadata={"format": "pt", METADATA_KEY: "{not json"})
    with pytest.raises(hlv.CorruptCheckpointError, match="Malformed"):
        read_checkpoint(tmp_path)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "model.safetensors",
              metadata={"format": "pt", METADATA_KEY: json.dumps({"format_version": 99, "layout": "dense"})})
    with pytest.raises(hlv.CheckpointError, match="Upgrade"):
        read_checkpoint(tmp_path)


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path: Path, monkeypatch) -> None:
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("the checkpoint was unpickled",))

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(Boom()))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "cifar_resnet8"}))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    with pytest.raises(hlv.PickleRefusedError, match="never unpickles"):
        hlv.load_model(tmp_path)
    with pytest.raises(hlv.PickleRefusedError):
        hlv.load_model(tmp_path / "pytorch_model.bin")
    from transformers import AutoModelForImageClassification

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sparse_resnet", "arch": "cifar_resnet8"}))
    with pytest.raises(hlv.PickleRefusedError):
        AutoModelForImageClassification.from_pretrained(tmp_path)


def test_shape_mismatch(tiny_model) -> None:
    sd = dict(tiny_model.timm_model.state_dict())
    sd["layer2.0.conv1.weight"] = torch.zeros(32, 16, 1, 1)
    with pytest.raises(hlv.ShapeMismatchError) as info:
        hlv.load_model(sd, arch="cifar_resnet8")
    assert info.value.param_name == "layer2.0.conv1.weight" and info.value.got == (32, 16, 1, 1)


def test_wrong_architecture_missing_and_unexpected(tiny_model) -> None:
    sd = tiny_model.timm_model.state_dict()
    with pytest.raises(hlv.MissingWeightsError, match="layer1.1"):
        hlv.load_model(sd, arch="cifar_resnet20")
    big = make_model("cifar_resnet20").timm_model.state_dict()
    with pytest.raises(hlv.UnexpectedWeightsError, match="another architecture"):
        hlv.load_model(big, arch="cifar_resnet8")
    partial = {k: v for k, v in sd.items() if k != "fc.bias"}
    with pytest.raises(hlv.MissingWeightsError) as info:
        hlv.load_model(partial, arch="cifar_resnet8")
    assert info.value.missing == ["fc.bias"]


def test_unknown_architecture_and_missing_arch(tiny_model) -> None:
    sd = tiny_model.timm_model.state_dict()
    with pytest.raises(hlv.UnknownArchitectureError):
        hlv.load_model(sd, arch="resnet_nonexistent")
    with pytest.raises(hlv.CheckpointError, match="pass arch="):
        hlv.load_model(sd)


def test_non_finite_weights_are_refused(tiny_model) -> None:
    sd = dict(tiny_model.timm_model.state_dict())
    sd["fc.weight"] = sd["fc.weight"].clone()
    sd["fc.weight"][0, 0] = float("nan")
    with pytest.raises(hlv.CheckpointError, match="NaN"):
        hlv.load_model(sd, arch="cifar_resnet8")


def test_stored_masks_that_disagree_with_weights(tmp_path: Path, tiny_model) -> None:
    from hf_lottery_verify.storage import write_checkpoint

    sd = dict(tiny_model.timm_model.state_dict())
    masks = tiny_model.masks
    sd["layer1.0.conv1.weight"] = torch.ones_like(sd["layer1.0.conv1.weight"])
    write_checkpoint(tmp_path / "model.safetensors", sd, masks=masks, metadata={"arch": "cifar_resnet8"})
    with pytest.raises(hlv.MaskInconsistencyError, match="masks='weights'"):
        hlv.load_model(tmp_path)
    derived = hlv.load_model(tmp_path, masks="weights")
    assert bool(derived.masks["layer1.0.conv1.weight"].all())


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(hlv.CheckpointError, match="No weights"):
        find_weight_files(tmp_path)
    with pytest.raises(hlv.CheckpointError, match="No such file"):
        hlv.load_model(tmp_path / "nope" / "deeper")


def test_a_missing_model_folder_is_also_a_file_not_found_error(tmp_path: Path) -> None:
    for load in (hlv.load_model, hlv.read_suspect):
        with pytest.raises(hlv.CheckpointNotFoundError, match="Check the path") as info:
            load(tmp_path / "nope")
        assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, hlv.CheckpointError)
        assert info.value.path == str(tmp_path / "nope")


def test_interrupted_save_leaves_previous_file_intact(tmp_path: Path, tiny_model, monkeypatch) -> None:
    tiny_model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    import hf_lottery_verify.storage.writing as storage_writing  # where write_checkpoint looks up save_file

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(storage_writing, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_save_refuses_pickle(tmp_path: Path, tiny_model) -> None:
    with pytest.raises(ValueError, match="only writes safetensors"):
        tiny_model.save_pretrained(tmp_path, safe_serialization=False)


def test_saved_files_are_readable_by_others(tmp_path: Path, tiny_model) -> None:
    import os
    import stat

    tiny_model.save_pretrained(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode)
    assert mode == 0o666 & ~umask


def test_save_pretrained_options(tmp_path: Path, tiny_model) -> None:
    with pytest.raises(TypeError, match="variant"):
        tiny_model.save_pretrained(tmp_path, variant="fp16")
    tiny_model.save_pretrained(tmp_path / "worker", is_main_process=False)
    assert not (tmp_path / "worker").exists()


# --------------------------------------------------------------------------- hostile files (issue 18)


def _safetensors_bytes(header: dict | bytes, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def _refused_by_every_reader(folder: Path, match: str, error: type = hlv.CorruptCheckpointError) -> None:
    for read in (read_checkpoint, hlv.read_suspect, hlv.load_model):
        with pytest.raises(error, match=match) as info:
            read(folder)
        assert "\n" not in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize(("name", "header", "data", "match"), [
    ("nested 100k deep", b"[" * 100_000 + b"]" * 100_000, b"", "nested too deeply"),
    ("negative shape", {"w": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}}, b"\0" * 16, "shape"),
    ("count wraps to 0 in 64 bits", {"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}, b"",
     "shape"),
    ("float shape", {"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, b"\0" * 8, "shape"),
    ("overlapping ranges", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16, "overlaps"),
    ("gap", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "overlaps"),
    ("range of another size", {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12"),
    ("range past the end", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "cover"),
    ("trailing bytes", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "cover"),
    ("unknown dtype", {"a": {"dtype": "F31", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "dtype"),
    ("dtype not a string", {"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "dtype"),
    ("entry not an object", {"a": [1, 2]}, b"", "dtype"),
    ("header not an object", b"[1, 2]", b"", "not a JSON object"),
    ("header not UTF-8", b'{"\xff": 1}', b"", "Malformed JSON"),
])
def test_malformed_safetensors_are_refused_by_every_reader(tmp_path: Path, name, header, data, match) -> None:
    (tmp_path / "model.safetensors").write_bytes(_safetensors_bytes(header, data))
    _refused_by_every_reader(tmp_path, match)


def test_a_header_over_safetensors_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    with open(tmp_path / "model.safetensors", "wb") as f:  # a sparse 110 MB file: header length 110 MB
        f.write((110_000_000).to_bytes(8, "little") + b"{")
        f.truncate(8 + 110_000_000)
    _refused_by_every_reader(tmp_path, "over safetensors' limit")


def test_links_to_nowhere_fifos_and_folders_are_typed_errors_not_hangs(tmp_path: Path) -> None:
    import os
    import threading

    loop, fifo, folder = tmp_path / "loop", tmp_path / "fifo", tmp_path / "folder"
    for d in (loop, fifo, folder):
        d.mkdir()
    (loop / "model.safetensors").symlink_to(loop / "model.safetensors")
    os.mkfifo(tmp_path / "pipe")
    (fifo / "model.safetensors").symlink_to(tmp_path / "pipe")
    (folder / "model.safetensors").mkdir()
    outcomes: list[str] = []

    def read_all() -> None:
        _refused_by_every_reader(loop, "symbolic links", hlv.CheckpointError)
        _refused_by_every_reader(fifo, "not a regular file", hlv.CheckpointError)
        _refused_by_every_reader(folder, "not a regular file", hlv.CheckpointError)
        outcomes.append("done")

    reader = threading.Thread(target=read_all, daemon=True)  # a FIFO used to block forever
    reader.start()
    reader.join(timeout=60)
    assert outcomes == ["done"]


def test_a_folder_of_many_files_gives_a_short_message(tmp_path: Path) -> None:
    for i in range(10_000):
        (tmp_path / f"part{i:05d}.safetensors").touch()
    with pytest.raises(hlv.CheckpointError, match="and 9,997 more") as info:
        hlv.read_suspect(tmp_path)
    assert len(str(info.value)) < 400


def test_shard_index_names_only_files_of_its_folder(tmp_path: Path, tiny_model) -> None:
    tiny_model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "outside.safetensors")
    for weight_map in ({"fc.weight": "../outside.safetensors"}, {"fc.weight": "/etc/passwd"}, {"fc.weight": 3},
                       "not a map", {}):
        (tmp_path / "m" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        _refused_by_every_reader(tmp_path / "m", "Malformed shard index")
    (tmp_path / "m" / "model.safetensors.index.json").write_text("[" * 100_000)
    _refused_by_every_reader(tmp_path / "m", "nested too deeply")


def test_metadata_that_safetensors_refuses_is_ignored_for_suspects_only(tmp_path: Path, tiny_model) -> None:
    sd = {k: v.contiguous() for k, v in tiny_model.timm_model.state_dict().items()}
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    data = (tmp_path / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = {"format": "pt", "hf_lottery_verify": {"ownership": {"owner": "thief"}}, "n": 1}
    raw = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])
    suspect = hlv.read_suspect(tmp_path)
    assert all(torch.equal(suspect.state_dict[k], v) for k, v in sd.items())
    assert suspect.claim is None and any("__metadata__" in note for note in suspect.notes)
    with pytest.raises(hlv.CorruptCheckpointError, match="__metadata__"):
        read_checkpoint(tmp_path)  # the owner's reader is as strict as safetensors


def test_a_claim_in_the_header_is_reported_flat(tmp_path: Path, tiny_model) -> None:
    claim = {"owner": "alice", "schemes": ["V2"], "nested": {"x": [[1]]}}
    meta = {"format": "pt", METADATA_KEY: json.dumps({"format_version": 2, "layout": "dense", "ownership": claim})}
    save_file({k: v.contiguous() for k, v in tiny_model.timm_model.state_dict().items()},
              tmp_path / "model.safetensors", metadata=meta)
    assert hlv.read_suspect(tmp_path).claim == {"owner": "alice", "schemes": ["V2"]}


def _with_config(folder: Path, tiny_model, **fields) -> Path:
    tiny_model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("field", [
    {"arch": ["resnet18"]}, {"arch": 5}, {"arch": "../../etc/passwd"}, {"architecture": "hf-hub:x/y"},
    {"image_size": "32"}, {"image_size": 10**9}, {"image_mean": 3}, {"image_std": [0.2, 0.0, 0.2]},
    {"image_mean": [float("nan")] * 3}, {"in_chans": "3"}, {"id2label": {"0": ["a"]}}, {"label_names": "abc"},
    {"density": True}, {"model_args": {"checkpoint_path": "/etc/passwd"}}, {"model_args": {"pretrained_cfg": {}}},
    {"model_args": [1]}, {"pretrained_cfg": {"mean": "abc"}}, {"pretrained_cfg": {"input_size": [3, 10**6, 10**6]}},
])
def test_bad_config_fields_are_typed_errors_for_loading_and_notes_for_suspects(tmp_path: Path, tiny_model,
                                                                               field) -> None:
    folder = _with_config(tmp_path, tiny_model, **field)
    name = next(iter(field))
    with pytest.raises(hlv.CorruptCheckpointError, match=f"'{name}' is refused") as info:
        hlv.load_model(folder)
    assert "\n" not in str(info.value)
    suspect = hlv.read_suspect(folder)
    assert name not in suspect.config and any(f"'{name}' is refused" in note for note in suspect.notes)
    assert suspect.config["model_type"] == "sparse_resnet"  # the other fields stay usable hints


def test_config_keeps_only_checked_fields(tmp_path: Path, tiny_model) -> None:
    pretrained = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 32, 32], "file": "/etc/passwd",
                  "url": "http://x", "hf_hub_id": "thief/weights"}
    folder = _with_config(tmp_path, tiny_model, pretrained_cfg=pretrained, checkpoint_path="/etc/passwd",
                          model_args={"in_chans": 3, "drop_rate": 0.1})
    config = hlv.read_suspect(folder).config
    assert config["pretrained_cfg"] == {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 32, 32]}
    assert "checkpoint_path" not in config and config["model_args"] == {"drop_rate": 0.1}
    model = hlv.load_model(folder)
    assert model.config.model_args == {"drop_rate": 0.1} and model.timm_model.drop_rate == 0.1


def test_config_nested_100k_deep_or_not_an_object(tmp_path: Path, tiny_model) -> None:
    tiny_model.save_pretrained(tmp_path)
    for text, match in (("[" * 100_000 + "]" * 100_000, "nested too deeply"), ("[1]", "not a JSON object")):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(hlv.CorruptCheckpointError, match=match):
            hlv.load_model(tmp_path)
        suspect = hlv.read_suspect(tmp_path)
        assert suspect.config is None and any(match in note for note in suspect.notes)


def test_a_compact_suspect_whose_header_shapes_lie_decodes_with_the_key_shapes(tmp_path: Path, tiny_model) -> None:
    tiny_model.save_pretrained(tmp_path, compact=True)
    tensors = load_file(tmp_path / "model.safetensors")
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        raw = f.metadata()
    meta = json.loads(raw[METADATA_KEY])
    true_shapes = {n: tuple(e["shape"]) for n, e in meta["masks"].items()}
    for entry in meta["masks"].values():
        entry["shape"] = [10**6, 10**6]  # a thief's edit: 10^12 elements, refused before anything is allocated
    save_file(tensors, tmp_path / "model.safetensors", metadata={**raw, METADATA_KEY: json.dumps(meta)})
    with pytest.raises(hlv.CorruptCheckpointError, match="neither its header's shapes nor the key's"):
        hlv.read_suspect(tmp_path)
    suspect = hlv.read_suspect(tmp_path, shapes=true_shapes)
    assert any("reference shapes" in note for note in suspect.notes)
    assert all(torch.equal(suspect.state_dict[k], v) for k, v in tiny_model.timm_model.state_dict().items())
