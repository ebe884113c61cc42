"""Scheme V2: keyed QR signatures in the mask (and the earlier ``regions`` layout)."""

from __future__ import annotations

import copy
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
from hf_lottery_verify.attacks import addon_attack, prune_attack
from hf_lottery_verify.masks import squeeze_mask
from hf_lottery_verify.ownership_key import OwnershipKey, mask_digest
from hf_lottery_verify.recovery import recover_masks
from hf_lottery_verify.signature import (
    Slots,
    agreement_p_value,
    candidate_layers,
    combine_copies,
    embed_signature,
    extract_signature,
    find_decodable_windows,
    find_regions,
    region_agreement,
    signature_capacity,
    whitening_stream,
)
from hf_lottery_verify.signature.whitening import keyed_sample, parse_secret
from hf_lottery_verify.stats import module_agreement_p_value
from hf_lottery_verify.training import Trainer

from .helpers import make_model, tiny_data, tiny_train_config

TEXT = "hf-lottery:alice"
SECRET = bytes(range(32))
REPO = Path(__file__).resolve().parents[1]


def _slots(key: OwnershipKey) -> list[Slots]:
    sec = key.section("signature")
    tensors = key.section_tensors("signature")
    default = 2 if sec.get("coding") == "pairs" else 1
    return [Slots.from_key(rec, tensors, c, sec["num_data_modules"] * int(rec.get("width", default)))
            for c, rec in enumerate(sec["regions"])]


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


# --------------------------------------------------------------------------- keyed randomness


def test_keyed_streams_are_deterministic_domain_separated_and_uniform() -> None:
    a = whitening_stream(SECRET, 0, 1000)
    assert np.array_equal(a, whitening_stream(SECRET, 0, 1000))
    assert (a != whitening_stream(SECRET, 1, 1000)).mean() > 0.4  # one stream per copy
    assert (a != whitening_stream(bytes(32), 0, 1000)).mean() > 0.4
    assert 0.45 < a.mean() < 0.55
    s = keyed_sample(SECRET, b"slots/0/layer1", 1000, 400)
    assert len(np.unique(s)) == 400 and s.min() >= 0 and s.max() < 1000
    assert np.array_equal(s, keyed_sample(SECRET, b"slots/0/layer1", 1000, 400))
    assert not np.array_equal(s, keyed_sample(SECRET, b"slots/1/layer1", 1000, 400))
    groups = np.repeat(np.arange(4), 250)
    capped = keyed_sample(SECRET, b"x", 1000, 400, groups=groups, group_caps=[100] * 4)
    assert np.bincount(groups[capped]).tolist() == [100] * 4
    with pytest.raises(hlv.SignatureError, match="Cannot draw"):
        keyed_sample(SECRET, b"x", 1000, 401, groups=groups, group_caps=[100] * 4)


def test_secrets_are_bytes_or_hex_and_long_enough() -> None:
    assert parse_secret(SECRET.hex()) == SECRET == parse_secret(SECRET)
    assert len(parse_secret(None)) == 32 and parse_secret(None) != parse_secret(None)
    with pytest.raises(hlv.SignatureError, match="at least 16"):
        parse_secret(b"short")
    with pytest.raises(hlv.SignatureError, match="not hex"):
        parse_secret("zz" * 16)


# --------------------------------------------------------------------------- keyed embedding


@pytest.mark.parametrize("arch,coding,copies,used", [
    ("cifar_resnet8", "auto", 3, "single"),  # layer2, layer3 twice; pairs would move > 25% of this ticket
    ("cifar_resnet20", "auto", 3, "mixed"),  # layer1 (1,536 kernels) single, layer2 and layer3 paired
    ("cifar_resnet20", "pairs", 3, "pairs"),  # layer1 cannot hold pairs: layer2 once, layer3 twice
    ("cifar_resnet20", "single", 3, "single"),
])
def test_keyed_round_trip_with_defaults(arch: str, coding: str, copies: int, used: str) -> None:
    model = make_model(arch, density=0.1)
    before = {n: int(m.sum()) for n, m in model.masks.items()}
    key = embed_signature(model, TEXT, coding=coding)
    assert {n: int(m.sum()) for n, m in model.masks.items()} == before  # per layer, hence in total
    sec = key.section("signature")
    assert sec["layout"] == "keyed" and len(bytes.fromhex(sec["secret"])) == 32 and sec["copies"] == copies
    assert sec["coding"] == used
    stages = [r["stage"] for r in sec["regions"]]
    assert len(set(stages)) == (3 if arch == "cifar_resnet20" and coding != "pairs" else 2)  # spread over stages
    assert sec["signed_mask_digest"] == mask_digest(model.masks)
    for name, mask in model.masks.items():  # weights follow the mask
        assert torch.all((model.timm_parameters()[name] != 0) == mask), name
    ev = extract_signature(model, key)
    assert ev.matches and ev.text == TEXT and ev.layout == "keyed" and ev.bit_agreement == 1.0
    assert ev.image_text == TEXT and ev.p_value < 1e-50


