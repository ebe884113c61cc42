"""Finding extreme tickets: iterative magnitude pruning (IMP) with late rewinding.

Section 4.1 of the paper: train the dense network, keep the weights of an early epoch
``k`` (late rewinding), then repeat rounds of *train → global magnitude prune → rewind
to W_k*. Each round also prunes the kept weights that can no longer influence the output
(:func:`~hf_lottery_verify.liveness.prune_dead`: rows whose channel nothing reads after
pruning, columns that read only zero channels): density the ticket would not use. A round whose accuracy falls more than ``ε`` below the dense accuracy is
reverted and the search continues with the next smaller pruning ratio of the schedule
``[0.2, 0.1, 0.05, 0.01]``; once even 1% more pruning fails, the last accepted mask is the
*extreme ticket*.

The run is resumable at round granularity: everything a round needs is in ``out_dir``
(``state.json``, the accepted masks and weights, the rewind weights), each file is
written atomically, and re-running the same call after an interruption continues from
the last finished round and ends with the same ticket as an uninterrupted run (data
order and augmentation depend only on the seed, the round and the epoch).

Output folder::

    out_dir/
      ticket/            the extreme ticket: SparseResNetForImageClassification folder
      rewind/            W_k (dense), loadable with load_model()
      dense/             the trained dense model
      rounds.json        one entry per round: density, accuracy, gap, accepted, seconds
      state.json         resume state (settings hash, phase, current round)
      work/              accepted masks/weights between rounds
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .atomic import write_json_atomic
from .configs import IMPConfig
from .configuration_sparse_resnet import SparseResNetConfig
from .data import DatasetPair, derive_seed, record_data_statistics
from .errors import TrainingError
from .liveness import prune_dead
from .loading import load_model
from .masks import MaskDict, count_kept, count_total
from .modeling_sparse_resnet import SparseResNetForImageClassification
from .pruning import magnitude_prune
from .storage import read_checkpoint, write_checkpoint
from .training import Trainer, TrainingContext, make_accelerator

__all__ = ["IMPConfig", "IMPResult", "RoundRecord", "find_extreme_ticket", "schedule_step"]

logger = logging.getLogger(__name__)



@dataclass
class RoundRecord:
    """One IMP round, as written to ``rounds.json``."""

    round: int
    ratio: float
    density: float
    accuracy: float
    gap: float
    accepted: bool
    seconds: float
    kind: str = "prune"
    test_count: int = 0


@dataclass
class IMPResult:
    """Outcome of :func:`find_extreme_ticket`."""

    ticket_dir: Path
    rewind_dir: Path
    dense_accuracy: float
    ticket_accuracy: float
    ticket_density: float
    rounds: list[RoundRecord]
    seconds: float
    finished: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ticket_dir"], d["rewind_dir"] = str(self.ticket_dir), str(self.rewind_dir)
        return d


def schedule_step(ratio_index: int, *, gap: float, epsilon: float) -> tuple[bool, int]:
    """The ratio schedule of the search, one pruning round at a time.

    Args:
        ratio_index (`int`): Index of the round's ratio in ``IMPConfig.ratios``.
        gap (`float`): Dense accuracy minus the round's accuracy, in points.
        epsilon (`float`): The largest gap a round may have and be accepted.

    Returns:
        ``(accepted, next_ratio_index)``: an accepted round keeps its ratio for the next round, a
        reverted one moves on to the next (smaller) ratio; the search is over once the index
        passes the last ratio.
    """
    accepted = gap <= epsilon
    return accepted, ratio_index if accepted else ratio_index + 1


# --------------------------------------------------------------------------- small file helpers


def _save_state_dict(path: Path, model: SparseResNetForImageClassification, masks: MaskDict | None) -> None:
    write_checkpoint(path, model.timm_model.state_dict(), masks=masks, metadata={"arch": model.config.arch})


def _load_into(model: SparseResNetForImageClassification, path: Path) -> MaskDict | None:
    contents = read_checkpoint(path)
    model.timm_model.load_state_dict(contents.state_dict, strict=True)
    return contents.masks


# --------------------------------------------------------------------------- the search


class _IMPRun:
    """The stateful IMP run (one per call of :func:`find_extreme_ticket`)."""

    def __init__(self, model: SparseResNetForImageClassification, data: DatasetPair, config: IMPConfig,
                 out_dir: Path, accelerator: Any, progress: bool) -> None:
        self.model = model
        self.data = data
        self.config = config
        self.out = out_dir
        self.work = out_dir / "work"
        self.acc = accelerator
        self.progress = progress and accelerator.is_main_process
        self.state_path = out_dir / "state.json"
        self.rounds: list[RoundRecord] = []
        self.state: dict[str, Any] = {}
        # one trainer for every round: the model is prepared and compiled, the data uploaded, once per run
        self.context = TrainingContext()

    # -------------------------------------------------------------- state

    def _identity(self) -> dict[str, Any]:
        """What, besides the settings, a resumed run must share with the interrupted one."""
        train, test = self.data.train, self.data.test
        return {"arch": self.model.config.arch, "dataset": train.name, "train_size": len(train),
                "test_size": len(test), "num_classes": train.num_classes, "image_shape": list(train.images.shape[1:]),
                "num_processes": self.acc.num_processes}

    def _load_or_init_state(self) -> None:
        h = self.config.settings_hash()
        identity = self._identity()
        if self.state_path.is_file():
            self.state = json.loads(self.state_path.read_text())
            if self.state.get("settings_hash") != h:
                raise TrainingError(
                    f"{self.out} holds an IMP run with different settings. Use a new output folder, or delete "
                    "this one to start over."
                )
            for field_name, value in identity.items():
                if self.state.get("identity", {}).get(field_name) != value:
                    raise TrainingError(
                        f"{self.out} holds an IMP run with {field_name}={self.state.get('identity', {}).get(field_name)!r}"
                        f", this call has {value!r}. Use a new output folder, or the same data and architecture.")
            self.rounds = [RoundRecord(**r) for r in self.state["rounds"]]
            logger.info("Resuming IMP in %s at phase %s, round %d.", self.out, self.state["phase"],
                        self.state.get("round", 0))
        else:
            self.state = {"settings_hash": h, "identity": identity, "phase": "dense", "round": 0, "ratio_index": 0,
                          "accepted": None, "started": time.time(), "elapsed": 0.0, "rounds": []}
            if self.acc.is_main_process:
                # the dense run restarts from exactly these weights if it is interrupted
                _save_state_dict(self.work / "init.safetensors", self.model, None)
            self._commit()

    def _commit(self) -> None:
        """Persist the run. ``state.json`` (which holds the round log and names the accepted
        weights file) is written last and atomically: it alone decides where a resume starts."""
        if not self.acc.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self.state["rounds"] = [asdict(r) for r in self.rounds]
        write_json_atomic(self.out / "rounds.json", self.state["rounds"])
        write_json_atomic(self.state_path, self.state)
        keep = str(self.state.get("accepted") or "").removesuffix(".safetensors") + "."
        for stale in self.work.glob("accepted-r*.safetensors"):  # the weights and their masks file
            if not stale.name.startswith(keep):
                stale.unlink()

    def _accepted_path(self) -> Path:
        return self.work / self.state["accepted"]

    def _save_accepted(self, model: SparseResNetForImageClassification, masks: MaskDict | None) -> None:
        """Write this round's accepted weights to a new file; the next commit switches to it."""
        name = f"accepted-r{self.state['round']}.safetensors"
        if self.acc.is_main_process:
            _save_state_dict(self.work / name, model, masks)
        self.state["accepted"] = name

    # -------------------------------------------------------------- training

    def _train(self, *, round_index: int, start_epoch: int, desc: str,
               on_epoch_end: Callable[[int, Trainer], None] | None = None) -> tuple[float, int]:
        """Train the current model (its weights and masks as loaded); returns (test accuracy, test samples counted).

        Every round reuses the run's trainer (reset: fresh optimizer state, the round's seed),
        which gives the same result as a new trainer without preparing, compiling or
        uploading again. Training draws no global randomness: data order and augmentation
        depend only on the round's seed.
        """
        cfg = self.config.train
        seeded = replace(cfg, seed=derive_seed(cfg.seed, "imp-round", round_index))
        trainer = self.context.trainer(self.model, self.data.train, seeded, test_data=self.data.test,
                                       accelerator=self.acc, progress=self.progress, desc=desc)
        trainer.train(start_epoch=start_epoch, on_epoch_end=on_epoch_end)
        last = trainer.history[-1]
        return last.test_accuracy, last.test_count

    def run_dense(self) -> None:
        k = self.config.rewind_epoch
        rewind_path = self.work / "rewind.safetensors"

        def capture(epoch: int, trainer: Trainer) -> None:
            if epoch == k - 1 and self.acc.is_main_process:
                _save_state_dict(rewind_path, trainer.unwrapped(), None)

        t0 = time.perf_counter()
        self.acc.wait_for_everyone()
        _load_into(self.model, self.work / "init.safetensors")
        if k == 0 and self.acc.is_main_process:
            _save_state_dict(rewind_path, self.model, None)
        acc, count = self._train(round_index=0, start_epoch=0, desc="IMP dense", on_epoch_end=capture)
        self.acc.wait_for_everyone()
        self._save_accepted(self.model, None)
        self.rounds.append(RoundRecord(round=0, ratio=0.0, density=1.0, accuracy=acc, gap=0.0, accepted=True,
                                       seconds=time.perf_counter() - t0, kind="dense", test_count=count))
        self.state.update(phase="prune", dense_accuracy=acc, best_accuracy=acc, round=1, ratio_index=0,
                          density=1.0)
        self._commit()
        self.acc.wait_for_everyone()

    def run_round(self) -> bool:
        """One pruning round; returns False when the search is over."""
        cfg, st = self.config, self.state
        ratio = cfg.ratios[st["ratio_index"]]
        t0 = time.perf_counter()
        _load_into(self.model, self._accepted_path())
        accepted_masks = self._accepted_masks()
        candidate = magnitude_prune(self.model.timm_parameters(), accepted_masks, fraction=ratio, scope=cfg.scope)
        # and what the pruned ticket cannot use: weights of rows nothing reads any more, or that read only zeros
        candidate = prune_dead(candidate, self.model.timm_model.state_dict(), arch=self.model.config.arch,
                               model_args=self.model.config.model_args)
        _load_into(self.model, self.work / "rewind.safetensors")
        self.model.set_masks(candidate)
        accuracy, count = self._train(round_index=st["round"], start_epoch=cfg.rewind_epoch,
                                      desc=f"IMP round {st['round']} (prune {ratio:.0%})")
        density = count_kept(candidate) / count_total(candidate)
        gap = st["dense_accuracy"] - accuracy
        ok, next_index = schedule_step(st["ratio_index"], gap=gap, epsilon=cfg.epsilon)
        self.rounds.append(RoundRecord(round=st["round"], ratio=ratio, density=density, accuracy=accuracy, gap=gap,
                                       accepted=ok, seconds=time.perf_counter() - t0, test_count=count))
        self.acc.wait_for_everyone()
        if ok:
            self._save_accepted(self.model, candidate)
            st.update(density=density, best_accuracy=accuracy)
        st["ratio_index"] = next_index
        st["round"] += 1
        done = st["ratio_index"] >= len(cfg.ratios)
        if done:
            st["phase"] = "done"
        self._commit()
        self.acc.wait_for_everyone()
        logger.info("round %d: ratio %.2f density %.4f acc %.2f gap %.2f -> %s", st["round"] - 1, ratio, density,
                    accuracy, gap, "accepted" if ok else "reverted")
        return not done

    def _accepted_masks(self) -> MaskDict:
        stored = read_checkpoint(self._accepted_path()).masks
        if stored:
            return stored
        params = self.model.timm_parameters()
        names = self.model.prunable_names(include_stem=self.config.include_stem,
                                          include_classifier=self.config.include_classifier)
        return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}

    def finish(self) -> None:
        """Write the ticket, rewind and dense folders (idempotent)."""
        if not self.acc.is_main_process:
            return
        _load_into(self.model, self._accepted_path())
        masks = self._accepted_masks()
        self.model.set_masks(masks)
        self.model.save_pretrained(self.out / "ticket")
        with torch.random.fork_rng(devices=[]):  # its random initialisation is overwritten: leave the caller's RNG alone
            rewind = SparseResNetForImageClassification(self.model.config)
        _load_into(rewind, self.work / "rewind.safetensors")
        rewind.save_pretrained(self.out / "rewind")
        write_json_atomic(self.out / "rewind" / "rewind.json", {"rewind_epoch": self.config.rewind_epoch})


