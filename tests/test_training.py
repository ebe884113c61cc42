from __future__ import annotations

import sys

import pytest
import torch

from hf_lottery_verify.data import ImageData
from hf_lottery_verify.training import MixInSamples, TrainConfig, Trainer, evaluate, lr_at, make_accelerator

from .helpers import launch_cpu_processes, make_model, tiny_data, tiny_train_config


def test_paper_multistep_schedule() -> None:
    cfg = TrainConfig()  # 182 epochs, x0.1 at 91 and 136
    steps = 391  # CIFAR-10 at batch 128
    total = cfg.epochs * steps
    assert lr_at(cfg, 0, total) == pytest.approx(0.1)
    assert lr_at(cfg, 90 * steps + 390, total) == pytest.approx(0.1)
    assert lr_at(cfg, 91 * steps, total) == pytest.approx(0.01)
    assert lr_at(cfg, 135 * steps + 390, total) == pytest.approx(0.01)
    assert lr_at(cfg, 136 * steps, total) == pytest.approx(0.001)


def test_onecycle_and_cosine_schedules() -> None:
    one = TrainConfig(schedule="onecycle", epochs=10, lr=0.4, warmup_fraction=0.25)
    lrs = [lr_at(one, s, 100) for s in range(100)]
    assert max(lrs) == pytest.approx(0.4, rel=0.05) and lrs.index(max(lrs)) in range(24, 27)
    assert lrs[0] < 0.05 and lrs[-1] < 0.01
    cos = TrainConfig(schedule="cosine", epochs=10, lr=1.0)
    assert lr_at(cos, 50, 100) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fractions"):
        TrainConfig(milestones=(91, 136))


def test_training_learns_and_keeps_masks_exact() -> None:
    data = tiny_data()
    model = make_model(num_labels=4, density=0.3)
    trainer = Trainer(model, data.train, tiny_train_config(epochs=4), test_data=data.test, progress=False)
    history = trainer.train()
    assert history[-1].test_accuracy > 60  # chance is 25%
    assert history[-1].test_count == len(data.test)
    for name, mask in model.masks.items():
        assert torch.all(model.timm_parameters()[name][~mask] == 0)
    # the mask hooks live only while training
    assert all(not p._backward_hooks for p in model.parameters())
    assert not trainer.optimizer.optimizer._optimizer_step_post_hooks


def test_bf16_autocast_runs_on_cpu() -> None:
    data = tiny_data(train_size=64, test_size=32)
    model = make_model(num_labels=4)
    trainer = Trainer(model, data.train, tiny_train_config(epochs=1, precision="bf16"), test_data=data.test,
                      progress=False)
    assert trainer.accelerator.mixed_precision == "bf16"
    assert trainer.train()[-1].test_count == 32


def test_mix_in_samples_appends_and_cycles() -> None:
    extra = ImageData(torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 4, 4).contiguous(),
                      torch.arange(5) + 10, 20, (0.0,), (1 / 255,))
    mixer = MixInSamples(extra, per_batch=2, seed=0)
    x, y = torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long)
    seen = []
    for step in range(5):  # 10 draws cycle twice through the 5 samples
        xs, ys = mixer(step, x, y)
        assert xs.shape == (5, 1, 4, 4) and torch.equal(ys[:3], y)
        assert torch.equal(xs[3:, 0, 0, 0], (ys[3:] - 10).float())
        seen += ys[3:].tolist()
    assert sorted(seen[:5]) == [10, 11, 12, 13, 14] and sorted(seen[5:]) == [10, 11, 12, 13, 14]
    again = [MixInSamples(extra, per_batch=2, seed=0)(s, x, y)[1][3:].tolist() for s in range(5)]
    assert sum(again, []) == seen


