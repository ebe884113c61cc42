"""The attack registry: names, metadata, run_attack, and the contract every attack keeps."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify.attacks import attack_folder, attack_table, get_attack, list_attacks, register_attack, run_attack
from hf_lottery_verify.attacks import registry as registry_module
from hf_lottery_verify.attacks.distill import DISTILL_TRAINING
from hf_lottery_verify.attacks.finetune import ATTACK_TRAINING
from hf_lottery_verify.errors import ConfigError, DatasetError, UnknownNameError

from .helpers import make_model, tiny_data

EXPECTED = {"prune", "addon", "finetune", "prune_finetune", "permute", "rescale", "dummy", "densify", "fake1", "fake2",
            "fake3", "locate_rewrite", "flood_dead", "remove_blocks", "mirror", "combined", "distill"}
# Keep the generic sweep cheap: the key-less search of locate_rewrite only tries QR version 1.
CHEAP = {"locate_rewrite": {"max_version": 1}, "finetune": {"train": replace(ATTACK_TRAINING, batch_size=64)},
         "prune_finetune": {"train": replace(ATTACK_TRAINING, batch_size=64)},
         "distill": {"train": replace(DISTILL_TRAINING, batch_size=64)}}


def _with_random_batch_norms(model: hlv.SparseResNetForImageClassification) -> hlv.SparseResNetForImageClassification:
    """timm zero-initialises each block's last batch norm; randomise them so every conv shapes the output."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                module.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def ticket() -> hlv.SparseResNetForImageClassification:
    return _with_random_batch_norms(make_model(num_labels=4, density=0.2))


@pytest.fixture(scope="module")
def data():
    return tiny_data(train_size=128, test_size=32)


def test_every_attack_is_registered_with_its_metadata() -> None:
    assert EXPECTED <= set(list_attacks())
    assert list_attacks() == sorted(list_attacks())
    assert set(list_attacks(kind="structural")) == {"permute", "rescale", "dummy", "densify", "mirror"}
    assert set(list_attacks(kind="forgery")) == {"fake1", "fake2", "fake3"}
    preserving = {n for n in list_attacks() if get_attack(n).function_preserving}
    assert preserving == {"permute", "rescale", "dummy", "flood_dead"}
    assert {n for n in list_attacks() if get_attack(n).needs_data} == {"finetune", "prune_finetune", "distill"}
    for name in list_attacks():
        spec = get_attack(name)
        assert spec.settings(), name
        if spec.strength is not None:
            assert spec.strength in spec.parameters() and spec.sweep
        for _variant, params in spec.settings():
            assert set(params) <= set(spec.parameters()), name
    table = attack_table()
    json.dumps(table)
    prune = next(row for row in table if row["name"] == "prune")
    assert {"fraction", "method", "scope", "layers", "stage"} <= set(prune["parameters"])
    assert prune["sweep"] == [0.05, 0.1, 0.2, 0.3, 0.5]


def test_unknown_names_parameters_and_missing_data_raise_typed_errors(ticket) -> None:
    with pytest.raises(UnknownNameError, match="Available: addon") as err:
        get_attack("erase_everything")
    assert "prune" in err.value.available
    with pytest.raises(UnknownNameError, match="fraction"):
        run_attack("prune", ticket, fractoin=0.2)
    with pytest.raises(DatasetError, match="needs data"):
        run_attack("finetune", ticket)
    with pytest.raises(TypeError, match="seed"):
        run_attack("prune", ticket, seed="1")
    with pytest.raises(ConfigError, match="takes a number"):  # e.g. --param fraction=abc
        run_attack("prune", ticket, fraction="abc")