def find_extreme_ticket(
    model: SparseResNetForImageClassification | str,
    data: DatasetPair,
    *,
    out_dir: str | os.PathLike,
    config: IMPConfig | None = None,
    accelerator: Any = None,
    progress: bool = True,
) -> IMPResult:
    """Search for the extreme ticket of ``model`` on ``data`` by IMP with late rewinding.

    Args:
        model: A dense :class:`SparseResNetForImageClassification`, or a timm architecture
            name (the model is then built with ``config.init_seed``, the data's label count
            and input channels). Its config records the data's statistics, image size and
            class names unless it has statistics already (so do the ticket and rewind folders).
        data: Train and test splits.
        out_dir: Folder for the results and the resume state; re-running with the same
            folder and settings resumes.
        config: Search settings (defaults: the paper's).
        accelerator: Shared ``accelerate.Accelerator`` (made from ``config.train`` when ``None``).
        progress: Show one progress bar per round's training (on a terminal only).

    Returns:
        The ticket's location, accuracies, density and the round log.

    Raises:
        TrainingError: ``out_dir`` holds a run with other settings, or training diverged.
    """
    config = config or IMPConfig()
    out = Path(out_dir)
    t_start = time.perf_counter()
    if isinstance(model, str):
        # the user's init_seed; the caller's global random state is restored afterwards
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            model = SparseResNetForImageClassification(SparseResNetConfig(
                arch=model, num_labels=data.num_classes, in_chans=data.train.in_chans))
    record_data_statistics(model, data.train)  # the ticket's config carries the data's normalisation and class names
    accelerator = accelerator or make_accelerator(config.train)
    run = _IMPRun(model, data, config, out, accelerator, progress)
    run._load_or_init_state()
    elapsed_before = run.state.get("elapsed", 0.0)
    try:  # progress: each round's training shows one bar, labelled with the round
        if run.state["phase"] == "dense":
            run.run_dense()
        pruned_rounds = sum(1 for r in run.rounds if r.kind == "prune")
        while run.state["phase"] == "prune":
            if config.max_rounds is not None and pruned_rounds >= config.max_rounds:
                break
            run.run_round()
            pruned_rounds += 1
            run.state["elapsed"] = elapsed_before + time.perf_counter() - t_start
            run._commit()
    finally:
        run.context.close()
    run.finish()
    run.acc.wait_for_everyone()
    accepted = [r for r in run.rounds if r.accepted]
    return IMPResult(
        ticket_dir=out / "ticket",
        rewind_dir=out / "rewind",
        dense_accuracy=run.state["dense_accuracy"],
        ticket_accuracy=accepted[-1].accuracy,
        ticket_density=run.state["density"],
        rounds=run.rounds,
        seconds=elapsed_before + time.perf_counter() - t_start,
        finished=run.state["phase"] == "done",
    )


def load_rewind(out_dir: str | os.PathLike) -> SparseResNetForImageClassification:
    """The rewind weights ``W_k`` of a finished search (dense, no masks)."""
    return load_model(Path(out_dir) / "rewind")

