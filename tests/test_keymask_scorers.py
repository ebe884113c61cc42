"""Key-mask scorers (hf_lottery_verify.keymask.scorers, split): betweenness edge lengths, scoring other
weights than the ticket's (the rewind weights), and bit-identical scores across processes."""

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

from hf_lottery_verify import keymask as km
from hf_lottery_verify.errors import MaskError, MissingWeightsError, ShapeMismatchError, UnknownNameError
from hf_lottery_verify.keymask.betweenness import _edge_lengths
from hf_lottery_verify.keymask.graph import build_channel_graph
from hf_lottery_verify.masks import count_kept

from .helpers import make_model

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- betweenness edge lengths


def _diamond(strong: float = 2.0, weak: float = 0.5):
    """cifar_resnet8 whose masked layers keep only a diamond in layer1.0:
    stem ch0 → conv1 ch1 (strong kernel) → conv2 ch3, and stem ch0 → conv1 ch2 (weak kernel) → conv2 ch3.
    Both routes to ch3 have the same number of hops and equal second kernels."""
    model = make_model("cifar_resnet8", seed=3)
    params = model.timm_parameters()
    entries = {
        "layer1.0.conv1.weight": {(1, 0, 1, 1): strong, (2, 0, 1, 1): -weak},
        "layer1.0.conv2.weight": {(3, 1, 1, 1): 1.0, (3, 2, 1, 1): -1.0},
    }
    masks = {}
    with torch.no_grad():
        for name in model.prunable_names():
            m = torch.zeros_like(params[name], dtype=torch.bool)
            params[name].zero_()
            for idx, value in entries.get(name, {}).items():
                params[name][idx] = value
                m[idx] = True
            masks[name] = m
    model.set_masks(masks)
    return model


def test_betweenness_uses_inverse_edge_lengths_by_default(tiny_model) -> None:
    a = km.compute_scores(tiny_model, score="betweenness")
    b = km.score_betweenness(tiny_model, tiny_model.masks, weights="inverse")
    assert all(torch.equal(a[n], b[n]) for n in a)
    c = km.score_betweenness(tiny_model, tiny_model.masks, weights="none")
    assert not all(torch.equal(a[n], c[n]) for n in a)  # the default is not the unweighted graph


@pytest.mark.parametrize(("weights", "order"), [
    ("inverse", "strong"), ("neglog", "strong"), ("abs_length", "weak"), ("none", "tie")])