def test_slots_hold_the_whitened_bits_spread_over_one_stage_per_copy() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET, module_weights=2, coding="single")
    sec = key.section("signature")
    sym = qr.encode(TEXT, version=sec["qr"]["version"], ecc="H", mask_pattern=sec["qr"]["mask_pattern"])
    n = sym.num_data_modules
    spatial = {s: [p for p, m in model.masks.items() if p.startswith(s + ".") and m.shape[-1] > 1]
               for s in ("layer1", "layer2", "layer3")}
    for c, slots in enumerate(_slots(key)):
        assert slots.stage == ("layer1", "layer2", "layer3")[c]
        assert list(slots.params) == spatial[slots.stage]  # every spatial conv of the stage ...
        assert len({int(p) for p in slots.param_index}) == len(slots.params)  # ... holds some of the copy
        flat = slots.param_index.astype(np.int64) * 10**6 + slots.kernel_index
        assert len(np.unique(flat)) == n  # distinct kernels
        target = sym.data_bits() ^ whitening_stream(SECRET, c, n)
        kept, count = _read_slots(model.masks, slots)
        assert np.array_equal(kept, target)  # written exactly, whitened
        assert count[target].min() >= 2  # module_weights
        assert 0.4 < target.mean() < 0.6  # the written pattern is balanced noise, whatever the QR looks like


def test_pair_coding_writes_each_module_as_a_complementary_pair() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET, module_weights=2, coding="pairs")
    sec = key.section("signature")
    assert sec["coding"] == "pairs" and all(r["width"] == 2 for r in sec["regions"])
    n = sec["num_data_modules"]
    bits = qr.encode(TEXT, version=sec["qr"]["version"], ecc="H", mask_pattern=sec["qr"]["mask_pattern"]).data_bits()
    for c, slots in enumerate(_slots(key)):
        assert len(slots) == 2 * n
        kept, count = _read_slots(model.masks, slots)
        target = bits ^ whitening_stream(SECRET, c, n)
        assert np.array_equal(kept[0::2], target) and np.array_equal(kept[1::2], ~target)  # one kept, one pruned
        assert count[kept].min() >= 2  # module_weights


def test_a_model_with_two_eligible_stages_gets_a_third_copy_on_kernels_of_its_own() -> None:
    model = make_model("cifar_resnet8", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
    slots = _slots(key)
    assert [s.stage for s in slots] == ["layer2", "layer3", "layer3"]
    second, third = ({(int(p), int(k)) for p, k in zip(s.param_index, s.kernel_index, strict=True)}
                     for s in slots[1:])
    assert not second & third  # the later copy avoids the earlier one's kernels
    ev = extract_signature(model, key)
    assert ev.matches and ev.slots_verified  # the exclusion is part of the derivation
    sec = json.loads(json.dumps(key.section("signature")))
    sec["regions"] = sec["regions"][:1] + sec["regions"][2:]  # drop the second copy: the third no longer derives
    forged = OwnershipKey(arch=key.arch)
    tensors = key.section_tensors("signature")
    forged.set_section("signature", sec, tensors={"slots.0.param": tensors["slots.0.param"],
                                                  "slots.0.kernel": tensors["slots.0.kernel"],
                                                  "slots.1.param": tensors["slots.2.param"],
                                                  "slots.1.kernel": tensors["slots.2.kernel"]})
    assert not extract_signature(model, forged).slots_verified


def test_pair_coding_turns_pruning_into_erasures_and_still_decodes() -> None:
    """Pruning only clears kernels: a pair loses its kept kernel and reads (pruned, pruned), an
    erasure the decoder knows about; no intact pair reads a wrong bit."""
    from hf_lottery_verify.signature.extract import _read_keyed

    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
    pruned = prune_attack(model, fraction=0.5)
    sec, tensors = key.section("signature"), key.section_tensors("signature")
    n = sec["num_data_modules"]
    weights = {k: v.detach() for k, v in pruned.timm_model.state_dict().items()}
    reads, _ = _read_keyed(weights, sec, tensors, n, defense=True)
    bits = qr.encode(TEXT, version=sec["qr"]["version"], ecc="H", mask_pattern=sec["qr"]["mask_pattern"]).data_bits()
    assert any((~r.valid).mean() > 0.05 for r in reads[1:])  # the attack broke pairs ...
    assert [r.valid is not None for r in reads] == [False, True, True]  # layer1 single, layer2/3 paired
    for r in reads[1:]:
        assert np.array_equal((r.kept ^ r.stream)[r.valid], bits[r.valid])  # ... but left no wrong bit
    ev = extract_signature(pruned, key)
    assert ev.matches and ev.combination in ("weighted", "pairs", "fullness", "fullness-flat")
    assert key.section("signature")["coding"] == "mixed"


def test_single_and_pair_codings_give_the_same_verdict_machinery() -> None:
    """Keys of the single coding (layout version 1, written by earlier versions) still verify."""
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET, coding="single")
    old = json.loads(json.dumps(key.section("signature")))
    old.pop("coding")
    old["layout_version"] = 1
    legacy = OwnershipKey(arch=key.arch)
    legacy.set_section("signature", old, tensors=key.section_tensors("signature"))
    ev = extract_signature(model, legacy)
    assert ev.matches and ev.slots_verified and ev.combination == "any"
    with pytest.raises(hlv.SignatureError, match="Unknown coding"):
        embed_signature(make_model("cifar_resnet8", density=0.1), TEXT, coding="triple")


