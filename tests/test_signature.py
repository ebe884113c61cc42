from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify import qr
from hf_lottery_verify.attacks import addon_attack, prune_attack
from hf_lottery_verify.masks import squeeze_mask
from hf_lottery_verify.ownership_key import OwnershipKey, mask_digest
from hf_lottery_verify.signature import (
    candidate_layers,
    embed_signature,
    extract_signature,
    find_regions,
    region_agreement,
    signature_capacity,
)
from hf_lottery_verify.training import Trainer

from .helpers import make_model, tiny_data, tiny_train_config

TEXT = "hf-lottery:alice"


def test_region_agreement_equals_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    sq = torch.rand(30, 27, generator=gen) < 0.4
    sym = qr.encode("abc", version=1)
    agree = region_agreement(sq, sym.modules, sym.data_map)
    assert agree.shape == (30 - 21 + 1, 27 - 21 + 1)
    for r, c in [(0, 0), (3, 5), (9, 6)]:
        window = sq[r:r + 21, c:c + 21].numpy()
        assert agree[r, c] == int((window == sym.modules)[sym.data_map].sum())


@pytest.mark.parametrize("copies", [1, 3])
def test_pruned_search_finds_the_exhaustive_best(copies: int) -> None:
    """The bound that skips hopeless layers never changes the result."""
    masks = make_model("cifar_resnet20", density=0.15).masks
    sym = qr.encode(TEXT)
    names = candidate_layers(masks, sym.size, layers="all")
    n_data = int(sym.data_map.sum())
    chosen: list = []
    for _ in range(copies):  # exhaustive greedy search, same tie-breaking (higher agreement, earlier layer)
        best = None
        for name in names:
            agree = region_agreement(squeeze_mask(masks[name]), sym.modules, sym.data_map)
            for inverted in (False, True):
                a = n_data - agree if inverted else agree.clone()
                for r in chosen:
                    if r[0] == name:
                        a[max(0, r[1] - sym.size + 1): r[1] + sym.size, max(0, r[2] - sym.size + 1): r[2] + sym.size] = -1
                flat = int(torch.argmax(a))
                cand = (float(a.reshape(-1)[flat]), -names.index(name), name, *divmod(flat, a.shape[1]), inverted)
                if best is None or cand[:2] > best[:2]:
                    best = cand
        chosen.append((best[2], best[3], best[4], best[5]))
    found = find_regions(masks, sym, layers="all", copies=copies)
    if copies == 1:
        assert [(r.param, r.row, r.col, r.inverted) for r in found] == chosen
    else:  # several copies share one polarity: compare with the exhaustive best of that polarity
        assert len({r.inverted for r in found}) == 1 and len(found) == copies


@pytest.mark.parametrize("copies,module_weights", [(1, 1), (2, 2)])
def test_embedding_keeps_kept_counts_and_writes_the_symbol(copies: int, module_weights: int) -> None:
    model = make_model("cifar_resnet20", density=0.1)
    before = {n: int(m.sum()) for n, m in model.masks.items()}
    key = embed_signature(model, TEXT, seed=0, copies=copies, module_weights=module_weights)
    assert {n: int(m.sum()) for n, m in model.masks.items()} == before  # exactly unchanged, per layer
    sec = key.section("signature")
    assert len(sec["regions"]) == copies
    sym = qr.encode(TEXT, version=sec["qr"]["version"], ecc="H", mask_pattern=sec["qr"]["mask_pattern"])
    for region in sec["regions"]:
        mask = model.masks[region["param"]]
        window = squeeze_mask(mask)[region["row"]:region["row"] + sym.size, region["col"]:region["col"] + sym.size]
        target = ~sym.modules if region["inverted"] else sym.modules
        assert np.array_equal(window.numpy()[sym.data_map], target[sym.data_map])  # data modules written exactly
        counts = mask[region["row"]:region["row"] + sym.size, region["col"]:region["col"] + sym.size].flatten(2).sum(2)
        assert int(counts.numpy()[sym.data_map & target].min()) >= module_weights
    assert sec["signed_mask_digest"] == mask_digest(model.masks)
    for name, mask in model.masks.items():  # weights follow the mask
        assert torch.all((model.timm_parameters()[name] != 0) == mask), name
    # default candidates are the low-level layers that can hold the symbol
    assert all(r["param"].startswith("layer2.") for r in sec["regions"])


