"""verify_model: the verdict survives function-preserving structural attacks and never trusts the suspect.

These tests check the evidence, so they verify with ``require_anchor=False`` (an owner's check of
a model before publishing); tests/test_claims.py checks the anchoring rule on a local Hub.
"""

from __future__ import annotations

import json

import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.attacks.structural import add_dummy_channels, densify, permute_channels, rescale_channels
from hf_lottery_verify.ownership_key import OwnershipKey
from hf_lottery_verify.publishing import publish_folder
from hf_lottery_verify.signature import embed_signature
from hf_lottery_verify.symmetry import DIHEDRAL
from hf_lottery_verify.verify import VerdictPolicy, decide

from .helpers import make_model

TEXT = "alice 2026"


def check(suspect, key, **kwargs):
    return hlv.verify_model(suspect, key=key, require_anchor=False, **kwargs)


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    model = make_model("cifar_resnet20", density=0.1)
    # give BatchNorm non-trivial statistics, as a trained model has
    model.train()(torch.randn(64, 3, 32, 32))
    model.eval()
    key = embed_signature(model, TEXT, key=OwnershipKey(arch="cifar_resnet20", secret="b2" * 32))  # fixed secret:
    key.save(root / "key.json")  # the null p-values below are deterministic
    publish_folder(model, root / "pub", repo_id="alice/r20", key=root / "key.json", owner="alice")
    return hlv.load_model(root / "pub"), root / "key.json", root


def test_the_signed_model_and_its_folder_are_owned(signed) -> None:
    model, key, root = signed
    for suspect in (model, root / "pub", root / "pub" / "model.safetensors", model.timm_model.state_dict()):
        report = check(suspect, key)
        assert report.verdict == "owned", (suspect, report.reasons)
        assert report.reasons[0].startswith("unanchored check")
    assert report.alignment is not None and report.alignment["confidence"] > 0.9
    assert report.key["commitment"] == OwnershipKey.load(key).commitment()
    assert OwnershipKey.load(key).secret not in report.to_json()


def test_without_an_anchor_matching_evidence_is_inconclusive(signed) -> None:
    model, key, _ = signed
    report = hlv.verify_model(model, key=key)
    assert report.verdict == "inconclusive" and report.signature.matches
    assert "no anchor" in report.reasons[0]


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
    report = check(stolen, key)
    assert report.verdict == "owned", report.reasons
    assert report.alignment["confidence"] > 0.5


def test_a_widened_copy_saved_by_a_thief_is_owned(signed, tmp_path) -> None:
    from safetensors.torch import save_file

    model, key, _ = signed
    stolen = permute_channels(add_dummy_channels(model, seed=11), seed=12)
    tmp_path.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in stolen.timm_model.state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "cifar_resnet20", "num_classes": 10}))
    report = hlv.verify_hub_model(tmp_path, key=key, require_anchor=False)
    assert report.verdict == "owned", report.reasons
    assert report.alignment["widened"] and report.alignment["permuted"]


def test_an_unrelated_model_is_not_owned_and_aligns_poorly(signed) -> None:
    _, key, _ = signed
    other = make_model("cifar_resnet20", density=0.1, seed=3)
    report = check(other, key)
    assert report.verdict == "not_owned", report.reasons
    assert report.alignment["confidence"] < 0.5
    assert any("probably not a copy" in n for n in report.notes)
    # the alignment searched channel orders for the best match: on a model that is no copy its
    # p-value is not evidence, so the report takes the suspect's own order when that is larger
    ev = report.signature
    assert ev.own_order_p_value is not None and ev.p_value >= ev.own_order_p_value


def test_a_damaged_permuted_copy_keeps_its_aligned_evidence(signed) -> None:
    model, key, _ = signed
    from hf_lottery_verify.attacks import prune_attack

    copy = prune_attack(permute_channels(model, seed=1), fraction=0.3)
    report = check(copy, key)
    assert report.alignment["confidence"] >= 0.5 and report.signature.own_order_p_value is None
    assert report.signature.p_value < 1e-6, report.signature


def test_another_architecture_is_a_typed_error(signed) -> None:
    _, key, _ = signed
    with pytest.raises(hlv.KeyMismatchError, match="not a cifar_resnet20"):
        check(make_model("cifar_resnet8", density=0.1), key)


def _sig(matches: bool, p: float) -> hlv.SignatureEvidence:
    return hlv.SignatureEvidence(text="x" if matches else None, matches=matches, bit_agreement=0.9, p_value=p)


def _trig(matches: int, p: float, answered: int = 100):
    from hf_lottery_verify.triggers import TriggerEvidence

    return TriggerEvidence(n=100, queried=100, answered=answered, matches=matches, agreement=matches / 100,
                           p_value=p, num_classes=10, alpha=1e-12, threshold=37, positive=p <= 1e-12)