def test_same_secret_and_seed_give_identical_masks_weights_and_key() -> None:
    a, b = make_model("cifar_resnet20", density=0.1), make_model("cifar_resnet20", density=0.1)
    ka, kb = embed_signature(a, TEXT, secret=SECRET, seed=3), embed_signature(b, TEXT, secret=SECRET.hex(), seed=3)
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    wa, wb = a.timm_model.state_dict(), b.timm_model.state_dict()
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    assert ka.section("signature") == kb.section("signature")
    ta, tb = ka.section_tensors("signature"), kb.section_tensors("signature")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    c = make_model("cifar_resnet20", density=0.1)
    embed_signature(c, TEXT, secret=SECRET, seed=4)  # the seed picks positions inside kernels and values
    assert any(not torch.equal(a.masks[n], c.masks[n]) for n in a.masks)


def test_a_different_secret_gives_different_slots_and_bits() -> None:
    a, b = make_model("cifar_resnet20", density=0.1), make_model("cifar_resnet20", density=0.1)
    sa, sb = _slots(embed_signature(a, TEXT, secret=SECRET)), _slots(embed_signature(b, TEXT, secret=bytes(32)))
    for x, y in zip(sa, sb, strict=True):
        assert x.stage == y.stage  # stages are not secret ...
        same = (x.param_index == y.param_index) & (x.kernel_index == y.kernel_index)
        assert same.mean() < 0.05  # ... the kernels are
    assert (whitening_stream(SECRET, 0, 500) != whitening_stream(bytes(32), 0, 500)).mean() > 0.4
    assert any(not torch.equal(a.masks[n], b.masks[n]) for n in a.masks)