def _two_process_job(out_path: str) -> None:
    import json

    from accelerate import Accelerator

    data = tiny_data(train_size=96, test_size=37)  # 37 test samples: uneven shards
    acc = Accelerator(cpu=True)
    model = make_model(num_labels=4, density=0.4)
    trainer = Trainer(model, data.train, tiny_train_config(epochs=1, batch_size=16, eval_batch_size=8),
                      test_data=data.test, accelerator=acc, progress=False)
    history = trainer.train()
    metrics = trainer.evaluate()
    stray = sum(int((model.timm_parameters()[n][~m] != 0).sum()) for n, m in model.masks.items())
    if acc.is_main_process:
        with open(out_path, "w") as f:
            json.dump({"count": metrics["count"], "num_processes": acc.num_processes, "stray": stray,
                       "epoch_count": history[-1].test_count, "steps": trainer.steps_per_epoch}, f)


@pytest.mark.slow
def test_two_process_run_counts_every_test_sample_once(tmp_path) -> None:
    import json

    out = tmp_path / "result.json"
    launch_cpu_processes(_two_process_job, args=(str(out),), num_processes=2)
    result = json.loads(out.read_text())
    assert result["num_processes"] == 2
    assert result["count"] == 37 and result["epoch_count"] == 37
    assert result["steps"] == 96 // (16 * 2)
    assert result["stray"] == 0


def test_evaluate_standalone_counts_all() -> None:
    data = tiny_data(train_size=32, test_size=45)
    model = make_model(num_labels=4)
    metrics = evaluate(model, data.test, accelerator=make_accelerator(TrainConfig(epochs=1)), batch_size=16)
    assert metrics["count"] == 45 and 0 <= metrics["accuracy"] <= 100


def test_multistep_has_no_float_off_by_one() -> None:
    cfg = TrainConfig(epochs=47, milestones=(0.5,), lr=1.0, gamma=0.1)
    total = 47 * 10
    milestone_step = round(0.5 * 47) * 10  # epoch 24 (round half to even), step 240
    assert lr_at(cfg, milestone_step - 1, total) == 1.0
    assert lr_at(cfg, milestone_step, total) == pytest.approx(0.1)


# --------------------------------------------------------------------------- a loop that never waits on the host


def _steps(model, opt, n: int) -> None:
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    for _ in range(n):
        opt.zero_grad()
        model(x, labels=y).loss.backward()
        opt.step()


def _pruned_weights_move(model) -> bool:
    return any(bool(model.timm_parameters()[n].detach()[~m].ne(0).any()) for n, m in model.masks.items())


def test_mask_enforcer_keeps_pruned_weights_and_momentum_at_zero_until_removed() -> None:
    from hf_lottery_verify.training import MaskEnforcer

    model = make_model(density=0.2).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    enforcer = MaskEnforcer(model.timm_parameters(), model.masks)
    enforcer.attach(opt)
    assert enforcer.guard == "gradients"
    _steps(model, opt, 3)
    for name, mask in model.masks.items():
        w = model.timm_parameters()[name].detach()
        assert torch.all(w[~mask] == 0) and not torch.any(torch.signbit(w[~mask]))
        assert torch.all(opt.state[model.timm_parameters()[name]]["momentum_buffer"][~mask] == 0)
    enforcer.remove()
    assert enforcer.guard is None
    _steps(model, opt, 1)  # unguarded, the gradients reach the pruned weights again
    assert _pruned_weights_move(model)


class _MixingOptimizer(torch.optim.Optimizer):
    """An update that mixes entries (every entry moves by the tensor's mean gradient): not element-wise."""

    def __init__(self, params, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad + p.grad.abs().mean() + 0.01, alpha=-group["lr"])


