"""Scheme V2: keyed QR signatures in the mask, their slots derived from the key's secret."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify import qr
from hf_lottery_verify.alignment import reference_from_key, with_reference
from hf_lottery_verify.attacks import addon_attack, prune_attack
from hf_lottery_verify.ownership_key import OwnershipKey, mask_digest
from hf_lottery_verify.recovery import recover_masks
from hf_lottery_verify.signature import (
    MIN_DECODE_SECURITY_BITS,
    Slots,
    agreement_p_value,
    embed_signature,
    extract_signature,
    signature_layout,
    signature_positions,
    signature_secret,
    whitening_stream,
)
from hf_lottery_verify.signature.combine import combine_copies
from hf_lottery_verify.signature.slots import keyed_capacity
from hf_lottery_verify.signature.whitening import keyed_sample
from hf_lottery_verify.training import Trainer

from .helpers import make_model, tiny_data, tiny_train_config

TEXT = "hf-lottery:alice"
SECRET = "ab" * 32
OTHER_SECRET = "cd" * 32
RAW = bytes(range(32))
REPO = Path(__file__).resolve().parents[1]


def _key(arch: str = "cifar_resnet20", secret: str = SECRET) -> OwnershipKey:
    return OwnershipKey(arch=arch, secret=secret)


def _sign(model, text: str = TEXT, *, secret: str = SECRET, **options) -> OwnershipKey:
    return embed_signature(model, text, key=_key(model.config.arch, secret), **options)


def _kept(key: OwnershipKey, model) -> dict[str, int]:
    """The add-on defense's per-layer kept counts, as a verifier reads them from the key's reference."""
    return {n: int(m.sum()) for n, m in reference_from_key(with_reference(key, model)).masks.items()}


def _read_slots(masks, slots: Slots) -> tuple[np.ndarray, np.ndarray]:
    """Kernel kept-ness and kept-weight count at every slot."""
    kept = np.zeros(len(slots), dtype=bool)
    count = np.zeros(len(slots), dtype=np.int64)
    for name, pos, kernels in slots.per_param():
        m = masks[name].reshape(masks[name].shape[0] * masks[name].shape[1], -1)[torch.from_numpy(kernels)]
        kept[pos], count[pos] = m.any(dim=1).numpy(), m.sum(dim=1).numpy()
    return kept, count


def _thief_masks(model) -> dict[str, torch.Tensor]:
    """What a thief sees: the non-zero pattern of every conv weight of the public model."""
    return recover_masks({n: p.detach() for n, p in model.timm_parameters().items() if p.dim() == 4})


def _same_slots(a: list[Slots], b: list[Slots]) -> bool:
    return len(a) == len(b) and all(
        x.stage == y.stage and x.params == y.params and np.array_equal(x.param_index, y.param_index)
        and np.array_equal(x.kernel_index, y.kernel_index) for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- keyed randomness


def test_keyed_streams_are_deterministic_domain_separated_and_uniform() -> None:
    a = whitening_stream(RAW, 0, 1000)
    assert np.array_equal(a, whitening_stream(RAW, 0, 1000))
    assert (a != whitening_stream(RAW, 1, 1000)).mean() > 0.4  # one stream per copy
    assert (a != whitening_stream(bytes(32), 0, 1000)).mean() > 0.4
    assert 0.45 < a.mean() < 0.55
    s = keyed_sample(RAW, b"slots/0/layer1", 1000, 400)
    assert len(np.unique(s)) == 400 and s.min() >= 0 and s.max() < 1000
    assert np.array_equal(s, keyed_sample(RAW, b"slots/0/layer1", 1000, 400))
    assert not np.array_equal(s, keyed_sample(RAW, b"slots/1/layer1", 1000, 400))
    avoided = keyed_sample(RAW, b"slots/1/layer1", 1000, 400, exclude=s)  # a later copy avoids an earlier one
    assert not set(avoided.tolist()) & set(s.tolist()) and len(np.unique(avoided)) == 400


def test_the_signature_secret_is_derived_from_the_keys_secret() -> None:
    key = _key()
    assert signature_secret(key) == signature_secret(_key()) == key.derive("signature")  # nonce and date play no part
    assert signature_secret(key) != signature_secret(_key(secret=OTHER_SECRET))
    assert signature_secret(key) != key.derive("triggers/labels") and len(signature_secret(key)) == 32


# --------------------------------------------------------------------------- keyed embedding


@pytest.mark.parametrize("arch,coding,widths,stages", [
    ("cifar_resnet8", "auto", (1, 1, 1), 2),  # layer2, layer3 twice; pairs would move > 25% of this ticket
    ("cifar_resnet20", "auto", (1, 2, 2), 3),  # layer1 (1,536 kernels) single, layer2 and layer3 paired
    ("cifar_resnet20", "pairs", (2, 2, 2), 2),  # layer1 cannot hold pairs: layer2 once, layer3 twice
    ("cifar_resnet20", "single", (1, 1, 1), 3),
])
def test_keyed_round_trip_with_defaults(arch: str, coding: str, widths: tuple[int, ...], stages: int) -> None:
    model = make_model(arch, density=0.1)
    before = {n: int(m.sum()) for n, m in model.masks.items()}
    blank = _key(arch)
    key = embed_signature(model, TEXT, key=blank, coding=coding)
    assert not blank.sections and key.secret == blank.secret  # a new key, the given one unchanged
    assert {n: int(m.sum()) for n, m in model.masks.items()} == before  # per layer, hence in total
    sec, _, slots = signature_layout(key)
    assert sec.widths == widths and sec.coding == coding and sec.copies == 3
    assert len({s.stage for s in slots}) == stages  # spread over stages
    assert sec.signed_mask_digest == mask_digest(model.masks)
    for name, mask in model.masks.items():  # weights follow the mask
        assert torch.all((model.timm_parameters()[name] != 0) == mask), name
    ev = extract_signature(model, key=key)
    assert ev.matches and ev.text == TEXT and ev.bit_agreement == 1.0
    assert ev.image_text == TEXT and ev.p_value < 1e-50


def test_a_key_made_by_the_signer_is_fresh_and_names_the_architecture() -> None:
    model = make_model("cifar_resnet8", density=0.1)
    key = embed_signature(model, TEXT)
    assert key.arch == "cifar_resnet8" and len(key.secret) == 64 and key.schemes() == ["V2"]
    assert extract_signature(model, key=key).matches
    with pytest.raises(hlv.KeyMismatchError, match="architecture"):
        embed_signature(make_model("cifar_resnet8", density=0.1), TEXT, key=_key("cifar_resnet20"))


def test_slots_hold_the_whitened_bits_spread_over_one_stage_per_copy() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model, module_weights=2, coding="single")
    _, sym, all_slots = signature_layout(key)
    n, secret = sym.num_data_modules, signature_secret(key)
    spatial = {s: [p for p, m in model.masks.items() if p.startswith(s + ".") and m.shape[-1] > 1]
               for s in ("layer1", "layer2", "layer3")}
    for c, slots in enumerate(all_slots):
        assert slots.stage == ("layer1", "layer2", "layer3")[c]
        assert list(slots.params) == spatial[slots.stage]  # every spatial conv of the stage ...
        assert len({int(p) for p in slots.param_index}) == len(slots.params)  # ... holds some of the copy
        flat = slots.param_index.astype(np.int64) * 10**6 + slots.kernel_index
        assert len(np.unique(flat)) == n  # distinct kernels
        target = sym.data_bits() ^ whitening_stream(secret, c, n)
        kept, count = _read_slots(model.masks, slots)
        assert np.array_equal(kept, target)  # written exactly, whitened
        assert count[target].min() >= 2  # module_weights
        assert 0.4 < target.mean() < 0.6  # the written pattern is balanced noise, whatever the QR looks like


def test_pair_coding_writes_each_module_as_a_complementary_pair() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model, module_weights=2, coding="pairs")
    sec, sym, all_slots = signature_layout(key)
    assert sec.widths == (2, 2, 2)
    n, bits = sym.num_data_modules, sym.data_bits()
    for c, slots in enumerate(all_slots):
        assert len(slots) == 2 * n
        kept, count = _read_slots(model.masks, slots)
        target = bits ^ whitening_stream(signature_secret(key), c, n)
        assert np.array_equal(kept[0::2], target) and np.array_equal(kept[1::2], ~target)  # one kept, one pruned
        assert count[kept].min() >= 2  # module_weights


def test_a_model_with_two_eligible_stages_gets_a_third_copy_on_kernels_of_its_own() -> None:
    model = make_model("cifar_resnet8", density=0.1)
    key = _sign(model)
    _, _, slots = signature_layout(key)
    assert [s.stage for s in slots] == ["layer2", "layer3", "layer3"]
    second, third = ({(int(p), int(k)) for p, k in zip(s.param_index, s.kernel_index, strict=True)}
                     for s in slots[1:])
    assert not second & third  # the later copy avoids the earlier one's kernels
    assert extract_signature(model, key=key).matches


def test_pair_coding_turns_pruning_into_erasures_and_still_decodes() -> None:
    """Pruning only clears kernels: a pair loses its kept kernel and reads (pruned, pruned), an
    erasure the decoder knows about; no intact pair reads a wrong bit."""
    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    sec, sym, all_slots = signature_layout(key)
    assert sec.widths == (1, 2, 2)  # layer1 single, layer2/3 paired
    pruned = prune_attack(model, fraction=0.5)
    masks, n = _thief_masks(pruned), sym.num_data_modules
    broken = []
    for c, slots in enumerate(all_slots[1:], start=1):
        kept, _ = _read_slots(masks, slots)
        valid = kept[0::2] != kept[1::2]
        broken.append((~valid).mean())
        target = sym.data_bits() ^ whitening_stream(signature_secret(key), c, n)
        assert np.array_equal(kept[0::2][valid], target[valid])  # ... but left no wrong bit
    assert max(broken) > 0.05  # the attack broke pairs ...
    ev = extract_signature(pruned, key=key)
    assert ev.matches and ev.combination in ("weighted", "pairs", "fullness", "fullness-flat")


def test_the_single_coding_decodes_with_the_kept_reads_and_an_unknown_coding_is_refused() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    ev = extract_signature(model, key=_sign(model, coding="single"))
    assert ev.matches and ev.combination == "any"
    with pytest.raises(hlv.SignatureError, match="Unknown coding"):
        _sign(make_model("cifar_resnet8", density=0.1), coding="triple")


def test_same_secret_and_seed_give_identical_masks_weights_and_key() -> None:
    a, b = make_model("cifar_resnet20", density=0.1), make_model("cifar_resnet20", density=0.1)
    ka, kb = _sign(a, seed=3), _sign(b, seed=3)
    assert ka.nonce != kb.nonce  # two keys made apart ...
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)  # ... sign identically
    wa, wb = a.timm_model.state_dict(), b.timm_model.state_dict()
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    assert ka.sections == kb.sections and not ka.tensors and not kb.tensors  # nothing stored but the section
    c = make_model("cifar_resnet20", density=0.1)
    _sign(c, seed=4)  # the seed picks positions inside kernels and values
    assert any(not torch.equal(a.masks[n], c.masks[n]) for n in a.masks)


def test_the_same_key_and_text_give_the_same_slots_everywhere(tmp_path: Path) -> None:
    """The verifier re-derives the slots the signer used: from a reloaded key, from a key with the
    same secret made elsewhere, whatever the model the key is read next to."""
    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    key.save(tmp_path / "k.json")
    _, _, slots = signature_layout(key)
    assert _same_slots(slots, signature_layout(OwnershipKey.load(tmp_path / "k.json"))[2])
    again = _sign(make_model("cifar_resnet20", density=0.1, seed=5))  # another ticket, same secret and text
    assert again.signature().widths == key.signature().widths and _same_slots(slots, signature_layout(again)[2])
    positions = signature_positions(key)
    for s in slots:  # the positions lock_model protects are the slots' kernels
        for name, kernel_map in s.kernel_maps({n: m.shape for n, m in model.masks.items()}).items():
            assert bool(positions[name][kernel_map].all())


def test_a_different_secret_gives_different_slots_and_bits() -> None:
    a, b = make_model("cifar_resnet20", density=0.1), make_model("cifar_resnet20", density=0.1)
    ka, kb = _sign(a), _sign(b, secret=OTHER_SECRET)
    sa, sb = signature_layout(ka)[2], signature_layout(kb)[2]
    for x, y in zip(sa, sb, strict=True):
        assert x.stage == y.stage  # stages are not secret ...
        same = (x.param_index == y.param_index) & (x.kernel_index == y.kernel_index)
        assert same.mean() < 0.05  # ... the kernels are
    assert (whitening_stream(signature_secret(ka), 0, 500) != whitening_stream(signature_secret(kb), 0, 500)).mean() > 0.4
    assert any(not torch.equal(a.masks[n], b.masks[n]) for n in a.masks)


_DIGEST_SCRIPT = """
import hashlib, json
import torch
import hf_lottery_verify as hlv
from hf_lottery_verify.ownership_key import OwnershipKey, mask_digest
from hf_lottery_verify.signature import embed_signature, signature_layout