def test_register_attack_decorator_lists_warns_on_overwrite_and_checks_the_signature(ticket) -> None:
    try:
        @register_attack("_identity_for_test", kind="structural", function_preserving=True)
        def identity(model, *, seed: int = 0):  # noqa: ANN001, ANN202
            import copy

            return copy.deepcopy(model)

        assert "_identity_for_test" in list_attacks()
        assert run_attack("_identity_for_test", ticket) is not ticket
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            register_attack("_identity_for_test", kind="structural")(identity)
        assert any("Overwriting" in str(w.message) for w in caught)
        with pytest.raises(ValueError, match="seed"):
            register_attack("_bad", kind="removal")(lambda model, *, x=1: model)
        with pytest.raises(ValueError, match="kind"):
            register_attack("_bad", kind="magic")
    finally:
        registry_module._ATTACKS.pop("_identity_for_test", None)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_attack_returns_a_new_model_and_leaves_its_input_untouched(name, ticket, data) -> None:
    spec = get_attack(name)
    before = {k: v.clone() for k, v in ticket.state_dict().items()}
    masks_before = {k: v.clone() for k, v in ticket.masks.items()}
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = ticket(x).logits
    attacked = run_attack(name, ticket, data=data if spec.accepts_data else None, seed=3, **CHEAP.get(name, {}))
    assert attacked is not ticket
    assert attacked.timm_model is not ticket.timm_model
    assert all(torch.equal(before[k], v) for k, v in ticket.state_dict().items())
    assert all(torch.equal(masks_before[k], v) for k, v in ticket.masks.items())
    attacked.eval()
    with torch.no_grad():
        out = attacked(x).logits
    if spec.function_preserving:
        assert torch.allclose(out, reference, atol=1e-4, rtol=0), (out - reference).abs().max()
    elif name != "densify":
        changed = any(not torch.equal(p, ticket.timm_parameters()[n]) for n, p in attacked.timm_parameters().items()
                      if n in ticket.timm_parameters() and p.shape == ticket.timm_parameters()[n].shape)
        assert changed, f"{name} changed no weight"
    # the attacked model's masks describe its own weights, as a re-saved checkpoint's would
    params = attacked.timm_parameters()
    for pname, mask in attacked.masks.items():
        assert torch.all(params[pname][~mask] == 0), (name, pname)


def test_run_attack_is_deterministic_for_a_seed(ticket) -> None:
    for name in ("prune", "addon", "fake1", "fake2", "dummy"):
        params = {"method": "random"} if name == "prune" else {}
        a = run_attack(name, ticket, seed=5, **params)
        b = run_attack(name, ticket, seed=5, **params)
        c = run_attack(name, ticket, seed=6, **params)
        assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items()), name
        assert any(not torch.equal(a.state_dict()[k], v) for k, v in c.state_dict().items()), name


def test_attack_folder_writes_a_loadable_folder_and_a_json_report(tmp_path, ticket) -> None:
    src = tmp_path / "stolen"
    ticket.save_pretrained(src)
    report = attack_folder("prune", src, tmp_path / "pruned", params={"fraction": 0.3, "stage": "layer2"}, seed=1)
    json.dumps(report)
    assert report["attack"] == "prune" and report["kind"] == "removal" and not report["widened"]
    assert report["density_after"] < report["density_before"]
    assert {"config.json", "model.safetensors", "attack.json"} <= set(report["files"])
    loaded = hlv.load_model(tmp_path / "pruned", masks="weights")
    assert loaded.ownership_claim is None
    assert abs(loaded.density - report["density_after"]) < 1e-9

    widened = attack_folder("dummy", src, tmp_path / "widened", params={"per_space": 2}, seed=1)
    assert widened["widened"] and {"config.json", "model.safetensors"} <= set(widened["files"])
    suspect = hlv.read_suspect(tmp_path / "widened")
    assert suspect.state_dict["fc.weight"].shape[1] > ticket.timm_model.fc.weight.shape[1]

    with pytest.raises(DatasetError):
        attack_folder("finetune", src, tmp_path / "ft", params={})


def test_attack_folder_fake3_saves_the_attackers_key_outside_the_folder(tmp_path) -> None:
    src = tmp_path / "stolen"
    make_model("cifar_resnet20", density=0.1).save_pretrained(src)
    report = attack_folder("fake3", src, tmp_path / "forged", params={"text": "mallory"}, seed=2,
                           key_out=tmp_path / "mallory.key.json")
    assert report["attacker_key"].endswith("mallory.key.json")
    key = hlv.OwnershipKey.load(tmp_path / "mallory.key.json")
    assert hlv.verify_model(tmp_path / "forged", key=key, require_anchor=False).verdict == "owned"
    with pytest.raises(hlv.KeyFileError):
        attack_folder("fake3", src, tmp_path / "forged2", params={}, key_out=tmp_path / "forged2" / "k.json")