def test_mask_enforcer_also_masks_weights_for_other_optimizers() -> None:
    from hf_lottery_verify.training import MaskEnforcer

    model = make_model(density=0.2).train()
    opt = _MixingOptimizer(model.parameters())
    enforcer = MaskEnforcer(model.timm_parameters(), model.masks)
    enforcer.attach(opt)
    assert enforcer.guard == "gradients+weights"
    before = {n: p.detach().clone() for n, p in model.timm_parameters().items()}
    _steps(model, opt, 3)
    for name, mask in model.masks.items():
        w = model.timm_parameters()[name].detach()
        assert torch.all(w[~mask] == 0) and not torch.any(torch.signbit(w[~mask])), name
        assert not torch.equal(w[mask], before[name][mask])
    enforcer.remove()
    _steps(model, opt, 1)
    assert _pruned_weights_move(model)


def test_mix_in_samples_order_is_per_cycle_and_built_once(monkeypatch) -> None:
    extra = ImageData(torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 4, 4).contiguous(),
                      torch.arange(5), 5, (0.0,), (1 / 255,))
    x, y = torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)
    real = MixInSamples.cycle_order
    built: list[int] = []
    monkeypatch.setattr(MixInSamples, "cycle_order", lambda self, c: (built.append(c), real(self, c))[1])
    for per_batch in (2, 7):  # 7 > 5 samples: one batch spans more than two cycles
        mixer = MixInSamples(extra, per_batch=per_batch, seed=4)
        built.clear()
        got = [mixer(step, x, y)[1][2:] for step in range(300)]
        perms = {}
        for step, labels in enumerate(got):
            expect = []
            for q in range(step * per_batch, (step + 1) * per_batch):
                cycle, pos = divmod(q, 5)
                perms.setdefault(cycle, real(mixer, cycle))
                expect.append(int(perms[cycle][pos]))
            assert labels.tolist() == expect, step
        assert built == sorted(set(built))  # every cycle's permutation made once, ahead of its steps
    with pytest.raises(ValueError, match="per_batch"):
        MixInSamples(extra, per_batch=0)


def test_mixed_samples_are_normalised_like_the_batches() -> None:
    from hf_lottery_verify.data import normalize

    data = tiny_data(train_size=16, test_size=8)
    mixer = MixInSamples(data.test, per_batch=3, seed=1)
    x, y = torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    xs, ys = mixer(0, x, y)
    taken = [int(i) for i in mixer.cycle_order(0)[:3]]
    assert torch.equal(xs[2:], normalize(data.test.images[taken], data.test.mean, data.test.std))
    assert torch.equal(ys[2:], data.test.labels[taken])


def test_evaluate_reads_the_split_on_the_device_and_matches_one_big_batch() -> None:
    import torch.nn.functional as F

    from hf_lottery_verify.data import DeviceData, normalize, normalized_for

    data = tiny_data(train_size=16, test_size=45)
    model = make_model(num_labels=4).train()
    on_device = DeviceData(data.test, "cpu")
    direct = evaluate(model, on_device, batch_size=16)
    assert model.training  # the mode is restored
    split = normalized_for(data.test, model)  # the model reads its inputs as its config says
    with torch.no_grad():
        logits = model.eval()(normalize(split.images, split.mean, split.std)).logits
    model.train()
    correct = int((logits.argmax(1) == data.test.labels).sum())
    assert direct["count"] == 45 and direct["accuracy"] == pytest.approx(100.0 * correct / 45)
    assert direct["loss"] == pytest.approx(float(F.cross_entropy(logits, data.test.labels)), rel=1e-6)
    assert evaluate(model, data.test, batch_size=7) == pytest.approx(direct)