def signed_digest():
    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet20", num_labels=10))
    model.prune_(density=0.1)
    key = embed_signature(model, "hf-lottery:alice", key=OwnershipKey(arch="cifar_resnet20", secret="ab" * 32),
                          seed=5)
    h = hashlib.sha256(mask_digest(model.masks).encode())
    for name, t in sorted(model.timm_model.state_dict().items()):
        h.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(key.section("signature"), sort_keys=True).encode())
    for slots in signature_layout(key)[2]:
        h.update(slots.stage.encode() + slots.param_index.tobytes() + slots.kernel_index.tobytes())
    return h.hexdigest()

if __name__ == "__main__":
    print(signed_digest())
"""


@pytest.mark.slow
def test_signing_is_bit_identical_across_processes_and_hash_seeds() -> None:
    ns: dict = {"__name__": "in_process"}
    exec(compile(_DIGEST_SCRIPT, "<digest>", "exec"), ns)  # noqa: S102 - our own script
    here = ns["signed_digest"]()
    other_seed = "12345" if os.environ.get("PYTHONHASHSEED") != "12345" else "54321"
    env = dict(os.environ, PYTHONHASHSEED=other_seed, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == here


def test_switched_on_weights_take_the_rewind_sign_and_a_kept_magnitude() -> None:
    model = make_model("cifar_resnet20", density=0.05)
    rewind = make_model("cifar_resnet20", seed=7)
    old = {n: m.clone() for n, m in model.masks.items()}
    kept = {n: model.timm_parameters()[n].detach()[m].abs() for n, m in old.items()}
    _sign(model, rewind=rewind)
    w, r = model.timm_parameters(), rewind.timm_parameters()
    switched = 0
    for name, mask in model.masks.items():
        new = mask & ~old[name]
        switched += int(new.sum())
        assert torch.equal(w[name][new].sign(), r[name].detach()[new].sign())
        assert torch.isin(w[name][new].abs(), kept[name]).all()  # magnitudes resampled from the kept weights
    assert switched > 0


@pytest.mark.parametrize("arch", ["cifar_resnet8", "cifar_resnet8_a", "cifar_resnet20", "cifar_resnet20_a",
                                  "cifar_resnet32", "cifar_resnet56"])
@pytest.mark.parametrize("density", [0.02, 0.2])
def test_defaults_sign_every_small_architecture(arch: str, density: float) -> None:
    import timm

    if arch not in timm.list_models("cifar_*"):
        pytest.skip(f"{arch} is not registered")
    model = make_model(arch, density=density)
    total = sum(int(m.sum()) for m in model.masks.values())
    key = _sign(model, "hf-lottery-demo:owner")  # the demo's text
    assert sum(int(m.sum()) for m in model.masks.values()) == total
    sec, _, slots = signature_layout(key)
    assert 1 <= sec.copies <= 3 and len({s.stage for s in slots}) >= min(2, sec.copies)
    assert extract_signature(model, key=key, cross_check=False).matches


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cifar_resnet18", "cifar_resnet50"])
def test_defaults_sign_the_large_architectures(arch: str) -> None:
    model = make_model(arch, density=0.02)
    total = sum(int(m.sum()) for m in model.masks.values())
    key = _sign(model, "hf-lottery-demo:owner")
    assert sum(int(m.sum()) for m in model.masks.values()) == total
    assert [s.stage for s in signature_layout(key)[2]] == ["layer1", "layer2", "layer3"]  # 3 of 4, earliest first
    assert extract_signature(model, key=key, cross_check=False).matches


def test_signing_errors_say_what_to_do() -> None:
    dense = make_model("cifar_resnet8")
    with pytest.raises(hlv.SignatureError, match="no masks"):
        embed_signature(dense, TEXT)
    dense.prune_(density=1.0)
    with pytest.raises(hlv.SignatureError, match="prune it first"):
        embed_signature(dense, TEXT)
    model = make_model("cifar_resnet8", density=0.1)
    cap, version, stage = keyed_capacity({n: m.shape for n, m in model.masks.items()})
    assert stage == "layer3" and cap == qr.capacity(version, "H")
    assert qr.num_data_modules(version) <= 0.5 * 64 * (32 + 64) < qr.num_data_modules(version + 1)
    with pytest.raises(hlv.SignatureTooLargeError) as info:
        embed_signature(model, "x" * (cap + 1))
    assert info.value.max_chars == cap and f"{cap} bytes" in str(info.value) and "Shorten the text" in str(info.value)
    assert _sign(copy.deepcopy(model), "x" * cap).signature().copies == 1  # the largest text fits (one copy)
    with pytest.raises(hlv.SignatureError, match="never all share one stage"):
        _sign(copy.deepcopy(model), "x" * cap, copies=2)  # only layer3 holds it
    with pytest.raises(hlv.SignatureError, match="copies"):
        embed_signature(model, TEXT, copies=0)
    with pytest.raises(hlv.SignatureError, match="module_weights"):
        embed_signature(model, TEXT, module_weights=10)
    with pytest.raises(hlv.SignatureError, match="layers must be"):
        embed_signature(model, TEXT, layers="diagonal")
    with pytest.raises(TypeError):
        embed_signature(model, TEXT, secret=RAW)  # the secret is the key's, never an option


# --------------------------------------------------------------------------- what a key may say


def _with_signature(arch: str, **fields) -> OwnershipKey:
    section = {"text": TEXT, "widths": [1, 1, 1], "coding": "auto", **fields}
    return _key(arch).with_section("signature", section)


def test_signature_layout_refuses_widths_the_architecture_cannot_hold() -> None:
    """Layouts the signer never writes — three copies of a symbol only one stage holds, pairs
    where no stage has room for them — are refused with the reason, never read."""
    model = make_model("cifar_resnet8", density=0.1)
    cap = keyed_capacity({n: m.shape for n, m in model.masks.items()})[0]
    with pytest.raises(hlv.KeyMismatchError, match="not one the signer writes"):
        signature_layout(_with_signature("cifar_resnet8", text="x" * cap))
    with pytest.raises(hlv.KeyMismatchError, match="not one the signer writes"):
        signature_layout(_with_signature("cifar_resnet8", text="x" * cap, widths=[2], coding="pairs"))
    with pytest.raises(hlv.KeyMismatchError, match="not one the signer writes"):
        extract_signature(model, key=_with_signature("cifar_resnet8", text="x" * cap))
    assert len(signature_layout(_with_signature("cifar_resnet8", text="x" * cap, widths=[1]))[2]) == 1


@pytest.mark.parametrize("field,value", [("stage", "layer2"), ("params", ["layer2.0.conv1.weight"]),
                                         ("slots", [[0, 1]]), ("changed_bits", "ff"), ("secret", "00" * 32)])
def test_a_signature_section_naming_where_it_lives_is_refused_on_load(tmp_path: Path, field: str, value) -> None:
    model = make_model("cifar_resnet8", density=0.1)
    _sign(model).save(tmp_path / "k.json")
    manifest = json.loads((tmp_path / "k.json").read_text())
    manifest["sections"]["signature"][field] = value
    (tmp_path / "k.json").write_text(json.dumps(manifest))
    with pytest.raises(hlv.KeyFileError, match=f"does not know \\({field}\\)"):
        OwnershipKey.load(tmp_path / "k.json")


@pytest.mark.parametrize("field,value,match", [
    ("widths", [1, 1, 1, 1], "1 to 3 copies"), ("widths", [3], "1 to 3 copies"), ("ecc", "X", "unknown ecc"),
    ("module_weights", 0, "module_weights"), ("layout_version", 2, "layout version"), ("text", 7, "not"),
    ("widths", [2, 2], "contradict"),
])
def test_a_malformed_signature_section_is_refused(field: str, value, match: str) -> None:
    fields = {"coding": "single"} if field == "widths" and value == [2, 2] else {}
    with pytest.raises(hlv.KeyFileError, match=match):
        _with_signature("cifar_resnet8", **{**fields, field: value})


def test_the_key_round_trips_through_its_files(tmp_path: Path) -> None:
    model = make_model("cifar_resnet8", density=0.1)
    key = _sign(model)
    key.save(tmp_path / "k.json")
    loaded = OwnershipKey.load(tmp_path / "k.json")
    assert loaded.commitment() == key.commitment() and loaded.signature() == key.signature()
    assert extract_signature(model, key=tmp_path / "k.json").matches
    sec = json.loads((tmp_path / "k.json").read_text())["sections"]["signature"]
    assert sec["text"] == TEXT and not {"secret", "slots", "regions", "qr", "stage", "params"} & set(sec)
    assert not list(tmp_path.glob("*.safetensors"))  # no slot tensors: the slots are derived
    assert dataclasses.replace(key, secret=OTHER_SECRET).commitment() != key.commitment()  # the commitment covers it


# --------------------------------------------------------------------------- without the key


def test_a_keyless_window_search_finds_nothing() -> None:
    """A thief with the public weights tries every layer, offset, ECC level, mask pattern and polarity
    at the signature's QR version: the keyed signature is whitened and scattered, so no window decodes."""
    from hf_lottery_verify.attacks import locate_windows

    model = make_model("cifar_resnet8", density=0.1)
    key = _sign(model, "alice")
    _, symbol, _ = signature_layout(key)
    assert symbol.version == 1
    assert locate_windows(_thief_masks(model), versions=[symbol.version]) == []
    assert extract_signature(model, key=key).matches  # the owner reads it at once