_DIGEST_SCRIPT = """
import hashlib, json
import torch
import hf_lottery_verify as hlv
from hf_lottery_verify.ownership_key import mask_digest
from hf_lottery_verify.signature import embed_signature

def signed_digest():
    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet20", num_labels=10))
    model.prune_(density=0.1)
    key = embed_signature(model, "hf-lottery:alice", secret=bytes(range(32)), seed=5)
    h = hashlib.sha256(mask_digest(model.masks).encode())
    for name, t in sorted(model.timm_model.state_dict().items()):
        h.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(key.section("signature"), sort_keys=True).encode())
    for name, t in sorted(key.section_tensors("signature").items()):
        h.update(name.encode() + t.numpy().tobytes())
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
    embed_signature(model, TEXT, secret=SECRET, rewind=rewind)
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
    key = embed_signature(model, "hf-lottery-demo:owner", secret=SECRET)  # the demo's text
    assert sum(int(m.sum()) for m in model.masks.values()) == total
    sec = key.section("signature")
    assert 1 <= sec["copies"] <= 3 and len({r["stage"] for r in sec["regions"]}) >= min(2, sec["copies"])
    assert extract_signature(model, key, cross_check=False).matches


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cifar_resnet18", "cifar_resnet50"])
def test_defaults_sign_the_large_architectures(arch: str) -> None:
    model = make_model(arch, density=0.02)
    total = sum(int(m.sum()) for m in model.masks.values())
    key = embed_signature(model, "hf-lottery-demo:owner", secret=SECRET)
    assert sum(int(m.sum()) for m in model.masks.values()) == total
    sec = key.section("signature")
    assert [r["stage"] for r in sec["regions"]] == ["layer1", "layer2", "layer3"]  # 3 of 4 stages, earliest first
    assert extract_signature(model, key, cross_check=False).matches


def test_signing_errors_say_what_to_do() -> None:
    dense = make_model("cifar_resnet8")
    with pytest.raises(hlv.SignatureError, match="no masks"):
        embed_signature(dense, TEXT)
    dense.prune_(density=1.0)
    with pytest.raises(hlv.SignatureError, match="prune it first"):
        embed_signature(dense, TEXT)
    model = make_model("cifar_resnet8", density=0.1)
    cap, version, stage = signature_capacity(model.masks)
    assert stage == "layer3" and cap == qr.capacity(version, "H")
    assert qr.num_data_modules(version) <= 0.5 * 64 * (32 + 64) < qr.num_data_modules(version + 1)
    with pytest.raises(hlv.SignatureTooLargeError) as info:
        embed_signature(model, "x" * (cap + 1))
    assert info.value.max_chars == cap and f"{cap} bytes" in str(info.value) and "Shorten the text" in str(info.value)
    embed_signature(copy.deepcopy(model), "x" * cap, secret=SECRET)  # the largest text fits (one copy)
    with pytest.raises(hlv.SignatureError, match="never all share one stage"):
        embed_signature(copy.deepcopy(model), "x" * cap, secret=SECRET, copies=2)  # only layer3 holds it
    with pytest.raises(hlv.SignatureError, match="copies"):
        embed_signature(model, TEXT, copies=0)
    with pytest.raises(hlv.SignatureError, match="polarity"):
        embed_signature(model, TEXT, polarity="upside-down")
    with pytest.raises(hlv.SignatureError, match="layout"):
        embed_signature(model, TEXT, layout="spiral")
    with pytest.raises(hlv.SignatureError, match="not a masked parameter"):
        embed_signature(model, TEXT, layers=["conv1.weight"])


def test_layer_share_cap_and_explicit_layers() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(copy.deepcopy(model), TEXT, secret=SECRET, max_layer_share=0.25)
    for slots in _slots(key):  # len(slots): kernels of the copy (two per module where paired)
        assert np.bincount(slots.param_index).max() <= int(np.ceil(0.25 * len(slots)))
    names = ["layer2.1.conv1.weight", "layer2.1.conv2.weight", "layer3.0.conv2.weight", "layer3.1.conv1.weight"]
    key = embed_signature(copy.deepcopy(model), TEXT, secret=SECRET, layers=names, coding="single")
    assert [s.params for s in _slots(key)] == [tuple(names[:2]), tuple(names[2:]), tuple(names[2:])]


# --------------------------------------------------------------------------- without the key


def test_a_keyless_window_search_finds_the_regions_layout_but_not_the_keyed_one() -> None:
    """A thief with the public weights tries every layer, offset and both polarities — even given
    the exact QR format from the owner's key. The contiguous layout is found at once (and could
    then be rewritten); the keyed one is whitened and scattered, so no window decodes."""
    found = {}
    for layout in ("regions", "keyed"):
        model = make_model("cifar_resnet8", density=0.1)
        key = embed_signature(model, "alice", secret=SECRET, layout=layout, copies=1 if layout == "regions" else None)
        q = key.section("signature")["qr"]
        found[layout] = find_decodable_windows(_thief_masks(model), versions=[q["version"]], ecc_levels=[q["ecc"]],
                                               mask_patterns=[q["mask_pattern"]])
        if layout == "regions":
            region = key.section("signature")["regions"][0]
            assert [(h.param, h.row, h.col, h.text) for h in found[layout]] == [
                (region["param"], region["row"], region["col"], "alice")]
        else:
            assert extract_signature(model, key).matches  # the owner reads it in milliseconds
    assert found["keyed"] == []


@pytest.mark.slow
def test_a_full_keyless_search_over_every_format_finds_nothing() -> None:
    """Every layer, offset, ECC level, mask pattern and polarity at the version of the key (the
    only version that can hold this signature; a decode at another one would be noise)."""
    model = make_model("cifar_resnet8", density=0.1)
    key = embed_signature(model, "alice", secret=SECRET)
    assert key.section("signature")["qr"]["version"] == 1
    assert find_decodable_windows(_thief_masks(model), versions=[1]) == []
    legacy = make_model("cifar_resnet8", density=0.1)
    embed_signature(legacy, "alice", layout="regions", copies=1)
    assert [h.text for h in find_decodable_windows(_thief_masks(legacy), versions=[1], max_hits=1)] == ["alice"]


def test_a_key_with_another_secret_does_not_decode() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
    forged = OwnershipKey(arch=key.arch, sections=json.loads(json.dumps(key.sections)), tensors=dict(key.tensors))
    forged.sections["signature"]["secret"] = bytes(32).hex()  # same slots, another whitening stream
    ev = extract_signature(model, forged)
    assert not ev.matches and ev.text is None and ev.p_value > 1e-3
    assert 0.3 < ev.bit_agreement < 0.7


def test_a_key_with_hand_picked_slots_is_not_evidence() -> None:
    """A forger who sees a model could write a key whose slots sit exactly where its mask already
    spells the text; the slots must be the secret's derivation, so such a key never matches."""
    victim = make_model("cifar_resnet20", density=0.1)  # never signed
    genuine = embed_signature(copy.deepcopy(victim), TEXT, secret=SECRET, coding="single")
    sec = json.loads(json.dumps(genuine.section("signature")))
    sec["regions"] = sec["regions"][1:]  # layer2 and layer3: both kept and pruned kernels are plentiful there
    sec["copies"] = len(sec["regions"])
    n = sec["num_data_modules"]
    bits = qr.encode(TEXT, version=sec["qr"]["version"], ecc="H", mask_pattern=sec["qr"]["mask_pattern"]).data_bits()
    tensors = {}
    for c, rec in enumerate(sec["regions"]):
        kept = torch.cat([squeeze_mask(victim.masks[p]).reshape(-1) for p in rec["params"]]).numpy()
        sizes = [victim.masks[p].shape[0] * victim.masks[p].shape[1] for p in rec["params"]]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        target = bits ^ whitening_stream(SECRET, c, n)
        pools = {True: list(np.flatnonzero(kept)), False: list(np.flatnonzero(~kept))}
        flat = np.array([pools[bool(t)].pop() for t in target])
        param = np.searchsorted(offsets, flat, side="right") - 1
        tensors[f"slots.{c}.param"] = torch.from_numpy(param.astype(np.int16))
        tensors[f"slots.{c}.kernel"] = torch.from_numpy((flat - offsets[param]).astype(np.int32))
        rec["changed_bits"] = np.packbits(np.ones(n, dtype=bool)).tobytes().hex()
    forged = OwnershipKey(arch=genuine.arch)
    forged.set_section("signature", sec, tensors=tensors)
    ev = extract_signature(victim, forged)
    assert ev.text == TEXT  # the hand-picked slots do spell the text ...
    assert not ev.slots_verified and not ev.matches and "secret derives" in ev.decode_reason  # ... but prove nothing
    assert extract_signature(victim, genuine).slots_verified  # a genuine key passes the check


