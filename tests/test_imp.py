from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hf_lottery_verify as hlv
from hf_lottery_verify import training
from hf_lottery_verify.imp import IMPConfig, find_extreme_ticket, schedule_step

from .helpers import launch_cpu_processes, named_dataset, tiny_data, tiny_train_config


def _config(**overrides) -> IMPConfig:
    base = dict(train=tiny_train_config(epochs=3), rewind_epoch=1, ratios=(0.5, 0.2), epsilon=5.0)
    base.update(overrides)
    return IMPConfig(**base)


def test_schedule_accepts_reverts_and_stops_at_the_extreme_ticket() -> None:
    """Scripted accuracies drive the ratio schedule through every branch."""
    ratios = (0.2, 0.1, 0.05, 0.01)
    script = iter([89.5, 89.2,  # 0.2 twice: accepted
                   88.0,  # 0.2 fails -> 0.1
                   89.1,  # 0.1 accepted
                   88.5,  # 0.1 fails -> 0.05
                   89.0,  # 0.05 accepted
                   88.9,  # 0.05 fails -> 0.01
                   88.95])  # 0.01 fails -> done
    index, tried, accepted = 0, [], []
    while index < len(ratios):
        tried.append(ratios[index])
        ok, index = schedule_step(index, gap=90.0 - next(script), epsilon=1.0)
        accepted.append(ok)
    assert tried == [0.2, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05, 0.01]
    assert accepted == [True, True, False, True, False, True, False, False]
    assert schedule_step(2, gap=1.0, epsilon=1.0) == (True, 2)  # a gap of exactly epsilon is accepted


def test_real_search_on_tiny_data_and_output_folder(tmp_path: Path) -> None:
    result = find_extreme_ticket("cifar_resnet8", tiny_data(), out_dir=tmp_path, config=_config(max_rounds=3),
                                 progress=False)
    assert result.dense_accuracy > 60
    assert {p.name for p in tmp_path.iterdir()} >= {"ticket", "rewind", "rounds.json", "state.json", "work"}
    ticket = hlv.load_model(result.ticket_dir)
    rewind = hlv.load_model(result.rewind_dir)
    assert ticket.density == pytest.approx(result.ticket_density, abs=1e-6)
    assert ticket.config.num_labels == 4
    for name, mask in ticket.masks.items():  # pruned weights exactly zero, rewind is dense
        assert torch.all(ticket.timm_parameters()[name][~mask] == 0)
    assert rewind.density == 1.0 or rewind.density > 0.99
    rounds = [r for r in result.rounds if r.kind == "prune"]
    assert len(rounds) == 3 and all(r.test_count == 100 for r in result.rounds)
    assert all(r.gap == pytest.approx(result.dense_accuracy - r.accuracy) for r in rounds)
    assert json.loads((tmp_path / "rounds.json").read_text()) == [r.__dict__ for r in result.rounds]
    # densities follow the schedule: each accepted round removes `ratio` of what was kept
    kept = 1.0
    for r in rounds:
        assert r.density == pytest.approx(kept * (1 - r.ratio), abs=1e-3)
        if r.accepted:
            kept = r.density


@pytest.mark.slow
def test_ticket_and_retrained_configs_carry_the_data_statistics_and_class_names(tmp_path: Path) -> None:
    """The README workflow without manual patches: find, sign, retrain, save — the config says how to read inputs."""
    from hf_lottery_verify.data import load_image_dataset
    from hf_lottery_verify.imp import load_rewind
    from hf_lottery_verify.retrain import retrain

    data = load_image_dataset(named_dataset(), seed=0)
    found = find_extreme_ticket("cifar_resnet8_a", data, out_dir=tmp_path / "run", config=_config(max_rounds=1),
                                progress=False)
    ticket, rewind = hlv.load_model(found.ticket_dir), load_rewind(tmp_path / "run")
    for config in (ticket.config, rewind.config):
        assert (config.image_mean, config.image_std) == (data.train.mean, data.train.std)
        assert config.image_size == 8 and config.in_chans == 1
        assert [config.id2label[i] for i in range(4)] == ["sock", "boot", "hat", "scarf"]
    key = hlv.embed_signature(ticket, "hlv", rewind=rewind, layers="all")
    result = retrain(ticket, rewind=rewind, data=data, config=_config().train, rewind_epoch=1, key=key, progress=False)
    result.model.save_pretrained(tmp_path / "final")
    final = hlv.load_model(tmp_path / "final").config
    assert (final.image_mean, final.image_std, final.image_size) == (data.train.mean, data.train.std, 8)
    assert final.label2id == {"sock": 0, "boot": 1, "hat": 2, "scarf": 3}