def test_a_key_with_another_secret_does_not_decode() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    forged = OwnershipKey(arch=key.arch, secret=OTHER_SECRET, sections=json.loads(json.dumps(key.sections)))
    ev = extract_signature(model, key=forged)  # other slots, another whitening stream
    assert not ev.matches and ev.text is None and ev.p_value > 1e-3
    assert 0.3 < ev.bit_agreement < 0.7


def test_the_unsigned_ticket_is_not_evidence() -> None:
    """The ticket before signing is no evidence: it agrees with the key's reading about as often as chance."""
    for arch, seed in (("cifar_resnet20", 0), ("cifar_resnet32", 1)):
        original = make_model(arch, density=0.05, seed=seed)
        signed = copy.deepcopy(original)
        key = _sign(signed)
        unsigned = extract_signature(original, key=key)
        assert unsigned.text is None and not unsigned.matches and unsigned.p_value > 0.05
        assert extract_signature(signed, key=key).p_value < 1e-30


def test_an_unrelated_model_never_matches() -> None:
    owner = make_model("cifar_resnet20", density=0.1)
    key = _sign(owner)
    for seed in (11, 12, 13):
        ev = extract_signature(make_model("cifar_resnet20", density=0.1, seed=seed), key=key)
        assert ev.text is None and not ev.matches
        assert ev.p_value > 0.01