def test_the_unsigned_ticket_is_not_evidence() -> None:
    """The p-value counts only the modules the embedding changed, so the unsigned ticket scores p ~ 1."""
    for arch, seed in (("cifar_resnet20", 0), ("cifar_resnet32", 1)):
        original = make_model(arch, density=0.05, seed=seed)
        signed = copy.deepcopy(original)
        key = embed_signature(signed, TEXT, secret=SECRET)
        unsigned = extract_signature(original, key)
        assert unsigned.text is None and not unsigned.matches and unsigned.p_value > 0.5
        assert extract_signature(signed, key).p_value < 1e-30


def test_unsigned_model_gives_no_text_and_a_large_p_value() -> None:
    owner = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(owner, TEXT, secret=SECRET)
    for seed in (11, 12, 13):
        ev = extract_signature(make_model("cifar_resnet20", density=0.1, seed=seed), key)
        assert ev.text is None and not ev.matches
        assert ev.p_value > 0.01


# --------------------------------------------------------------------------- attacks


def test_keyed_signature_survives_pruning_and_addon_noise() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
    for fraction in (0.2, 0.3):
        ev = extract_signature(prune_attack(model, fraction=fraction, method="magnitude"), key)
        assert ev.matches, (fraction, ev)
    for seed in range(2):
        assert extract_signature(prune_attack(model, fraction=0.05, method="random", seed=seed), key).matches
        add = extract_signature(addon_attack(model, rate=0.01, seed=seed), key)
        assert add.matches and add.defense_applied, add
    # pruning aimed at one stage (every kept weight of layer1 set to zero) destroys one copy only
    params = {n: p.detach().clone() for n, p in model.timm_model.state_dict().items()}
    for name in params:
        if name.startswith("layer1.") and params[name].dim() == 4:
            params[name].zero_()
    ev = extract_signature(params, key)
    assert ev.matches, ev


def _retrained_signed_ticket(**options):
    data = tiny_data()
    model = make_model("cifar_resnet20", num_labels=4, density=0.15)
    rewind = make_model("cifar_resnet20", num_labels=4)
    key = embed_signature(model, TEXT, secret=SECRET, seed=0, rewind=rewind, **options)
    trainer = Trainer(model, data.train, tiny_train_config(epochs=3), test_data=data.test, progress=False)
    trainer.train()
    trainer.close()
    return model, key, trainer.history[-1].test_accuracy


@pytest.mark.slow
def test_retrained_signature_survives_the_acceptance_attacks() -> None:
    model, key, accuracy = _retrained_signed_ticket()
    assert accuracy > 50
    ev = extract_signature(model, key)
    assert ev.matches
    omp = extract_signature(prune_attack(model, fraction=0.2, method="magnitude"), key)
    assert omp.matches, omp
    for seed in range(3):
        rnd = extract_signature(prune_attack(model, fraction=0.05, method="random", seed=seed), key)
        assert rnd.matches, rnd
        add = extract_signature(addon_attack(model, rate=0.01, seed=seed), key)
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
    for agree, ones, zeros, q in ((300, 250, 300, 0.3), (10, 20, 30, 0.5), (0, 5, 5, 0.1)):
        assert agreement_p_value(agree, [(ones, zeros, q)]) == pytest.approx(
            module_agreement_p_value(agree, ones=ones, zeros=zeros, q=q), rel=1e-9)
    split = agreement_p_value(300, [(100, 150, 0.3), (150, 150, 0.3)])
    assert split == pytest.approx(module_agreement_p_value(300, ones=250, zeros=300, q=0.3), rel=1e-9)


# --------------------------------------------------------------------------- suspects and keys


def test_extraction_from_model_folder_timm_and_wrapper_layouts(tmp_path: Path) -> None:
    import timm

    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
    key.save(tmp_path / "key.json")
    model.save_pretrained(tmp_path / "ours")
    timm.models.save_for_hf(model.timm_model, tmp_path / "timm", safe_serialization=True)
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    wrapper = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="cifar_resnet20", num_labels=10))
    wrapper.timm_model.load_state_dict(model.timm_model.state_dict())
    wrapper.save_pretrained(tmp_path / "wrapper")
    for source in (model, tmp_path / "ours", tmp_path / "timm", tmp_path / "wrapper"):
        ev = extract_signature(source, tmp_path / "key.json")
        assert ev.text == TEXT and ev.matches and ev.bit_agreement == 1.0 and ev.image_text == TEXT
        assert ev.p_value < 1e-50


def test_extraction_from_an_aligned_state_dict() -> None:
    """Channel re-alignment hands extraction a plain state dict in the reference's layout."""
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
    weights = {n: t.clone() for n, t in model.timm_model.state_dict().items()}
    assert extract_signature(weights, key).matches
    signed = key.section("signature")["regions"][0]["params"][0]
    bad = dict(weights, **{signed: torch.zeros(8, 8, 3, 3)})
    with pytest.raises(hlv.KeyMismatchError, match="shape"):
        extract_signature(bad, key)
    with pytest.raises(hlv.KeyMismatchError, match="no parameter"):
        extract_signature({n: t for n, t in weights.items() if n != signed}, key)


def test_stored_masks_are_never_trusted(tmp_path: Path) -> None:
    from hf_lottery_verify.storage import write_checkpoint

    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
    thief = make_model("cifar_resnet20", density=0.1, seed=9)  # unrelated weights ...
    # ... saved with the owner's masks in the header: extraction must ignore them
    sd = thief.timm_model.state_dict()
    masks = {n: sd[n] != 0 for n in model.masks}
    write_checkpoint(tmp_path / "model.safetensors", sd, masks=masks, metadata={"arch": "cifar_resnet20"})
    ev = extract_signature(tmp_path / "model.safetensors", key)
    assert not ev.matches and ev.p_value > 0.01


