"""verify_model: the verdict survives function-preserving structural attacks and never trusts the suspect."""

from __future__ import annotations

import json

import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.attacks.structural import add_dummy_channels, densify, permute_channels, rescale_channels
from hf_lottery_verify.ownership_key import OwnershipKey
from hf_lottery_verify.verify import VerdictPolicy, decide

from .helpers import make_model

TEXT = "alice 2026"


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    model = make_model("cifar_resnet20", density=0.1)
    # give BatchNorm non-trivial statistics, as a trained model has
    model.train()(torch.randn(64, 3, 32, 32))
    model.eval()
    model.save_pretrained(root / "pub", signature=TEXT, key_path=root / "key.json", owner="alice",
                          signature_options={"secret": "b2" * 16})  # fixed: the null p-values below are deterministic
    return hlv.load_model(root / "pub"), root / "key.json", root


def test_the_signed_model_and_its_folder_are_owned(signed) -> None:
    model, key, root = signed
    for suspect in (model, root / "pub", root / "pub" / "model.safetensors", model.timm_model.state_dict()):
        report = hlv.verify_model(suspect, key)
        assert report.verdict == "owned", (suspect, report.reasons)
    assert report.alignment is not None and report.alignment["confidence"] > 0.9
    assert report.key["commitment"] == OwnershipKey.load(key).commitment()
    assert "secret" not in report.to_json()


@pytest.mark.parametrize("attack", ["permute", "rescale", "dummy", "densify_rescale", "all"])
def test_function_preserving_attacks_keep_the_verdict(signed, attack: str) -> None:
    model, key, _ = signed
    if attack == "permute":
        stolen = permute_channels(model, seed=1)
    elif attack == "rescale":
        stolen = rescale_channels(model, seed=2)
    elif attack == "dummy":
        stolen = add_dummy_channels(model, seed=3, per_space=2)
    elif attack == "densify_rescale":
        stolen = rescale_channels(densify(model, seed=4, scale=1e-4), seed=5, mode="bn")
    else:
        stolen = permute_channels(add_dummy_channels(rescale_channels(model, seed=6), seed=7), seed=8)
    x = torch.randn(4, 3, 32, 32)
    if attack != "densify_rescale":  # the others change no output
        assert torch.allclose(stolen.eval()(x).logits, model.eval()(x).logits, atol=1e-4)
    report = hlv.verify_model(stolen, key)
    assert report.verdict == "owned", report.reasons
    assert report.alignment["confidence"] > 0.5


def test_a_widened_copy_saved_by_a_thief_is_owned(signed, tmp_path) -> None:
    from safetensors.torch import save_file

    model, key, _ = signed
    stolen = permute_channels(add_dummy_channels(model, seed=11), seed=12)
    tmp_path.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in stolen.timm_model.state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "cifar_resnet20", "num_classes": 10}))
    report = hlv.verify_hub_model(tmp_path, key=key)
    assert report.verdict == "owned", report.reasons
    assert report.alignment["widened"] and report.alignment["permuted"]


def test_an_unrelated_model_is_not_owned_and_aligns_poorly(signed) -> None:
    _, key, _ = signed
    other = make_model("cifar_resnet20", density=0.1, seed=3)
    report = hlv.verify_model(other, key)
    assert report.verdict == "not_owned", report.reasons
    assert report.alignment["confidence"] < 0.5
    assert any("probably not a copy" in n for n in report.notes)
    # the alignment searched channel orders for the best match: on a model that is no copy its
    # p-value is not evidence, so the report takes the suspect's own order when that is larger
    v2 = report.evidence["V2"]
    assert v2["p_value"] == max(v2["aligned_p_value"], v2["unaligned"]["p_value"]) >= v2["aligned_p_value"]
    assert "own channel order" in v2["summary"]