def test_the_owners_decode_carries_the_security_it_needs() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    for suspect in (model, prune_attack(model, fraction=0.3)):
        ev = extract_signature(suspect, key=key)
        assert ev.matches and ev.decode_reason is None
        assert ev.required_bits >= MIN_DECODE_SECURITY_BITS and ev.security_bits >= ev.required_bits


# --------------------------------------------------------------------------- attacks


def test_keyed_signature_survives_pruning_and_addon_noise() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    kept = _kept(key, model)
    for fraction in (0.2, 0.3):
        ev = extract_signature(prune_attack(model, fraction=fraction, method="magnitude"), key=key, kept=kept)
        assert ev.matches, (fraction, ev)
    for seed in range(2):
        assert extract_signature(prune_attack(model, fraction=0.05, method="random", seed=seed), key=key).matches
        add = extract_signature(addon_attack(model, rate=0.01, seed=seed), key=key, kept=kept)
        assert add.matches and add.defense_applied, add
    # pruning aimed at one stage (every kept weight of layer1 set to zero) destroys one copy only
    params = {n: p.detach().clone() for n, p in model.timm_model.state_dict().items()}
    for name in params:
        if name.startswith("layer1.") and params[name].dim() == 4:
            params[name].zero_()
    ev = extract_signature(params, key=key, kept=kept)
    assert ev.matches, ev