def test_interrupted_search_resumes_to_the_same_ticket(tmp_path: Path, monkeypatch) -> None:
    data = tiny_data()
    cfg = _config(max_rounds=3)
    straight = find_extreme_ticket("cifar_resnet8", data, out_dir=tmp_path / "a", config=cfg, progress=False)

    original = training.Trainer.train
    calls = {"n": 0}

    def killed_in_round_2(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the dense run, round 1, then round 2
            raise KeyboardInterrupt
        return original(self, **kwargs)

    monkeypatch.setattr(training.Trainer, "train", killed_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        find_extreme_ticket("cifar_resnet8", data, out_dir=tmp_path / "b", config=cfg, progress=False)
    assert len(json.loads((tmp_path / "b" / "rounds.json").read_text())) == 2  # dense + round 1
    monkeypatch.setattr(training.Trainer, "train", original)
    resumed = find_extreme_ticket("cifar_resnet8", data, out_dir=tmp_path / "b", config=cfg, progress=False)

    assert [(r.ratio, r.accepted, r.accuracy) for r in resumed.rounds] == [
        (r.ratio, r.accepted, r.accuracy) for r in straight.rounds]
    a, b = hlv.load_model(straight.ticket_dir), hlv.load_model(resumed.ticket_dir)
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_max_rounds_extends_but_other_settings_refuse(tmp_path: Path) -> None:
    data = tiny_data()
    find_extreme_ticket("cifar_resnet8", data, out_dir=tmp_path, config=_config(max_rounds=1), progress=False)
    longer = find_extreme_ticket("cifar_resnet8", data, out_dir=tmp_path, config=_config(max_rounds=2),
                                 progress=False)
    assert len([r for r in longer.rounds if r.kind == "prune"]) == 2
    with pytest.raises(hlv.TrainingError, match="different settings"):
        find_extreme_ticket("cifar_resnet8", data, out_dir=tmp_path, config=_config(epsilon=0.5), progress=False)


def test_impossible_epsilon_reverts_everything(tmp_path: Path) -> None:
    result = find_extreme_ticket("cifar_resnet8", tiny_data(), out_dir=tmp_path,
                                 config=_config(epsilon=-100.0, ratios=(0.5, 0.2)), progress=False)
    assert result.finished and result.ticket_density == 1.0
    assert [r.accepted for r in result.rounds] == [True, False, False]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="ratios"):
        IMPConfig(ratios=(0.2, 1.5))
    with pytest.raises(ValueError, match="rewind_epoch"):
        IMPConfig(train=tiny_train_config(epochs=3), rewind_epoch=3)


def _two_process_imp(out_dir: str) -> None:
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    cfg = _config(max_rounds=1, epsilon=20.0,  # about the processes, not the accuracy: accept the round
                  train=tiny_train_config(epochs=2, batch_size=16, eval_batch_size=16))
    find_extreme_ticket("cifar_resnet8", tiny_data(test_size=37), out_dir=out_dir, config=cfg, accelerator=acc,
                        progress=False)


@pytest.mark.slow
def test_two_process_search(tmp_path: Path) -> None:
    launch_cpu_processes(_two_process_imp, args=(str(tmp_path),), num_processes=2)
    rounds = json.loads((tmp_path / "rounds.json").read_text())
    assert [r["kind"] for r in rounds] == ["dense", "prune"]
    assert all(r["test_count"] == 37 for r in rounds)  # every test sample counted once
    assert hlv.load_model(tmp_path / "ticket").density == pytest.approx(0.5, abs=1e-3)


def test_resume_refuses_other_data_or_architecture(tmp_path: Path) -> None:
    find_extreme_ticket("cifar_resnet8", tiny_data(), out_dir=tmp_path, config=_config(max_rounds=1), progress=False)
    with pytest.raises(hlv.TrainingError, match="train_size"):
        find_extreme_ticket("cifar_resnet8", tiny_data(train_size=256), out_dir=tmp_path,
                            config=_config(max_rounds=1), progress=False)
    with pytest.raises(hlv.TrainingError, match="arch"):
        find_extreme_ticket("cifar_resnet20", tiny_data(), out_dir=tmp_path, config=_config(max_rounds=1),
                            progress=False)


def test_search_prepares_compiles_and_uploads_once_and_leaves_global_rng_alone(tmp_path: Path, monkeypatch) -> None:
    from hf_lottery_verify import data as data_module

    compiled, uploads, prepared = [], [], []
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: (compiled.append(module), module)[1])
    real_init = data_module.DeviceData.__init__
    monkeypatch.setattr(data_module.DeviceData, "__init__",
                        lambda self, d, device="cpu": (uploads.append(d), real_init(self, d, device))[1])
    real_trainer_init = training.Trainer.__init__
    monkeypatch.setattr(training.Trainer, "__init__",
                        lambda self, *a, **k: (prepared.append(1), real_trainer_init(self, *a, **k))[1])
    cfg = _config(max_rounds=2, train=tiny_train_config(epochs=3, compile=True))
    rng = torch.get_rng_state()
    result = find_extreme_ticket("cifar_resnet8", tiny_data(), out_dir=tmp_path, config=cfg, progress=False)
    assert len(result.rounds) == 3  # dense and two pruning rounds ...
    assert len(prepared) == 1 and len(compiled) == 1  # ... with one trainer and one compiled forward
    assert len(uploads) == 2  # the train and the test split, once each
    assert torch.equal(torch.get_rng_state(), rng)  # the library seeds no global generator