def test_key_that_does_not_fit_the_model(tmp_path: Path) -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
    with pytest.raises(hlv.KeyMismatchError, match="no parameter"):
        extract_signature(make_model("cifar_resnet8", density=0.1), key)
    bad = OwnershipKey(arch=key.arch, sections=json.loads(json.dumps(key.sections)), tensors=dict(key.tensors))
    bad.tensors["signature.slots.0.kernel"] = bad.tensors["signature.slots.0.kernel"].clone()
    bad.tensors["signature.slots.0.kernel"][0] = 10**6
    with pytest.raises(hlv.KeyMismatchError, match="outside"):
        extract_signature(model, bad)
    del bad.tensors["signature.slots.1.kernel"]
    with pytest.raises(hlv.KeyMismatchError, match="slot tensors"):
        extract_signature(model, bad)
    with pytest.raises(hlv.KeyMismatchError, match="no 'signature' section"):
        extract_signature(model, OwnershipKey(arch="cifar_resnet20"))
    future = OwnershipKey(arch=key.arch, sections=json.loads(json.dumps(key.sections)), tensors=dict(key.tensors))
    future.sections["signature"]["layout"] = "hologram"
    with pytest.raises(hlv.KeyMismatchError, match="upgrade"):
        extract_signature(model, future)


def test_the_key_round_trips_through_its_files(tmp_path: Path) -> None:
    model = make_model("cifar_resnet8", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
    key.save(tmp_path / "k.json")
    loaded = OwnershipKey.load(tmp_path / "k.json")
    assert loaded.commitment() == key.commitment()  # the commitment covers the slots and the secret
    assert extract_signature(model, tmp_path / "k.json").matches
    sec = json.loads((tmp_path / "k.json").read_text())["sections"]["signature"]
    assert sec["secret"] == SECRET.hex() and all("slots" not in r or isinstance(r["slots"], int)
                                                 for r in sec["regions"])
    other = copy.deepcopy(key)
    other.sections["signature"] = dict(other.sections["signature"], secret=bytes(32).hex())
    assert other.commitment() != key.commitment()


def test_save_pretrained_signs_once_and_keeps_the_key_out(tmp_path: Path) -> None:
    model = make_model("cifar_resnet20", density=0.1)
    digest = mask_digest(model.masks)
    with pytest.raises(hlv.KeyFileError, match="inside the model folder"):
        model.save_pretrained(tmp_path / "pub", signature=TEXT, key_path=tmp_path / "pub" / "key.json")
    assert mask_digest(model.masks) == digest and model.ownership_claim is None  # nothing embedded
    model.save_pretrained(tmp_path / "pub", signature=TEXT, key_path=tmp_path / "keys" / "k.json", owner="alice")
    assert not any("key" in p.name for p in (tmp_path / "pub").iterdir())
    assert not hasattr(model, "signature_key")  # no private state on the model
    claim = model.ownership_claim
    assert claim["owner"] == "alice" and claim["schemes"] == ["V2"]
    assert claim["key_commitment"] == OwnershipKey.load(tmp_path / "keys" / "k.json").commitment()
    assert TEXT not in json.dumps(claim) and "regions" not in claim and "qr" not in claim
    # nothing published names the layout, the secret, the slots or the QR format
    secret = OwnershipKey.load(tmp_path / "keys" / "k.json").section("signature")["secret"]
    for f in (tmp_path / "pub").rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert secret.encode() not in blob and b"slots" not in blob and b"mask_pattern" not in blob, f
    signed = mask_digest(model.masks)
    model.save_pretrained(tmp_path / "pub2")  # re-saving keeps the claim, signs nothing
    assert mask_digest(model.masks) == signed
    with pytest.raises(hlv.SignatureError, match="already carries"):
        model.save_pretrained(tmp_path / "pub3", signature="other", key_path=tmp_path / "keys" / "k3.json")
    ev = extract_signature(tmp_path / "pub", tmp_path / "keys" / "k.json")
    assert ev.matches


def test_signing_twice_with_the_same_key_path_keeps_the_first_key(tmp_path: Path) -> None:
    first, second = make_model("cifar_resnet20", density=0.1), make_model("cifar_resnet20", density=0.1, seed=1)
    key_path = tmp_path / "keys" / "k.json"
    first.save_pretrained(tmp_path / "one", signature=TEXT, key_path=key_path)
    before = key_path.read_bytes()
    with pytest.raises(hlv.KeyFileError, match="already holds a 'signature' section"):
        second.save_pretrained(tmp_path / "two", signature="second", key_path=key_path)
    assert key_path.read_bytes() == before
    assert extract_signature(tmp_path / "one", key_path).matches


def test_a_tampered_header_does_not_block_verification(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
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
        ev = extract_signature(out, key)
        assert ev.matches, name


def test_in_memory_timm_wrapper_suspect() -> None:
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET)
    wrapper = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="cifar_resnet20", num_labels=10))
    wrapper.timm_model.load_state_dict(model.timm_model.state_dict())
    assert extract_signature(wrapper, key).matches