def test_the_addon_defense_needs_the_kept_counts() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    noisy = addon_attack(model, rate=0.01, seed=0)
    assert not extract_signature(noisy, key=key).defense_applied  # without the counts: the non-zero pattern
    defended = extract_signature(noisy, key=key, kept=_kept(key, model))
    assert defended.defense_applied and all(n.startswith("layer") for n in defended.defense_applied)


def _retrained_signed_ticket(**options):
    data = tiny_data()
    model = make_model("cifar_resnet20", num_labels=4, density=0.15)
    rewind = make_model("cifar_resnet20", num_labels=4)
    key = _sign(model, seed=0, rewind=rewind, **options)
    trainer = Trainer(model, data.train, tiny_train_config(epochs=3), test_data=data.test, progress=False)
    trainer.train()
    trainer.close()
    return model, key, trainer.history[-1].test_accuracy


@pytest.mark.slow
def test_retrained_signature_survives_the_acceptance_attacks() -> None:
    model, key, accuracy = _retrained_signed_ticket()
    assert accuracy > 50
    kept = _kept(key, model)
    ev = extract_signature(model, key=key, kept=kept)
    assert ev.matches
    omp = extract_signature(prune_attack(model, fraction=0.2, method="magnitude"), key=key, kept=kept)
    assert omp.matches, omp
    for seed in range(3):
        rnd = extract_signature(prune_attack(model, fraction=0.05, method="random", seed=seed), key=key, kept=kept)
        assert rnd.matches, rnd
        add = extract_signature(addon_attack(model, rate=0.01, seed=seed), key=key, kept=kept)
        assert add.matches, add
        assert add.defense_applied  # the defense was needed