def test_decision_rule() -> None:
    def verdict(**kwargs):
        return decide(require_anchor=False, **kwargs)[0]

    assert verdict(signature=_sig(True, 1e-40)) == "owned"
    assert verdict(signature=_sig(False, 1e-20)) == "inconclusive"
    assert verdict(signature=_sig(False, 0.4)) == "not_owned"
    assert verdict(triggers=_trig(40, 1e-13)) == "owned"
    assert verdict(triggers=_trig(40, 1e-13), tests=10**7) == "inconclusive"
    assert verdict(triggers=_trig(30, 1e-8)) == "inconclusive"  # was owned at 1e-6: grinding takes ~10^8 tries
    assert verdict(triggers=_trig(5, 0.9, answered=40)) == "inconclusive"
    assert verdict(triggers=_trig(9, 0.5)) == "not_owned"
    assert verdict(errors={"V2": "unreadable"}) == "inconclusive"
    assert verdict() == "inconclusive"
    assert decide(signature=_sig(True, 1e-40))[0] == "inconclusive"  # no anchor
    with pytest.raises(ValueError):
        VerdictPolicy(alpha=0.1, inconclusive_alpha=0.01)


def test_report_text_and_exit_codes(signed) -> None:
    model, key, _ = signed
    report = check(model, key)
    text = str(report)
    assert text.startswith("verdict: OWNED") and "V2:" in text and "alignment:" in text
    assert report.exit_code == 0
    data = json.loads(report.to_json())
    assert data["signature"]["matches"] is True and data["timings"]["total_s"] > 0


def test_trigger_queries_use_the_published_image_size_not_the_class_default(tmp_path) -> None:
    """Regression: the re-aligned network was queried at 32 px while the model was published at 28 px."""
    from hf_lottery_verify.alignment import with_reference
    from hf_lottery_verify.data import normalize
    from hf_lottery_verify.triggers import add_triggers, predict_labels, triggers_from_key

    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(
        arch="cifar_resnet8", num_labels=10, in_chans=1, image_size=28, image_mean=(0.3,), image_std=(0.35,)))
    model.prune_(density=0.3)
    key = add_triggers(OwnershipKey(arch="cifar_resnet8", secret="c3" * 32), num_classes=10, n=40, image_size=28,
                       channels=1)
    triggers = triggers_from_key(key)
    x = normalize(triggers.images, (0.3,), (0.35,))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(150):  # learn the trigger labels at 28 px (masks kept)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x).logits, triggers.labels).backward()
        opt.step()
        model.set_masks(model.masks)
    model.eval()
    own = predict_labels(model, triggers, mean=(0.3,), std=(0.35,))
    assert (own == triggers.labels).float().mean() > 0.9
    assert not torch.equal(own, predict_labels(model, triggers, mean=(0.3,), std=(0.35,), image_size=32))
    with_reference(key, model).save(tmp_path / "key.json")
    thief = permute_channels(model, seed=1)  # forces the re-aligned network path
    report = check(thief, tmp_path / "key.json")
    assert report.triggers.agreement > 0.9


@pytest.mark.parametrize("served", ["identity", "flip_lr", "rot90"])
def test_a_black_box_serving_turned_kernels_answers_the_turned_trigger_set(served: str) -> None:
    """A thief's copy with every kernel turned by g answers g(T) as the owner's answers T: V3 asks all 8
    orientations (until one is decisive) and counts them in the threshold."""
    from hf_lottery_verify.symmetry import dihedral
    from hf_lottery_verify.triggers import add_triggers, triggers_from_key

    key = add_triggers(OwnershipKey(arch="cifar_resnet8", secret="c4" * 32), num_classes=10, n=40, image_size=28,
                       channels=1)
    triggers = triggers_from_key(key)
    expected = dihedral(triggers.images, served)
    calls = []

    def thief(images: torch.Tensor) -> list[int]:
        calls.append(len(images))
        hit = [next((j for j in range(len(expected)) if torch.equal(img, expected[j])), None) for img in images]
        return [int(triggers.labels[j]) if j is not None else (int(triggers.labels[i]) + 1) % 10
                for i, j in enumerate(hit)]

    report = hlv.verify_model(thief, key=key, require_anchor=False)
    assert report.verdict == "owned" and report.tests == 8, report.reasons
    assert report.triggers.transform == served and report.triggers.matches == 40
    assert report.triggers.alpha == pytest.approx(1e-12 / 8)
    assert len(calls) == 1 + DIHEDRAL.index(served)  # stops at the first decisive orientation
    assert (served != "identity") == ("images " + served in str(report))