def test_same_seed_same_masks_and_key() -> None:
    a, b = make_model("cifar_resnet20", density=0.1), make_model("cifar_resnet20", density=0.1)
    ka, kb = embed_signature(a, TEXT, seed=3), embed_signature(b, TEXT, seed=3)
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    sa, sb = dict(ka.section("signature")), dict(kb.section("signature"))
    sa.pop("seconds"), sb.pop("seconds")
    assert sa == sb
    c = make_model("cifar_resnet20", density=0.1)
    embed_signature(c, TEXT, seed=4)
    assert any(not torch.equal(a.masks[n], c.masks[n]) for n in a.masks)


def test_rewind_values_are_used_for_switched_on_weights() -> None:
    model = make_model("cifar_resnet20", density=0.05)
    rewind = make_model("cifar_resnet20", seed=7)
    old = {n: m.clone() for n, m in model.masks.items()}
    embed_signature(model, TEXT, rewind=rewind)
    w, r = model.timm_parameters(), rewind.timm_parameters()
    for name, mask in model.masks.items():
        new = mask & ~old[name]
        assert torch.equal(w[name][new], r[name].detach()[new])


def test_extraction_from_model_folder_timm_and_wrapper_layouts(tmp_path: Path) -> None:
    import timm

    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT)
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


def test_stored_masks_are_never_trusted(tmp_path: Path) -> None:
    from hf_lottery_verify.storage import write_checkpoint

    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT)
    thief = make_model("cifar_resnet20", density=0.1, seed=9)  # unrelated weights ...
    # ... saved with the owner's masks in the header: extraction must ignore them
    sd = thief.timm_model.state_dict()
    masks = {n: sd[n] != 0 for n in model.masks}
    write_checkpoint(tmp_path / "model.safetensors", sd, masks=masks, metadata={"arch": "cifar_resnet20"})
    ev = extract_signature(tmp_path / "model.safetensors", key)
    assert not ev.matches and ev.p_value > 0.01


def test_unsigned_model_gives_no_text_and_a_large_p_value() -> None:
    owner = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(owner, TEXT)
    for seed in (11, 12, 13):
        ev = extract_signature(make_model("cifar_resnet20", density=0.1, seed=seed), key)
        assert ev.text is None and not ev.matches
        assert ev.p_value > 0.01


def _retrained_signed_ticket(copies: int = 2, module_weights: int = 2):
    data = tiny_data()
    model = make_model("cifar_resnet20", num_labels=4, density=0.15)
    rewind = make_model("cifar_resnet20", num_labels=4)
    key = embed_signature(model, TEXT, seed=0, copies=copies, module_weights=module_weights, rewind=rewind)
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


def test_too_long_text_names_the_largest_capacity() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    cap, version, layer = signature_capacity(model.masks)
    # the widest layers (64 channels) hold at most a version-11 symbol (61x61)
    assert (version, layer.split(".")[0]) == (11, "layer3") and cap == qr.capacity(11, "H")
    with pytest.raises(hlv.SignatureTooLargeError) as info:
        embed_signature(model, "x" * (cap + 1))
    assert info.value.max_chars == cap and f"{cap} bytes" in str(info.value)
    # short texts go to the low-level layers, long ones to the first stage wide enough
    short = embed_signature(make_model("cifar_resnet20", density=0.1), "x" * 20)
    assert all(r["param"].startswith("layer2.") for r in short.section("signature")["regions"])
    long = embed_signature(make_model("cifar_resnet20", density=0.1), "x" * cap)
    assert all(r["param"].startswith("layer3.") for r in long.section("signature")["regions"])
    with pytest.raises(hlv.SignatureTooLargeError, match="even a version-1"):
        embed_signature(make_model("cifar_resnet8", density=0.1), "x" * 500, layers=["layer1.0.conv1.weight"])


def test_key_that_does_not_fit_the_model(tmp_path: Path) -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT)
    with pytest.raises(hlv.KeyMismatchError, match="no parameter"):
        extract_signature(make_model("cifar_resnet8", density=0.1), key)
    wide = make_model("cifar_resnet20", density=0.1)
    bad = OwnershipKey(arch="cifar_resnet20", sections={"signature": json.loads(json.dumps(key.section("signature")))})
    bad.sections["signature"]["regions"][0]["row"] = 60
    with pytest.raises(hlv.KeyMismatchError, match="outside"):
        extract_signature(wide, bad)
    with pytest.raises(hlv.KeyMismatchError, match="no 'signature' section"):
        extract_signature(wide, OwnershipKey(arch="cifar_resnet20"))


