"""Calibration of the verdict against null models: no false 'owned', exact bounds, the alpha check."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.calibration import (
    NULL_KINDS,
    NULL_TRAINING,
    _split_counts,
    calibrate,
    calibrate_key_file,
    clopper_pearson_upper,
    make_null_model,
)
from hf_lottery_verify.errors import DatasetError, UnknownNameError
from hf_lottery_verify.signature import embed_signature

from .helpers import make_model, tiny_data

SECRET = bytes(range(100, 132)).hex()


def check(model, key):
    return hlv.verify_model(model, key=key, require_anchor=False)


@pytest.fixture(scope="module")
def signed():
    model = make_model(num_labels=4, density=0.1, seed=11)
    key = embed_signature(model, "alice 2026", key=hlv.OwnershipKey(arch="cifar_resnet8", secret=SECRET), seed=0)
    return model, key


def test_clopper_pearson_upper_bound_is_exact() -> None:
    assert math.isclose(clopper_pearson_upper(0, 50), 1 - 0.05 ** (1 / 50), rel_tol=1e-9)
    assert math.isclose(clopper_pearson_upper(0, 100), 1 - 0.05 ** (1 / 100), rel_tol=1e-9)
    assert clopper_pearson_upper(50, 50) == 1.0 and clopper_pearson_upper(0, 0) == 1.0
    assert clopper_pearson_upper(1, 50) > clopper_pearson_upper(0, 50)


def test_null_counts_split_and_null_models_match_the_keys_density(signed) -> None:
    assert _split_counts(50, NULL_KINDS) == {"init": 15, "pruned": 20, "trained": 5, "signed_other": 10}
    assert sum(_split_counts(7, ("init", "pruned", "signed_other")).values()) == 7
    assert min(_split_counts(4, NULL_KINDS).values()) == 1
    model, key = signed
    pruned = make_null_model(key, "pruned", seed=1, num_labels=4)
    assert all(int(pruned.masks[n].sum()) == int(m.sum()) for n, m in model.masks.items())
    assert not any(torch.equal(pruned.masks[n], m) for n, m in model.masks.items() if m.any() and not m.all())
    assert make_null_model(key, "init", seed=1).masks == {}
    other = make_null_model(key, "signed_other", seed=1, num_labels=4)
    assert check(other, key).verdict == "not_owned"
    with pytest.raises(UnknownNameError, match="signed_other"):
        make_null_model(key, "lucky", seed=0)
    with pytest.raises(DatasetError):
        make_null_model(key, "trained", seed=0)


@pytest.mark.slow
def test_fifty_null_models_give_no_false_owned(signed) -> None:
    """Acceptance criterion: no null model of the key's architecture and density verifies as owned."""
    model, key = signed
    counts = {"init": 20, "pruned": 22, "trained": 3, "signed_other": 5}
    report = calibrate(key=key, counts=counts, data=tiny_data(train_size=128, test_size=16), seed=0,
                       train=replace(NULL_TRAINING, epochs=1, batch_size=64))
    assert report.n == 50 and report.counts == counts
    assert report.false_owned == 0, [r for r in report.results if r.verdict == "owned"]
    assert report.false_owned_rate == 0.0
    assert math.isclose(report.upper_95, clopper_pearson_upper(0, 50))
    assert sum(v["n"] for v in report.by_kind.values()) == 50
    dist = report.distributions["all"]
    assert dist["v2_p_value"]["count"] == 50 and dist["v2_p_value"]["min"] > report.policy["alpha"]
    assert 0.3 < dist["v2_bit_agreement"]["q50"] < 0.7 and dist["v2_bit_agreement"]["max"] < 0.8
    assert {"init", "pruned", "trained", "signed_other"} <= set(report.distributions)
    assert report.thresholds["ok"] and report.thresholds["tests_performed"] == [8]  # V3 asks 8 orientations
    assert all(r.v2_text is None for r in report.results)
    text = json.dumps(report.to_dict())
    assert "upper_95" in text and "NaN" not in text
    assert "false 'owned'" in str(report)
    assert check(model, key).verdict == "owned"  # the key itself works


def test_trigger_p_values_and_the_alpha_check() -> None:
    from hf_lottery_verify.triggers import add_triggers

    key = embed_signature(make_model(num_labels=4, density=0.1, seed=12), "bob 2026",
                          key=hlv.OwnershipKey(arch="cifar_resnet8", secret=SECRET), seed=1)
    key = add_triggers(key, num_classes=4, n=100, image_size=8, channels=3)
    policy = hlv.VerdictPolicy(alpha=1e-4, inconclusive_alpha=1e-2)
    report = calibrate(key=key, counts={"init": 2, "pruned": 2}, seed=1, policy=policy)
    assert report.false_owned == 0
    v3 = report.distributions["all"]["v3_p_value"]
    assert v3["count"] == 4 and v3["min"] > 1e-4
    check = report.thresholds
    assert check["ok"] and check["v3_level_is_alpha_over_tests"] and check["v3_decisions_follow_level"]
    assert check["v3_level"] == pytest.approx(1e-4 / 8) and check["v3_margin_log10"] > 0  # 8 orientations
    assert all(r.v3_alpha == pytest.approx(1e-4 / 8) for r in report.results)


def test_calibrate_key_file_returns_json_and_skips_trained_without_data(signed, tmp_path) -> None:
    _model, key = signed
    path = key.save(tmp_path / "owner.key.json")
    out = calibrate_key_file(path, n=4, seed=2)
    json.dumps(out)
    assert out["n"] == 4 and out["false_owned"] == 0 and "trained" not in out["counts"]
    assert any("trained" in note for note in out["notes"])
    assert out["key_path"] == str(path)
    with pytest.raises(UnknownNameError):
        calibrate(key=key, n=3, kinds=("init", "lucky"))
    with pytest.raises(DatasetError):
        calibrate(key=key, counts={"trained": 1})


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "in_chans"), [("cifar_resnet8_a", 1), ("cifar_resnet8", 3)])
def test_the_readme_calibrate_line_runs_on_the_workflows_keys(arch, in_chans, tmp_path, capsys) -> None:
    """README: ``hf-lottery calibrate --key keys/alice.json --n 50`` on the key of a published 1-channel option-A
    (Fashion-MNIST) or 3-channel option-B ticket; one null model per default kind keeps it short."""
    from hf_lottery_verify.cli import main
    from hf_lottery_verify.publishing import publish_folder

    model = make_model(arch, in_chans=in_chans, density=0.2)
    model.config.image_size = 28 if in_chans == 1 else 32
    path = embed_signature(model, "alice 2026", layers="all", seed=0).save(tmp_path / "alice.json")
    publish_folder(model, tmp_path / "published", repo_id="alice/r20-fmnist", key=path)  # the key gains the reference
    assert main(["calibrate", "--key", str(path), "--n", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 3 and out["false_owned"] == 0 and sorted(out["counts"]) == ["init", "pruned", "signed_other"]