def test_a_loaded_signed_checkpoint_is_not_signed_twice(tmp_path: Path) -> None:
    model = make_model("cifar_resnet20", density=0.1)
    model.save_pretrained(tmp_path / "pub", signature=TEXT, key_path=tmp_path / "k.json")
    loaded = hlv.load_model(tmp_path / "pub")
    assert loaded.ownership_claim["schemes"] == ["V2"]
    with pytest.raises(hlv.SignatureError, match="already carries"):
        loaded.save_pretrained(tmp_path / "again", signature="thief", key_path=tmp_path / "k2.json")
    loaded.save_pretrained(tmp_path / "resaved")  # re-saving keeps the public claim
    assert hlv.load_model(tmp_path / "resaved").ownership_claim == loaded.ownership_claim


# --------------------------------------------------------------------------- the earlier "regions" layout


def test_legacy_regions_keys_still_extract() -> None:
    """Keys written before the keyed layout have no ``layout`` field and no tensors."""
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, layout="regions")
    old = OwnershipKey(arch=key.arch, sections=json.loads(json.dumps(key.sections)))
    del old.sections["signature"]["layout"]
    ev = extract_signature(model, old)
    assert ev.matches and ev.layout == "regions" and len(ev.copies) == 2 and ev.p_value < 1e-50
    assert extract_signature(prune_attack(model, fraction=0.3), old).matches
    bad = OwnershipKey(arch=key.arch, sections=json.loads(json.dumps(old.sections)))
    bad.sections["signature"]["regions"][0]["row"] = 60
    with pytest.raises(hlv.KeyMismatchError, match="outside"):
        extract_signature(model, bad)


def test_region_agreement_equals_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    sq = torch.rand(30, 27, generator=gen) < 0.4
    sym = qr.encode("abc", version=1)
    agree = region_agreement(sq, sym.modules, sym.data_map)
    assert agree.shape == (30 - 21 + 1, 27 - 21 + 1)
    for r, c in [(0, 0), (3, 5), (9, 6)]:
        window = sq[r:r + 21, c:c + 21].numpy()
        assert agree[r, c] == int((window == sym.modules)[sym.data_map].sum())


def test_pruned_search_finds_the_exhaustive_best() -> None:
    """The bound that skips hopeless layers never changes the result."""
    masks = make_model("cifar_resnet20", density=0.15).masks
    sym = qr.encode(TEXT)
    names = candidate_layers(masks, sym.size, layers="all")
    n_data = int(sym.data_map.sum())
    best = None
    for name in names:  # exhaustive search, same tie-breaking (higher agreement, earlier layer)
        agree = region_agreement(squeeze_mask(masks[name]), sym.modules, sym.data_map)
        for inverted in (False, True):
            a = n_data - agree if inverted else agree
            flat = int(torch.argmax(a))
            cand = (float(a.reshape(-1)[flat]), -names.index(name), name, *divmod(flat, a.shape[1]), inverted)
            if best is None or cand[:2] > best[:2]:
                best = cand
    found = find_regions(masks, sym, layers="all", copies=1)
    assert [(r.param, r.row, r.col, r.inverted) for r in found] == [(best[2], best[3], best[4], best[5])]
    three = find_regions(masks, sym, copies=3)
    assert len(three) == 3 and len({r.inverted for r in three}) == 1
    assert not any(a.overlaps(b) for i, a in enumerate(three) for b in three[i + 1:])


@pytest.mark.parametrize("copies,module_weights", [(1, 1), (2, 2)])
def test_regions_embedding_keeps_kept_counts_and_writes_the_symbol(copies: int, module_weights: int) -> None:
    model = make_model("cifar_resnet20", density=0.1)
    before = {n: int(m.sum()) for n, m in model.masks.items()}
    key = embed_signature(model, TEXT, layout="regions", seed=0, copies=copies, module_weights=module_weights)
    assert {n: int(m.sum()) for n, m in model.masks.items()} == before  # exactly unchanged, per layer
    sec = key.section("signature")
    assert sec["layout"] == "regions" and len(sec["regions"]) == copies and not key.section_tensors("signature")
    sym = qr.encode(TEXT, version=sec["qr"]["version"], ecc="H", mask_pattern=sec["qr"]["mask_pattern"])
    for region in sec["regions"]:
        mask = model.masks[region["param"]]
        window = squeeze_mask(mask)[region["row"]:region["row"] + sym.size, region["col"]:region["col"] + sym.size]
        target = ~sym.modules if region["inverted"] else sym.modules
        assert np.array_equal(window.numpy()[sym.data_map], target[sym.data_map])  # data modules written exactly
        counts = mask[region["row"]:region["row"] + sym.size, region["col"]:region["col"] + sym.size].flatten(2).sum(2)
        assert int(counts.numpy()[sym.data_map & target].min()) >= module_weights
        assert region["param"].startswith("layer2.")  # the low-level layers that can hold the symbol
    assert extract_signature(model, key).matches