def test_copy_combination_trusts_kept_reads_against_pruning() -> None:
    rng = np.random.default_rng(0)
    data = rng.random(400) < 0.5
    stream = rng.random((2, 400)) < 0.5
    target = data ^ stream  # what each copy should read as kept
    pruned = target & (rng.random((2, 400)) < 0.2)  # pruning turns kept kernels into pruned ones
    candidates = {how: (bits, erase) for how, bits, erase, _ in combine_copies(target & ~pruned, stream)}
    bits, erase = candidates["any"]
    # a module is wrong without being erased only where every copy lost its kept kernel
    assert not np.any((bits != data) & ~erase & ~pruned.all(axis=0))
    assert erase.sum() < 0.3 * 400
    noisy = target | (rng.random((2, 400)) < 0.2)  # add-on noise turns pruned kernels into kept ones
    bits, erase = {how: (b, e) for how, b, e, _ in combine_copies(noisy, stream)}["all"]
    added_everywhere = (noisy & ~target).all(axis=0)
    assert not np.any((bits != data) & ~erase & ~added_everywhere)


def test_grouped_p_value_matches_the_single_layer_statistic() -> None:
    split = agreement_p_value(300, [(100, 150, 0.3), (150, 150, 0.3)])
    assert split == pytest.approx(agreement_p_value(300, [(250, 300, 0.3)]), rel=1e-9)
    assert agreement_p_value(0, [(5, 5, 0.1)]) == 1.0


def test_a_key_ground_after_the_fact_is_no_evidence() -> None:
    """A forger who sees the owner's published model writes keys after the fact, one secret after
    another (here at a reduced scale: 12 secrets, the text and the coding his choice). The slots
    are the secret's derivation, so each try is a fresh random reading of the owner's mask:
    none decodes with the security a decode needs, and the verdict is never `owned`."""
    import hashlib

    from hf_lottery_verify.qr import decode_security_bits

    victim = make_model("cifar_resnet20", density=0.05, seed=0)
    _sign(victim, "owner: alice")  # the owner's published model
    for i in range(12):
        secret = hashlib.sha256(b"forge%d" % i).hexdigest()
        forged = _key(secret=secret).with_section("signature", {"text": "7JN%*+O4.X", "widths": [2, 2, 2],
                                                                "coding": "pairs"})
        ev = extract_signature(victim, key=forged, cross_check=False)
        assert not ev.matches and ev.p_value > 1e-6, i
    assert hlv.verify_model(victim, key=forged, require_anchor=False).verdict != "owned"
    owner = make_model("cifar_resnet20", density=0.05, seed=1)
    genuine = extract_signature(owner, key=_sign(owner, "owner: alice"), cross_check=False)
    assert genuine.matches and genuine.security_bits >= 100  # an intact copy leaves every check symbol to spare
    # the bound itself: every check symbol erased decodes anything; a clean 1-H block is 136 bits
    assert decode_security_bits([(26, 17, 17, 0)]) == 0 and decode_security_bits([(26, 17, 0, 0)]) == 136


# --------------------------------------------------------------------------- suspects and keys


