from __future__ import annotations

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


def test_epoch_checkpoints_resume_bit_exactly(tmp_path) -> None:
    data = tiny_data(train_size=128, test_size=32)
    cfg = tiny_train_config(epochs=3)

    def run(ckpt, stop_after=None):
        torch.manual_seed(0)
        model = make_model(num_labels=4, density=0.5)
        trainer = Trainer(model, data.train, cfg, progress=False, checkpoint_dir=ckpt)

        def stop(epoch, _t):
            if epoch == stop_after:
                raise KeyboardInterrupt

        try:
            trainer.train(on_epoch_end=stop)
        except KeyboardInterrupt:
            return None
        finally:
            trainer.close()
        return model

    straight = run(None)
    assert run(tmp_path / "ckpt", stop_after=0) is None
    resumed = run(tmp_path / "ckpt")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


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