def test_regions_capacity_and_candidate_layers_rules() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    masks = model.masks
    cap, version, layer = signature_capacity(masks, layout="regions")
    assert (version, layer.split(".")[0]) == (11, "layer3") and cap == qr.capacity(11, "H")
    with pytest.raises(hlv.SignatureTooLargeError, match=f"{cap} bytes"):
        embed_signature(copy.deepcopy(model), "x" * (cap + 1), layout="regions")
    with pytest.raises(hlv.SignatureTooLargeError, match="even a version-1"):
        embed_signature(make_model("cifar_resnet8", density=0.1), "x" * 500, layout="regions",
                        layers=["layer1.0.conv1.weight"])
    assert candidate_layers(masks, 21) == [n for n in masks if n.startswith("layer2.") and "downsample" not in n
                                           and n != "layer2.0.conv1.weight"]
    assert all(n.startswith("layer3.") for n in candidate_layers(masks, 41))
    with pytest.raises(hlv.SignatureError, match="cannot hold"):
        candidate_layers(masks, 21, layers=["layer1.0.conv1.weight"])


def test_regions_unsigned_ticket_is_not_evidence() -> None:
    original = make_model("cifar_resnet32", density=0.05)
    signed = copy.deepcopy(original)
    key = embed_signature(signed, TEXT, layout="regions", copies=1, module_weights=1, layers="all")
    unsigned = extract_signature(original, key)
    assert unsigned.text is None and unsigned.p_value > 0.5
    assert unsigned.bit_agreement > 0.5  # high raw agreement: exactly why it is not used for the test
    assert extract_signature(signed, key).p_value < 1e-30


@pytest.mark.parametrize("layout", ["keyed", "regions"])
def test_signature_positions_let_a_signed_ticket_be_locked_without_touching_the_signature(layout: str) -> None:
    from hf_lottery_verify.keymask import lock_model
    from hf_lottery_verify.signature import signature_positions

    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, secret=SECRET, layout=layout)
    protect = signature_positions(key)
    assert protect and all(protect[n].shape == model.masks[n].shape for n in protect)
    locked, key = lock_model(model, ratio=0.3, score="omp", key=key, protect=protect)
    for name, where in protect.items():  # every kept signature weight stays public
        assert torch.equal(locked.masks[name][where], model.masks[name][where])
    evidence = extract_signature(locked, key)
    assert evidence.text == TEXT and evidence.bit_agreement == 1.0


def test_the_share_of_the_ticket_a_signature_moves_is_recorded_and_a_heavy_one_warns(caplog) -> None:
    import logging

    light = make_model("cifar_resnet20", density=0.2)
    key = embed_signature(light, TEXT, secret=SECRET)
    assert 0 < key.section("signature")["moved_share"] < 0.25
    sparse = make_model("cifar_resnet20", density=0.01)
    with caplog.at_level(logging.WARNING, logger="hf_lottery_verify.signature.embed"):
        heavy = embed_signature(sparse, TEXT, secret=SECRET)
    assert heavy.section("signature")["moved_share"] > 0.25
    assert any("copies=1 and module_weights=1" in r.getMessage() for r in caplog.records)
    lighter = embed_signature(make_model("cifar_resnet20", density=0.01), TEXT, secret=SECRET, copies=1,
                              module_weights=1)
    assert lighter.section("signature")["moved_share"] < heavy.section("signature")["moved_share"] / 3


def test_a_key_ground_until_erasures_decode_the_owners_mask_is_no_evidence() -> None:
    """A forger grinds secrets for a key written after the fact: with slots derived honestly,
    some combination erases nearly every check symbol and "decodes" whatever the owner's mask
    reads there (secret #8665 of this sequence, found in 32 s). Such a decode is as likely as
    chance, so it must never match."""
    import hashlib

    from hf_lottery_verify.qr import decode_security_bits
    from hf_lottery_verify.signature.slots import draw_slots

    victim = make_model("cifar_resnet20", density=0.05, seed=0)
    embed_signature(victim, "owner: alice", secret=bytes(range(16)))  # the owner's published model
    template = embed_signature(copy.deepcopy(victim), "x", secret=bytes(16), coding="pairs")
    sec = json.loads(json.dumps(template.section("signature")))
    n, secret = sec["num_data_modules"], hashlib.sha256(b"forge8665").digest()[:16]
    sec.update(secret=secret.hex(), text="7JN%*+O4.X")
    sec["qr"]["mask_pattern"] = 1
    tensors, earlier = {}, []
    for c, rec in enumerate(sec["regions"]):
        slots = draw_slots(secret, sec["param_shapes"], rec["stage"], tuple(rec["params"]), 2 * n, c, taken=earlier)
        earlier.append(slots)
        tensors.update(slots.to_tensors(c))
    forged = OwnershipKey(arch=template.arch)
    forged.set_section("signature", sec, tensors=tensors)
    ev = extract_signature(victim, forged, cross_check=False)
    assert ev.slots_verified  # the slots are honest ...
    assert not ev.matches and ev.security_bits < 40  # ... but the decode is chance
    assert hlv.verify_model(victim, forged).verdict != "owned"
    owner = make_model("cifar_resnet20", density=0.05, seed=1)
    genuine = extract_signature(owner, embed_signature(owner, "owner: alice", secret=SECRET), cross_check=False)
    assert genuine.matches and genuine.security_bits >= 100  # an intact copy leaves every check symbol to spare
    # the bound itself: every check symbol erased decodes anything; a clean 1-H block is 136 bits
    assert decode_security_bits([(26, 17, 17, 0)]) == 0 and decode_security_bits([(26, 17, 0, 0)]) == 136