def test_a_damaged_permuted_copy_keeps_its_aligned_evidence(signed) -> None:
    model, key, _ = signed
    from hf_lottery_verify.attacks import prune_attack

    copy = prune_attack(permute_channels(model, seed=1), fraction=0.3)
    report = hlv.verify_model(copy, key)
    assert report.alignment["confidence"] >= 0.5 and "aligned_p_value" not in report.evidence["V2"]
    assert report.evidence["V2"]["p_value"] < 1e-6, report.evidence["V2"]["summary"]


def test_another_architecture_is_a_typed_error(signed) -> None:
    _, key, _ = signed
    with pytest.raises(hlv.KeyMismatchError, match="not a cifar_resnet20"):
        hlv.verify_model(make_model("cifar_resnet8", density=0.1), key)


def test_decision_rule() -> None:
    policy = VerdictPolicy()
    assert decide({"V2": {"matches": True, "text": "x", "p_value": 1e-40}}, policy=policy)[0] == "owned"
    assert decide({"V2": {"matches": False, "p_value": 1e-20, "bit_agreement": 0.9}}, policy=policy)[0] == "inconclusive"
    assert decide({"V2": {"matches": False, "p_value": 0.4, "bit_agreement": 0.5}}, policy=policy)[0] == "not_owned"
    v3 = {"matches": 40, "n": 100, "answered": 100}
    assert decide({"V3": {**v3, "p_value": 1e-12}}, policy=policy)[0] == "owned"
    assert decide({"V3": {**v3, "p_value": 1e-12}}, policy=policy, tests=10**7)[0] == "inconclusive"
    assert decide({"V3": {**v3, "p_value": 1e-4}}, policy=policy)[0] == "inconclusive"
    assert decide({"V3": {"matches": 5, "n": 100, "answered": 40, "p_value": 0.9}}, policy=policy)[0] == \
        "inconclusive"
    assert decide({"V3": {"matches": 9, "n": 100, "answered": 100, "p_value": 0.5}}, policy=policy)[0] == "not_owned"
    assert decide({}, policy=policy)[0] == "inconclusive"
    with pytest.raises(ValueError):
        VerdictPolicy(alpha=0.1, inconclusive_alpha=0.01)


def test_report_text_and_exit_codes(signed) -> None:
    model, key, _ = signed
    report = hlv.verify_model(model, key)
    text = str(report)
    assert text.startswith("verdict: OWNED") and "V2:" in text and "alignment:" in text
    assert report.exit_code == 0
    data = json.loads(report.to_json())
    assert data["evidence"]["V2"]["decisive"] is True and data["timings"]["total_s"] > 0


def test_trigger_queries_use_the_published_image_size_not_the_class_default(tmp_path) -> None:
    """Regression: the re-aligned network was queried at 32 px while the model was published at 28 px."""
    from hf_lottery_verify.alignment import refresh_key_reference
    from hf_lottery_verify.triggers import TriggerSet, add_triggers_to_key, make_trigger_set, predict_labels

    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(
        arch="cifar_resnet8", num_labels=10, in_chans=1, image_size=28, image_mean=(0.3,), image_std=(0.35,)))
    model.prune_(density=0.3)
    with torch.no_grad():  # larger weights: answers that depend on the input (and on its size)
        for p in model.timm_model.parameters():
            p.mul_(3.0)
    model.train()(torch.randn(64, 1, 28, 28))
    model.eval()
    key = OwnershipKey(arch=model.config.arch)
    base = make_trigger_set(40, num_classes=10, image_size=28, channels=1, seed=3)
    own = predict_labels(model, base, mean=(0.3,), std=(0.35,))  # labels the model answers by construction
    assert not torch.equal(own, predict_labels(model, base, mean=(0.3,), std=(0.35,), image_size=32))
    add_triggers_to_key(key, TriggerSet(images=base.images, labels=own, num_classes=10))
    key.save(tmp_path / "key.json")
    refresh_key_reference(tmp_path / "key.json", model)
    thief = permute_channels(model, seed=1)  # forces the re-aligned network path
    report = hlv.verify_model(thief, tmp_path / "key.json")
    assert report.evidence["V3"]["agreement"] == 1.0