def test_two_copies_survive_heavier_pruning() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT, copies=2, module_weights=2)
    regions = key.section("signature")["regions"]
    assert len(regions) == 2 and len({r["inverted"] for r in regions}) == 1
    ev = extract_signature(prune_attack(model, fraction=0.3), key)
    assert ev.matches and len(ev.copies) == 2


def test_candidate_layers_rules() -> None:
    masks = make_model("cifar_resnet20", density=0.1).masks
    assert candidate_layers(masks, 21) == [n for n in masks if n.startswith("layer2.") and "downsample" not in n
                                           and n != "layer2.0.conv1.weight"]
    assert all(n.startswith("layer3.") for n in candidate_layers(masks, 41))
    with pytest.raises(hlv.SignatureError, match="cannot hold"):
        candidate_layers(masks, 21, layers=["layer1.0.conv1.weight"])
    regions = find_regions(masks, qr.encode(TEXT), copies=3)
    assert len(regions) == 3
    assert not any(a.overlaps(b) for i, a in enumerate(regions) for b in regions[i + 1:])


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


def test_speed_on_a_resnet50_sized_mask_set() -> None:
    model = make_model("cifar_resnet50", density=0.02)
    t0 = time.perf_counter()
    regions = find_regions(model.masks, qr.encode(TEXT, version=5), layers="all")
    search = time.perf_counter() - t0
    key = embed_signature(model, TEXT, layers="all", copies=1)
    t0 = time.perf_counter()
    ev = extract_signature(model, key, cross_check=False)
    extract = time.perf_counter() - t0
    assert regions and ev.matches
    assert search < 5.0 and extract < 1.0  # generous bounds for CI; bench/qr_speed.py measures the real figures


def test_the_unsigned_ticket_is_not_evidence() -> None:
    """The region is chosen where the unsigned mask already agrees most; the p-value counts
    only the modules the embedding changed, so the unsigned ticket scores p ~ 1."""
    import copy

    for seed in range(3):
        original = make_model("cifar_resnet32", density=0.05, seed=seed)
        signed = copy.deepcopy(original)
        key = embed_signature(signed, TEXT, copies=1, module_weights=1, layers="all")
        unsigned = extract_signature(original, key)
        assert unsigned.text is None and unsigned.p_value > 0.5
        assert unsigned.bit_agreement > 0.5  # high raw agreement: exactly why it is not used for the test
        assert extract_signature(signed, key).p_value < 1e-30


def test_a_tampered_header_does_not_block_verification(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = make_model("cifar_resnet20", density=0.1)
    key = embed_signature(model, TEXT)
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
    key = embed_signature(model, TEXT)
    wrapper = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="cifar_resnet20", num_labels=10))
    wrapper.timm_model.load_state_dict(model.timm_model.state_dict())
    assert extract_signature(wrapper, key).matches


def test_bad_copies_and_polarity() -> None:
    model = make_model("cifar_resnet20", density=0.1)
    with pytest.raises(hlv.SignatureError, match="copies"):
        embed_signature(model, TEXT, copies=0)
    with pytest.raises(hlv.SignatureError, match="polarity"):
        embed_signature(model, TEXT, polarity="upside-down")


def test_a_loaded_signed_checkpoint_is_not_signed_twice(tmp_path: Path) -> None:
    model = make_model("cifar_resnet20", density=0.1)
    model.save_pretrained(tmp_path / "pub", signature=TEXT, key_path=tmp_path / "k.json")
    loaded = hlv.load_model(tmp_path / "pub")
    assert loaded.ownership_claim["schemes"] == ["V2"]
    with pytest.raises(hlv.SignatureError, match="already carries"):
        loaded.save_pretrained(tmp_path / "again", signature="thief", key_path=tmp_path / "k2.json")
    loaded.save_pretrained(tmp_path / "resaved")  # re-saving keeps the public claim
    assert hlv.load_model(tmp_path / "resaved").ownership_claim == loaded.ownership_claim