def test_extraction_from_model_folder_timm_and_wrapper_layouts(tmp_path: Path) -> None:
    import timm

    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    key.save(tmp_path / "key.json")
    model.save_pretrained(tmp_path / "ours")
    timm.models.save_for_hf(model.timm_model, tmp_path / "timm", safe_serialization=True)
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    wrapper = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="cifar_resnet20", num_labels=10))
    wrapper.timm_model.load_state_dict(model.timm_model.state_dict())
    wrapper.save_pretrained(tmp_path / "wrapper")
    for source in (model, wrapper, tmp_path / "ours", tmp_path / "timm", tmp_path / "wrapper"):
        ev = extract_signature(hlv.read_suspect(source), key=tmp_path / "key.json")
        assert ev.text == TEXT and ev.matches and ev.bit_agreement == 1.0 and ev.image_text == TEXT
        assert ev.p_value < 1e-50


def test_extraction_from_an_aligned_state_dict() -> None:
    """Channel re-alignment hands extraction a plain state dict in the reference's layout."""
    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    weights = {n: t.clone() for n, t in model.timm_model.state_dict().items()}
    assert extract_signature(weights, key=key).matches
    signed = signature_layout(key)[2][0].params[0]
    bad = dict(weights, **{signed: torch.zeros(8, 8, 3, 3)})
    with pytest.raises(hlv.KeyMismatchError, match="re-aligned"):
        extract_signature(bad, key=key)
    with pytest.raises(hlv.KeyMismatchError, match="is nothing in the suspect"):
        extract_signature({n: t for n, t in weights.items() if n != signed}, key=key)


def test_stored_masks_are_never_trusted(tmp_path: Path) -> None:
    from hf_lottery_verify.storage import write_checkpoint

    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    thief = make_model("cifar_resnet20", density=0.1, seed=9)  # unrelated weights ...
    # ... saved with the owner's masks in the header: extraction must ignore them
    sd = thief.timm_model.state_dict()
    masks = {n: sd[n] != 0 for n in model.masks}
    write_checkpoint(tmp_path / "model.safetensors", sd, masks=masks, metadata={"arch": "cifar_resnet20"})
    ev = extract_signature(hlv.read_suspect(tmp_path / "model.safetensors"), key=key)
    assert not ev.matches and ev.p_value > 0.01


def test_key_that_does_not_fit_the_model() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    with pytest.raises(hlv.SignatureError, match="empty"):
        embed_signature(model, "")
    key = _sign(model)
    with pytest.raises(hlv.KeyMismatchError, match="another architecture"):
        extract_signature(make_model("cifar_resnet8", density=0.1), key=key)
    with pytest.raises(hlv.KeyMismatchError, match="no 'signature' section"):
        extract_signature(model, key=_key())
    with pytest.raises(TypeError):
        extract_signature(model, key)  # the key is keyword-only
    future = OwnershipKey(arch=key.arch, secret=key.secret, sections=json.loads(json.dumps(key.sections)))
    future.sections["signature"]["layout_version"] = 4
    with pytest.raises(hlv.KeyFileError, match="layout version 4"):
        extract_signature(model, key=future)