def test_reset_trainer_equals_a_new_trainer() -> None:
    data = tiny_data(train_size=128, test_size=32)
    cfg = tiny_train_config(epochs=2)
    start = make_model(num_labels=4, density=0.5)
    other_masks = make_model(num_labels=4, density=0.3, seed=1).masks
    init = {k: v.clone() for k, v in start.state_dict().items()}

    fresh_model = make_model(num_labels=4, density=0.5)
    fresh_model.set_masks(other_masks)
    fresh = Trainer(fresh_model, data.train, TrainConfig(**{**cfg.to_dict(), "seed": 7}), test_data=data.test,
                    progress=False)
    fresh.train()

    reused = Trainer(start, data.train, cfg, test_data=data.test, progress=False)
    reused.train()  # a first run moves weights and fills momentum buffers
    start.load_state_dict(init, strict=True)
    start.set_masks(other_masks)
    reused.reset(seed=7)
    assert reused.history == [] and not reused.optimizer.state
    reused.train()
    assert [(r.train_loss, r.test_accuracy) for r in reused.history] == [
        (r.train_loss, r.test_accuracy) for r in fresh.history]
    for (k, a), b in zip(fresh_model.state_dict().items(), start.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_training_context_compiles_and_uploads_once(monkeypatch) -> None:
    from hf_lottery_verify import data as data_module
    from hf_lottery_verify.training import TrainingContext

    compiled, uploads = [], []
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: (compiled.append(module), module)[1])
    real_init = data_module.DeviceData.__init__
    monkeypatch.setattr(data_module.DeviceData, "__init__",
                        lambda self, d, device="cpu": (uploads.append(d), real_init(self, d, device))[1])
    data = tiny_data(train_size=64, test_size=16)
    model = make_model(num_labels=4, density=0.5)
    cfg = tiny_train_config(epochs=1, compile=True)
    context = TrainingContext()
    acc = make_accelerator(cfg)
    trainers = []
    for seed in (1, 2, 3):
        trainer = context.trainer(model, data.train, TrainConfig(**{**cfg.to_dict(), "seed": seed}),
                                  test_data=data.test, accelerator=acc, progress=False)
        trainer.train()
        assert trainer.config.seed == seed and trainer.batches.seed == seed
        trainers.append(trainer)
    assert trainers[0] is trainers[1] is trainers[2]
    assert len(compiled) == 1 and len(uploads) == 2  # the train and the test split
    other = context.trainer(model, data.train, tiny_train_config(epochs=2, compile=True), test_data=data.test,
                            accelerator=acc, progress=False)  # another schedule: a new trainer, same uploads
    assert other is not trainers[0] and len(compiled) == 2 and len(uploads) == 2
    copy_a = context.working_copy(model)
    copy_b = context.working_copy(make_model(num_labels=4, seed=5))
    assert copy_a is copy_b and copy_b is not model and not copy_b.masks
    context.close()


def test_no_host_constants_or_copies_inside_an_epoch(monkeypatch) -> None:
    from hf_lottery_verify.data import DeviceBatches

    data = tiny_data(train_size=64, test_size=8)
    batches = DeviceBatches(data.train, 8, seed=0)
    next(iter(batches.epoch(0)))  # the normalisation constants are built on first use
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: (made.append(a), real(*a, **k))[1])
    assert len(list(batches.epoch(1))) == 8
    assert made == []


def test_progress_is_one_bar_on_a_terminal_and_nothing_in_a_log(monkeypatch) -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    data = tiny_data(train_size=64, test_size=8)
    for stream, progress, shown in ((Terminal(), True, True), (io.StringIO(), True, False), (Terminal(), False, False)):
        monkeypatch.setattr(sys, "stderr", stream)
        Trainer(make_model(num_labels=4), data.train, tiny_train_config(epochs=2), progress=progress, desc="demo").train()
        text = stream.getvalue()
        assert ("demo epoch 1/2" in text and "demo epoch 2/2" in text and "batch" in text) == shown, text
        assert shown or text == ""


def test_make_accelerator_keeps_the_first_precision_of_the_process(caplog) -> None:
    first = make_accelerator(TrainConfig(precision="bf16"))
    with caplog.at_level("WARNING", logger="hf_lottery_verify.training"):
        second = make_accelerator(TrainConfig(precision="fp32"))
    assert first.mixed_precision == second.mixed_precision == "bf16"
    assert "keeping it" in caplog.text