def test_shortest_paths_follow_strong_kernels(weights: str, order: str) -> None:
    model = _diamond()
    s = km.score_betweenness(model, model.masks, weights=weights, tiebreak=False)["layer1.0.conv1.weight"]
    strong, weak = float(s[1, 0, 1, 1]), float(s[2, 0, 1, 1])
    assert strong > 0 and weak > 0
    if order == "strong":  # the paper's intent: important (strong) connections lie on more shortest paths
        assert strong > weak
    elif order == "weak":  # Σ|kernel| used as a length: shortest paths avoid the strong kernel
        assert weak > strong
    else:
        assert strong == weak
    key, _ = km.split_key_mask(model, ratio=1 / count_kept(model.masks), score="betweenness", weights=weights)
    if order != "tie":
        assert bool(key["layer1.0.conv1.weight"][(1 if order == "strong" else 2), 0, 1, 1])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    def ranks(x: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def test_inverse_scores_rise_with_kernel_strength(tiny_model) -> None:
    """The review's finding, as a regression test: with Σ|kernel| as a length the betweenness of a kernel
    falls as its strength rises; with the default (1/Σ|kernel|) it rises."""
    graph = build_channel_graph(tiny_model)
    rho = {}
    for weights in ("inverse", "abs_length"):
        scores = km.score_betweenness(tiny_model, tiny_model.masks, weights=weights, tiebreak=False)
        bc, strength = [], []
        for name in tiny_model.masks:
            e = graph.edges_of(name)
            bc.append(scores[name][graph.out_channel[e], graph.in_channel[e], 0, 0].numpy())
            strength.append(graph.weight[e])
        rho[weights] = _spearman(np.concatenate(bc), np.concatenate(strength))
    assert rho["inverse"] > 0.3 and rho["abs_length"] < -0.3


def test_unknown_weight_mode_lists_the_valid_ones(tiny_model) -> None:
    with pytest.raises(UnknownNameError, match="neglog"):
        km.score_betweenness(tiny_model, tiny_model.masks, weights="strength")


def test_neglog_lengths_are_positive_and_monotone() -> None:
    strength = np.array([0.0, 0.25, 1.0, 4.0, 4.0])
    length = _edge_lengths(strength, "neglog")
    assert bool((length > 0).all())
    assert bool((np.diff(length[1:4]) < 0).all())  # stronger → shorter
    assert length[3] == length[4]
    np.testing.assert_allclose(length[1:3], np.log(4.0) - np.log(strength[1:3]))
    np.testing.assert_allclose(_edge_lengths(strength, "inverse")[2:], 1 / strength[2:])
    np.testing.assert_array_equal(_edge_lengths(np.ones(3), "neglog"), np.ones(3))  # all equal: hops
    assert _edge_lengths(strength, "none") is None


# --------------------------------------------------------------------------- scoring other weights (rewind)


def _ticket_and_rewind():
    rewind = make_model("cifar_resnet8", seed=11)  # dense W_k
    ticket = make_model("cifar_resnet8", seed=12, density=0.2)  # trained stand-in with its mask M
    return ticket, rewind


def _with_weights(ticket, weights):
    """A copy of ``ticket`` holding ``weights`` (all parameters) under the ticket's masks."""
    model = copy.deepcopy(ticket)
    model.timm_model.load_state_dict(weights.timm_model.state_dict())
    model.set_masks(ticket.masks)
    return model


@pytest.mark.parametrize("score", km.list_scorers())
def test_score_weights_score_the_given_weights_under_the_ticket_mask(score: str) -> None:
    ticket, rewind = _ticket_and_rewind()
    before = {n: p.detach().clone() for n, p in ticket.timm_parameters().items()}
    masks = ticket.masks
    got = km.compute_scores(ticket, score=score, seed=4, score_weights=rewind)
    want = km.compute_scores(_with_weights(ticket, rewind), score=score, seed=4)
    for n in masks:  # bit-identical on the kept weights (pruned entries' scores are ignored)
        assert torch.equal(got[n][masks[n]], want[n][masks[n]]), n
    key, locked = km.split_key_mask(ticket, ratio=0.1, score=score, seed=4, score_weights=rewind)
    key_want, _ = km.split_key_mask(_with_weights(ticket, rewind), ratio=0.1, score=score, seed=4)
    assert all(torch.equal(key[n], key_want[n]) for n in key)
    assert all(torch.equal(key[n] | locked[n], masks[n]) for n in masks)  # still a split of the ticket's M
    assert all(torch.equal(p.detach(), before[n]) for n, p in ticket.timm_parameters().items())  # untouched
    if score == "omp":
        trained_key, _ = km.split_key_mask(ticket, ratio=0.1, score="omp")
        assert any(not torch.equal(key[n], trained_key[n]) for n in key)


def test_omp_on_rewind_weights_keeps_largest_rewind_magnitudes() -> None:
    ticket, rewind = _ticket_and_rewind()
    key, locked = km.split_key_mask(ticket, ratio=0.1, score="omp", score_weights=rewind)
    w = rewind.timm_parameters()
    in_key = torch.cat([w[n].detach().abs()[key[n]] for n in key])
    in_locked = torch.cat([w[n].detach().abs()[locked[n]] for n in locked])
    assert float(in_key.min()) >= float(in_locked.max())


def test_score_weights_accepts_models_and_state_dicts() -> None:
    ticket, rewind = _ticket_and_rewind()
    ref = km.compute_scores(ticket, score="ewp", score_weights=rewind)
    for source in (rewind.timm_model, rewind.state_dict(), rewind.timm_model.state_dict(),
                   {n: p.detach() for n, p in rewind.timm_parameters().items()}):
        got = km.compute_scores(ticket, score="ewp", score_weights=source)
        assert all(torch.equal(got[n], ref[n]) for n in ref)


def test_score_weights_must_fit_the_model() -> None:
    ticket, rewind = _ticket_and_rewind()
    partial = {n: p for n, p in rewind.timm_parameters().items() if n != "fc.weight"}
    with pytest.raises(MissingWeightsError, match="fc.weight"):
        km.split_key_mask(ticket, ratio=0.1, score_weights=partial)
    with pytest.raises(ShapeMismatchError, match="fc.weight"):
        km.split_key_mask(ticket, ratio=0.1, score_weights=make_model("cifar_resnet8", num_labels=5))
    with pytest.raises(TypeError, match="state dict"):
        km.compute_scores(ticket, score_weights=[1, 2, 3])


def test_compute_scores_rejects_masks_of_unknown_parameters(tiny_model) -> None:
    with pytest.raises(MaskError, match="unknown parameters"):
        km.compute_scores(tiny_model, masks={"nope.weight": torch.ones(2, dtype=torch.bool)})


# --------------------------------------------------------------------------- determinism across processes

_DIGEST_SCRIPT = r"""
import hashlib, json, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {repo!r})
from tests.helpers import make_model
from hf_lottery_verify import keymask as km

def digest(tensors):
    h = hashlib.sha256()
    for name, t in tensors.items():
        h.update(name.encode()); h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

ticket = make_model("cifar_resnet8", seed=5, density=0.15)
rewind = make_model("cifar_resnet8", seed=6)
runs = [(s, {{}}) for s in km.list_scorers()] + [
    ("betweenness", {{"sources": 48}}), ("betweenness", {{"weights": "neglog"}}), ("ewp", {{"score_weights": rewind}})]
out = {{}}
for score, options in runs:
    label = score + json.dumps(sorted((k, str(type(v).__name__) if k == "score_weights" else v)
                                      for k, v in options.items()))
    scores = km.compute_scores(ticket, score=score, seed=9, **options)
    key, locked = km.split_key_mask(ticket, ratio=0.1, score=score, seed=9, **options)
    out[label] = [digest(scores), digest(key), digest(locked)]
print(json.dumps(out, sort_keys=True))
"""


def _digests_in_subprocesses(*hash_seeds: str) -> list[dict[str, list[str]]]:
    """Run the digest script in one process per hash seed (concurrently) and parse their outputs."""
    procs = [subprocess.Popen([sys.executable, "-c", _DIGEST_SCRIPT.format(repo=str(REPO))], cwd=REPO,
                              env={**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in hash_seeds]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-2000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.slow
def test_scores_and_splits_are_bit_identical_across_processes() -> None:
    """Every scorer and the split give the same bytes under different hash seeds (no set order, no hash())."""
    a, b = _digests_in_subprocesses("1", "2718281")
    assert set(a) >= {f"{s}[]" for s in km.list_scorers()}
    assert a == b
    # ... and the same as in this process (whatever its hash seed).
    namespace: dict[str, object] = {}
    code = _DIGEST_SCRIPT.format(repo=str(REPO)).replace("print(json.dumps(out, sort_keys=True))", "")
    threads = torch.get_num_threads()
    try:
        exec(compile(code, "<digest>", "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
    assert namespace["out"] == a
    assert len({d for digests in a.values() for d in digests}) == 3 * len(a)  # the runs really differ


def test_scorers_do_not_depend_on_mask_dict_order(tiny_model) -> None:
    masks = tiny_model.masks
    reversed_masks = dict(reversed(list(masks.items())))
    for score in km.list_scorers():
        a = km.compute_scores(tiny_model, score=score, masks=masks, seed=2)
        b = km.compute_scores(tiny_model, score=score, masks=reversed_masks, seed=2)
        assert all(torch.equal(a[n], b[n]) for n in masks), score


def test_protected_positions_never_go_into_the_key() -> None:
    from hf_lottery_verify.keymask import lock_model, split_key_mask

    from .helpers import make_model

    model = make_model("cifar_resnet20", density=0.1)
    masks = model.masks
    name = next(iter(masks))
    protect = {name: masks[name].clone()}  # the whole first layer stays public
    key, locked = split_key_mask(model, ratio=0.3, score="omp", protect=protect)
    assert not bool(key[name].any()) and torch.equal(locked[name], masks[name])
    assert sum(int(k.sum()) for k in key.values()) == round(0.3 * sum(int(m.sum()) for m in masks.values()))
    locked_model, _ = lock_model(model, ratio=0.3, protect=protect)
    assert torch.equal(locked_model.masks[name], masks[name])