def test_a_tampered_header_does_not_block_verification(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    model.save_pretrained(tmp_path / "pub")
    f = tmp_path / "pub" / "model.safetensors"
    with safe_open(f, framework="pt") as h:
        tensors = {k: h.get_tensor(k) for k in h.keys()}
        meta = h.metadata()
    header = json.loads(meta["hf_lottery_verify"])
    cases = {
        "checksum": (dict(tensors, **{"fc.bias": tensors["fc.bias"] + 1}), header),
        "version": (tensors, dict(header, format_version=99)),
        "extra tensor and no BN counters": (
            {**{k: v for k, v in tensors.items() if "num_batches_tracked" not in k}, "junk": torch.zeros(3)}, header),
    }
    for name, (tens, head) in cases.items():
        out = tmp_path / name.replace(" ", "_")
        out.mkdir()
        save_file(tens, out / "model.safetensors", metadata={"format": "pt", "hf_lottery_verify": json.dumps(head)})
        ev = extract_signature(hlv.read_suspect(out), key=key)
        assert ev.matches, name


# --------------------------------------------------------------------------- signing while saving


def test_save_pretrained_signs_and_keeps_the_key_out(tmp_path: Path) -> None:
    model = make_model("cifar_resnet20", density=0.1)
    digest = mask_digest(model.masks)
    with pytest.raises(hlv.KeyFileError, match="inside the model folder"):
        model.save_pretrained(tmp_path / "pub", signature=TEXT, key=tmp_path / "pub" / "key.json")
    assert mask_digest(model.masks) == digest and model.ownership_claim is None  # nothing embedded
    with pytest.raises(ValueError, match="needs key="):
        model.save_pretrained(tmp_path / "pub", signature=TEXT)
    assert mask_digest(model.masks) == digest
    model.save_pretrained(tmp_path / "pub", signature=TEXT, key=tmp_path / "keys" / "k.json", owner="alice")
    assert not any("key" in p.name for p in (tmp_path / "pub").iterdir())
    assert not hasattr(model, "signature_key")  # no private state on the model
    key = OwnershipKey.load(tmp_path / "keys" / "k.json")
    claim = model.ownership_claim
    assert claim["owner"] == "alice" and claim["schemes"] == ["V2"] and "created" not in claim
    assert claim["key_commitment"] == key.commitment()
    assert TEXT not in json.dumps(claim) and "qr" not in claim
    # nothing published names the secret, the slots or the QR format
    for f in (tmp_path / "pub").rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert key.secret.encode() not in blob and signature_secret(key).hex().encode() not in blob, f
            assert b"slots" not in blob and b"mask_pattern" not in blob and TEXT.encode() not in blob, f
    signed = mask_digest(model.masks)
    model.save_pretrained(tmp_path / "pub2")  # re-saving keeps the claim, signs nothing
    assert mask_digest(model.masks) == signed
    assert extract_signature(hlv.read_suspect(tmp_path / "pub"), key=tmp_path / "keys" / "k.json").matches


def test_save_pretrained_signs_with_an_existing_key_and_extends_its_file(tmp_path: Path) -> None:
    key_path = tmp_path / "k.json"
    _key().save(key_path)
    model = make_model("cifar_resnet20", density=0.1)
    model.save_pretrained(tmp_path / "pub", signature=TEXT, key=key_path)
    key = OwnershipKey.load(key_path)
    assert key.secret == SECRET and key.schemes() == ["V2"]  # the slots come from the key's own secret
    assert _same_slots(signature_layout(key)[2], signature_layout(_sign(make_model("cifar_resnet20", density=0.1)))[2])


def test_a_signed_model_is_not_signed_twice(tmp_path: Path) -> None:
    model = make_model("cifar_resnet20", density=0.1)
    model.save_pretrained(tmp_path / "pub", signature=TEXT, key=tmp_path / "k.json")
    signed = mask_digest(model.masks)
    loaded = hlv.load_model(tmp_path / "pub")
    assert loaded.ownership_claim["schemes"] == ["V2"]
    loaded.save_pretrained(tmp_path / "resaved")  # re-saving keeps the public claim
    assert hlv.load_model(tmp_path / "resaved").ownership_claim == loaded.ownership_claim
    for signer in (model, loaded):
        with pytest.raises(hlv.SignatureError, match="already carries"):
            signer.save_pretrained(tmp_path / "again", signature="thief", key=tmp_path / "k2.json")
    assert mask_digest(model.masks) == signed and not (tmp_path / "k2.json").exists()


def test_signing_with_a_key_that_already_holds_a_signature_changes_nothing(tmp_path: Path) -> None:
    first, second = make_model("cifar_resnet20", density=0.1), make_model("cifar_resnet20", density=0.1, seed=1)
    key_path = tmp_path / "keys" / "k.json"
    first.save_pretrained(tmp_path / "one", signature=TEXT, key=key_path)
    before, digest = key_path.read_bytes(), mask_digest(second.masks)
    with pytest.raises(hlv.KeyMismatchError, match="already holds a signature"):
        second.save_pretrained(tmp_path / "two", signature="second", key=key_path)
    assert key_path.read_bytes() == before and not (tmp_path / "two").exists()
    assert extract_signature(hlv.read_suspect(tmp_path / "one"), key=key_path).matches
    assert mask_digest(second.masks) == digest  # the refused call left the model as it was


# --------------------------------------------------------------------------- locking a signed ticket


def test_a_locked_signed_ticket_still_carries_its_whole_signature() -> None:
    from hf_lottery_verify.keymask import lock_model

    model = make_model("cifar_resnet20", density=0.1)
    key = _sign(model)
    positions = signature_positions(key)
    assert positions and all(positions[n].shape == model.masks[n].shape for n in positions)
    locked, locked_key = lock_model(model, ratio=0.3, score="omp", key=key)
    assert locked_key.schemes() == ["V1", "V2"] and key.schemes() == ["V2"]
    assert locked_key.commitment() == key.commitment()  # a key mask is no part of the commitment
    for name, where in positions.items():  # every kept signature weight stays public
        assert torch.equal(locked.masks[name][where], model.masks[name][where])
    evidence = extract_signature(locked, key=locked_key)
    assert evidence.matches and evidence.bit_agreement == 1.0


def test_the_share_of_the_ticket_a_signature_moves_is_recorded_and_a_heavy_one_warns(caplog) -> None:
    import logging

    light = _sign(make_model("cifar_resnet20", density=0.2))
    assert 0 < light.signature().moved_share < 0.25
    with caplog.at_level(logging.WARNING, logger="hf_lottery_verify.signature.embed"):
        heavy = _sign(make_model("cifar_resnet20", density=0.01))
    assert heavy.signature().moved_share > 0.25
    assert any("copies=1 and module_weights=1" in r.getMessage() for r in caplog.records)
    lighter = _sign(make_model("cifar_resnet20", density=0.01), copies=1, module_weights=1)
    assert lighter.signature().moved_share < heavy.signature().moved_share / 3
