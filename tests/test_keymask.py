"""Scheme V1, key masks (hf_lottery_verify.keymask)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hf_lottery_verify as hlv
from hf_lottery_verify import keymask as km
from hf_lottery_verify import workflows
from hf_lottery_verify.architectures import stage_names
from hf_lottery_verify.codecs import pack_bits
from hf_lottery_verify.errors import DensityError, KeyFileError, KeyMismatchError, MaskError, UnknownNameError
from hf_lottery_verify.keymask.graph import build_channel_graph
from hf_lottery_verify.loading import load_with_key
from hf_lottery_verify.masks import count_kept
from hf_lottery_verify.ownership_key import OwnershipKey, mask_digest
from hf_lottery_verify.pruning import top_k_mask

from .helpers import make_model

FAST_OPTIONS = {"betweenness": {}, "ewp": {}, "omp": {}, "random": {}}


# --------------------------------------------------------------------------- registry


def test_registry_lists_cli_values() -> None:
    assert km.list_scorers() == ["betweenness", "ewp", "omp", "random"]
    assert km.get_scorer("omp") is km.score_magnitude
    with pytest.raises(UnknownNameError, match="betweenness, ewp, omp, random"):
        km.get_scorer("synflow")


def test_register_scorer_warns_on_overwrite(monkeypatch) -> None:
    monkeypatch.setattr(km.scorers, "_SCORERS", dict(km.scorers._SCORERS))
    km.register_scorer("ones")(lambda model, masks, *, seed: {n: torch.ones(m.shape) for n, m in masks.items()})
    assert "ones" in km.list_scorers()
    with pytest.warns(UserWarning, match="Overwriting"):
        km.register_scorer("omp")(km.score_random)


# --------------------------------------------------------------------------- split and merge


@pytest.mark.parametrize("score", km.list_scorers())
def test_split_partitions_mask(tiny_model, score: str) -> None:
    masks = tiny_model.masks
    kept = count_kept(masks)
    key, locked = km.split_key_mask(tiny_model, ratio=0.05, score=score, seed=3)
    assert set(key) == set(locked) == set(masks)
    for name, m in masks.items():
        assert key[name].dtype == torch.bool and key[name].shape == m.shape
        assert torch.equal(key[name] | locked[name], m)
        assert not bool((key[name] & locked[name]).any())
    assert count_kept(key) == round(0.05 * kept)
    merged = km.merge_key_mask(locked, key)
    assert all(torch.equal(merged[n], masks[n]) for n in masks)
    assert mask_digest(merged) == mask_digest(masks)
    again, _ = km.split_key_mask(tiny_model, ratio=0.05, score=score, seed=3)
    assert all(torch.equal(again[n], key[n]) for n in key)


def test_split_equals_global_top_k_with_position_ties(tiny_model, monkeypatch) -> None:
    monkeypatch.setattr(km.scorers, "_SCORERS", dict(km.scorers._SCORERS))
    km.register_scorer("ties")(lambda model, masks, *, seed: {n: torch.ones(m.shape, dtype=torch.float64)
                                                              for n, m in masks.items()})
    masks = tiny_model.masks
    names = [n for n, _ in tiny_model.timm_model.named_parameters() if n in masks]
    n_key = round(0.1 * count_kept(masks))
    for score in ("ties", "random"):
        key, _ = km.split_key_mask(tiny_model, ratio=0.1, score=score, seed=7)
        scores = km.compute_scores(tiny_model, score=score, seed=7)
        flat = torch.cat([scores[n].masked_fill(~masks[n], -math.inf).reshape(-1) for n in names])
        want = top_k_mask(flat, n_key)
        assert torch.equal(torch.cat([key[n].reshape(-1) for n in names]), want)
        if score == "ties":  # all tied: the first n kept weights in forward parameter order
            assert int(key[names[0]].sum()) == min(n_key, int(masks[names[0]].sum()))


def test_random_seed_changes_split(tiny_model) -> None:
    a, _ = km.split_key_mask(tiny_model, ratio=0.1, score="random", seed=0)
    b, _ = km.split_key_mask(tiny_model, ratio=0.1, score="random", seed=1)
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_omp_key_holds_largest_kept_weights(tiny_model) -> None:
    key, locked = km.split_key_mask(tiny_model, ratio=0.1, score="omp")
    params = tiny_model.timm_parameters()
    in_key = torch.cat([params[n].detach().abs()[key[n]] for n in key])
    in_locked = torch.cat([params[n].detach().abs()[locked[n]] for n in locked])
    assert float(in_key.min()) >= float(in_locked.max())


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.5, 1.5, float("nan"), 1e-9])
def test_bad_ratio_raises(tiny_model, ratio: float) -> None:
    with pytest.raises(DensityError):
        km.split_key_mask(tiny_model, ratio=ratio)


def test_split_needs_masks() -> None:
    with pytest.raises(MaskError, match="no masks"):
        km.split_key_mask(make_model("cifar_resnet8"), ratio=0.1)


def test_merge_rejects_overlap_and_mismatch(tiny_model) -> None:
    key, locked = km.split_key_mask(tiny_model, ratio=0.1)
    name = next(iter(key))
    with pytest.raises(MaskError, match="overlap"):
        km.merge_key_mask(locked, {**key, name: key[name] | locked[name]})
    with pytest.raises(MaskError, match="shape"):
        km.merge_key_mask(locked, {**key, name: key[name].reshape(-1)})
    with pytest.raises(MaskError, match="different parameters"):
        km.merge_key_mask(locked, {n: m for n, m in key.items() if n != name})


def test_fake_key_masks(tiny_model) -> None:
    key, locked = km.split_key_mask(tiny_model, ratio=0.1)
    n = count_kept(key)
    fake = km.fake_key_masks(locked, n=n, seed=5)
    assert count_kept(fake) == n
    assert not any(bool((fake[k] & locked[k]).any()) for k in locked)
    assert all(torch.equal(fake[k], km.fake_key_masks(locked, n=n, seed=5)[k]) for k in fake)
    assert any(not torch.equal(fake[k], km.fake_key_masks(locked, n=n, seed=6)[k]) for k in fake)
    locked_model, _ = km.lock_model(tiny_model, ratio=0.1)
    from_model = km.fake_key_masks(locked_model, n=n, seed=5)
    assert count_kept(from_model) == n
    with pytest.raises(DensityError):
        km.fake_key_masks(locked, n=10**9)


# --------------------------------------------------------------------------- scorers on hand-built networks


def _set_chain(model, entries: dict[str, dict[tuple[int, ...], float]], *, stem: tuple, fc: tuple) -> None:
    """Zero every weight, then keep exactly the given entries (masks follow)."""
    params = model.timm_parameters()
    with torch.no_grad():
        for p in params.values():
            p.zero_()
        params["conv1.weight"][stem[0]] = stem[1]
        params["fc.weight"][fc[0]] = fc[1]
        masks = {}
        for name in model.prunable_names():
            m = torch.zeros_like(params[name], dtype=torch.bool)
            for idx, value in entries.get(name, {}).items():
                params[name][idx] = value
                m[idx] = True
            masks[name] = m
    model.set_masks(masks)


def test_ewp_of_chain_and_residual_paths() -> None:
    a, b, c, d, e, f, g, h = 2.0, 3.0, -0.5, 1.5, 4.0, 0.25, 2.5, 0.375  # exact in float32
    model = make_model("cifar_resnet8")
    # 1x1 input: only the centre tap of a 3x3 kernel (and the 1x1 shortcut tap) sees the image.
    _set_chain(model, {
        "layer1.0.conv1.weight": {(1, 0, 1, 1): b},  # stem ch0 -> ch1
        "layer1.0.conv2.weight": {(2, 1, 1, 1): c},  # ch1 -> ch2; the identity shortcut carries ch0
        "layer2.0.conv1.weight": {(0, 2, 1, 1): d},
        "layer2.0.conv2.weight": {(0, 0, 1, 1): e},
        "layer2.0.downsample.0.weight": {(0, 0, 0, 0): f},  # residual path from stem ch0
        "layer3.0.conv1.weight": {(0, 0, 1, 1): g},
        "layer3.0.conv2.weight": {(0, 0, 1, 1): h},
    }, stem=((0, 0, 1, 1), a), fc=((0, 0), 1.0))
    chain = a * b * abs(c) * d * e
    total = (chain + a * f) * g * h
    for renormalize in (True, False):
        s = km.score_ewp(model, model.masks, input_size=(1, 1), renormalize=renormalize)
        for name, idx, want in [
            ("layer1.0.conv1.weight", (1, 0, 1, 1), chain * g * h),
            ("layer1.0.conv2.weight", (2, 1, 1, 1), chain * g * h),
            ("layer2.0.conv2.weight", (0, 0, 1, 1), chain * g * h),
            ("layer2.0.downsample.0.weight", (0, 0, 0, 0), a * f * g * h),
            ("layer3.0.conv1.weight", (0, 0, 1, 1), total),
        ]:
            assert float(s[name][idx]) == pytest.approx(want, rel=1e-12)
        assert float(sum(t.sum() for t in s.values())) == pytest.approx(4 * chain * g * h + a * f * g * h + 2 * total)
    # The residual-path weight outranks the chain weights when its path is heavier.
    key, _ = km.split_key_mask(model, ratio=2 / 7, score="ewp", input_size=(1, 1))
    assert bool(key["layer3.0.conv1.weight"][0, 0, 1, 1]) and bool(key["layer3.0.conv2.weight"][0, 0, 1, 1])


def _dp_path_scores(graph) -> np.ndarray:
    """Sum of path products through each edge, by dynamic programming over the channel graph.

    Node ids are a topological order, so sweeping edges by source (forward) and by
    destination (backward) visits every node after all its predecessors / successors.
    """
    fwd = np.zeros(graph.num_nodes)
    fwd[graph.nodes_of("input")] = 1.0
    for i in np.argsort(graph.src, kind="stable"):
        fwd[graph.dst[i]] += fwd[graph.src[i]] * graph.weight[i]
    bwd = np.zeros(graph.num_nodes)
    bwd[graph.nodes_of(graph.point_names[-1])] = 1.0
    for i in np.argsort(-graph.dst, kind="stable"):
        bwd[graph.src[i]] += graph.weight[i] * bwd[graph.dst[i]]
    return fwd[graph.src] * graph.weight * bwd[graph.dst]


def test_ewp_equals_path_enumeration_on_channel_graph() -> None:
    """With a 1x1 input and centre-tap-only kernels the real network *is* the channel graph."""
    model = make_model("cifar_resnet8", seed=1)
    params = model.timm_parameters()
    gen = torch.Generator().manual_seed(0)
    masks = {}
    with torch.no_grad():
        for name, p in params.items():
            if p.dim() == 4:
                centre = torch.zeros_like(p, dtype=torch.bool)
                centre[..., p.shape[2] // 2, p.shape[3] // 2] = True
                if name in model.prunable_names():
                    centre &= torch.rand(p.shape, generator=gen) < 0.3
                    masks[name] = centre
                else:
                    p.mul_(centre)  # the dense stem keeps only its centre taps
    model.set_masks(masks)
    graph = build_channel_graph(model, include_classifier=True)
    expected = _dp_path_scores(graph)
    scores = km.score_ewp(model, model.masks, input_size=(1, 1))
    for name in masks:
        e = graph.edges_of(name)
        got = scores[name][graph.out_channel[e], graph.in_channel[e], params[name].shape[2] // 2,
                           params[name].shape[3] // 2].numpy()
        np.testing.assert_allclose(got, expected[e], rtol=1e-10, atol=0)
        assert float(scores[name].sum()) == pytest.approx(float(expected[e].sum()), rel=1e-10)


def _reference_path_sum(model, leaves: dict[str, torch.Tensor], *, drop: tuple[str, tuple] | None = None) -> torch.Tensor:
    """SynFlow's path sum written directly with F.conv2d over the timm ResNet structure
    (no module copy, no hooks): BN and ReLU are identities on non-negative inputs."""
    net = model.timm_model
    params = model.timm_parameters()

    def weight(name: str) -> torch.Tensor:
        w = leaves[name] if name in leaves else params[name].detach().double().abs()
        if drop is not None and drop[0] == name:
            w = w.clone()
            w[drop[1]] = 0.0
        return w

    def conv(x: torch.Tensor, module, name: str) -> torch.Tensor:
        return F.conv2d(x, weight(f"{name}.weight"), stride=module.stride, padding=module.padding,
                        dilation=module.dilation, groups=module.groups)

    x = conv(torch.ones(1, 3, 32, 32, dtype=torch.float64), net.conv1, "conv1")
    for stage in stage_names(net):
        for idx, block in getattr(net, stage).named_children():
            h = conv(x, block.conv1, f"{stage}.{idx}.conv1")
            h = conv(h, block.conv2, f"{stage}.{idx}.conv2")
            shortcut = x if block.downsample is None else conv(x, block.downsample[0], f"{stage}.{idx}.downsample.0")
            x = h + shortcut
    return (x.mean(dim=(2, 3)) @ weight("fc.weight").T).sum()


def test_ewp_matches_independent_synflow_and_weight_removal() -> None:
    model = make_model("cifar_resnet8", density=0.1, seed=2)
    params = model.timm_parameters()
    masks = model.masks
    leaves = {n: (params[n].detach().double().abs() * masks[n]).requires_grad_() for n in masks}
    total = _reference_path_sum(model, leaves)
    grads = torch.autograd.grad(total, list(leaves.values()))
    reference = {n: leaves[n].detach() * g for n, g in zip(leaves, grads, strict=True)}
    scores = km.score_ewp(model, masks)
    for n in masks:
        torch.testing.assert_close(scores[n], reference[n], rtol=1e-9, atol=1e-12 * float(total.detach()))
    # The path sum is affine in each weight (a path crosses a layer once), so a weight's score is
    # exactly what removing it takes off the total.
    flat = torch.cat([scores[n].reshape(-1) for n in masks])
    names = list(masks)
    offsets = np.cumsum([0] + [masks[n].numel() for n in names])
    with torch.no_grad():
        full = float(_reference_path_sum(model, {n: leaves[n].detach() for n in names}))
        for pos in torch.topk(flat, 3).indices.tolist():
            i = int(np.searchsorted(offsets, pos, side="right") - 1)
            name = names[i]
            idx = np.unravel_index(pos - offsets[i], tuple(masks[name].shape))
            without = float(_reference_path_sum(model, {n: leaves[n].detach() for n in names}, drop=(name, idx)))
            assert full - without == pytest.approx(float(flat[pos]), rel=1e-7)


def test_ewp_overflow_is_reported_or_rescaled(caplog) -> None:
    model = make_model("cifar_resnet20", density=0.2)
    with torch.no_grad():
        for name in model.masks:
            model.timm_parameters()[name].mul_(1e30)
    with pytest.raises(FloatingPointError, match="renormalize=True"):
        km.score_ewp(model, model.masks, renormalize=False)
    with caplog.at_level(logging.WARNING, logger="hf_lottery_verify.keymask"):
        scores = km.score_ewp(model, model.masks)
    assert "ranking is unchanged" in caplog.text
    assert all(bool(torch.isfinite(s).all()) for s in scores.values())
    assert max(float(s.max()) for s in scores.values()) > 0


@pytest.mark.parametrize("weights", ["abs_length", "inverse", "none"])
def test_betweenness_bridge_scores_highest(weights: str) -> None:
    model = make_model("cifar_resnet8", density=0.3)
    masks = model.masks
    bridge = "layer2.0.conv1.weight"
    masks[bridge] = torch.zeros_like(masks[bridge])
    masks[bridge][5, 7, 1, 1] = True  # the only kernel into stage 2 ...
    masks["layer2.0.downsample.0.weight"] = torch.zeros_like(masks["layer2.0.downsample.0.weight"])  # ... no bypass
    model.set_masks(masks)
    scores = km.score_betweenness(model, model.masks, weights=weights)
    best = max(float(s[model.masks[n]].max()) for n, s in scores.items() if bool(model.masks[n].any()))
    assert float(scores[bridge][5, 7, 1, 1]) == best
    key, _ = km.split_key_mask(model, ratio=1 / count_kept(model.masks), score="betweenness", weights=weights)
    assert bool(key[bridge][5, 7, 1, 1]) and count_kept(key) == 1


def test_betweenness_tiebreak_orders_inside_kernels_only(tiny_model) -> None:
    masks = tiny_model.masks
    raw = km.score_betweenness(tiny_model, masks, tiebreak=False)
    tie = km.score_betweenness(tiny_model, masks)
    params = tiny_model.timm_parameters()
    r = torch.cat([raw[n][masks[n]] for n in masks])
    t = torch.cat([tie[n][masks[n]] for n in masks])
    a = torch.cat([params[n].detach().abs()[masks[n]] for n in masks]).double()
    order = torch.argsort(t, descending=True, stable=True)
    assert bool((r[order][1:] <= r[order][:-1]).all())  # never reorders different betweenness values
    same = r[order][1:] == r[order][:-1]
    assert bool((a[order][1:][same] <= a[order][:-1][same]).all())  # ... and sorts ties by |w|
    assert bool(same.any())


def test_betweenness_sampling_is_seeded_and_close(tiny_model) -> None:
    masks = tiny_model.masks
    graph = build_channel_graph(tiny_model)
    exact = km.score_betweenness(tiny_model, masks, tiebreak=False)
    full = km.score_betweenness(tiny_model, masks, tiebreak=False, sources=graph.num_nodes)
    assert all(torch.equal(exact[n], full[n]) for n in masks)
    a = km.score_betweenness(tiny_model, masks, sources=200, seed=1)
    b = km.score_betweenness(tiny_model, masks, sources=200, seed=1)
    assert all(torch.equal(a[n], b[n]) for n in masks)
    e = torch.cat([exact[n][masks[n]] for n in masks]).numpy()
    s = torch.cat([a[n][masks[n]] for n in masks]).numpy()
    assert abs(float(s.sum()) / float(e.sum()) - 1) < 0.05  # unbiased estimate of the total
    rank = np.corrcoef(np.argsort(np.argsort(e)), np.argsort(np.argsort(s)))[0, 1]
    assert rank > 0.6
    with pytest.raises(DensityError):
        km.score_betweenness(tiny_model, masks, sources=0)
    with pytest.raises(UnknownNameError):
        km.score_betweenness(tiny_model, masks, weights="log")


# --------------------------------------------------------------------------- distribution


def _state_equal(a, b) -> bool:
    sa, sb = a.timm_model.state_dict(), b.timm_model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("compact", [False, True])
def test_lock_save_reload_and_restore(tiny_model, tmp_path, compact: bool) -> None:
    locked_model, key = km.lock_model(tiny_model, ratio=0.1, score="omp", seed=0)
    section = key.section("keymask")
    key_masks, locked = km.split_key_mask(tiny_model, ratio=0.1, score="omp")
    assert section["n"] == count_kept(key_masks) == round(0.1 * count_kept(tiny_model.masks))
    assert section["mask_digest"] == mask_digest(tiny_model.masks)
    assert section["locked_digest"] == mask_digest(locked)
    assert section["score"] == "omp" and section["ratio"] == 0.1 and section["seed"] == 0
    name = next(iter(key_masks))
    assert torch.equal(key.tensors[f"keymask.mask.{name}"], pack_bits(key_masks[name]))
    assert torch.equal(key.tensors[f"keymask.values.{name}"], tiny_model.timm_parameters()[name].detach()[key_masks[name]])
    json.dumps(key.sections)

    locked_model.save_pretrained(tmp_path / "public", compact=compact)
    key.save(tmp_path / "keys" / "ticket.json")
    public = hlv.load_model(tmp_path / "public")
    params = public.timm_parameters()
    for n, m in key_masks.items():
        assert torch.equal(public.masks[n], locked[n])
        assert not bool(params[n].detach()[m].ne(0).any())  # no key weight was published
    assert not _state_equal(public, tiny_model)

    restored = load_with_key(tmp_path / "public", key=tmp_path / "keys" / "ticket.json")
    assert _state_equal(restored, tiny_model)
    assert all(torch.equal(restored.masks[n], tiny_model.masks[n]) for n in tiny_model.masks)
    in_memory = load_with_key(locked_model, key=key)
    assert _state_equal(in_memory, tiny_model)
    assert mask_digest(locked_model.masks) == section["locked_digest"]  # the input was not modified


def test_load_with_key_mismatches(tiny_model) -> None:
    locked_model, key = km.lock_model(tiny_model, ratio=0.1, score="random", seed=4)
    other = OwnershipKey(arch="cifar_resnet20", sections=dict(key.sections), tensors=dict(key.tensors))
    with pytest.raises(KeyMismatchError, match="cifar_resnet20"):
        load_with_key(locked_model, key=other)
    with pytest.raises(KeyMismatchError, match="no 'keymask' section"):
        load_with_key(locked_model, key=OwnershipKey(arch="cifar_resnet8"))
    with pytest.raises(KeyMismatchError, match="overlaps"):
        load_with_key(tiny_model, key=key)  # the full ticket is not the locked one
    name = next(iter(tiny_model.masks))
    missing = OwnershipKey(arch=key.arch, sections=dict(key.sections),
                           tensors={k: v for k, v in key.tensors.items() if k != f"keymask.values.{name}"})
    with pytest.raises(KeyMismatchError, match="lacks"):
        load_with_key(locked_model, key=missing)
    bad_shape = json.loads(json.dumps(key.sections))
    bad_shape["keymask"]["params"][name]["shape"] = [1, 2, 3, 4]
    with pytest.raises(KeyMismatchError, match="shape"):
        load_with_key(locked_model, key=OwnershipKey(arch=key.arch, sections=bad_shape, tensors=dict(key.tensors)))
    unknown = json.loads(json.dumps(key.sections))
    unknown["keymask"]["params"]["layer9.0.conv1.weight"] = {"shape": [1], "key": 0, "locked": 0}
    with pytest.raises(KeyMismatchError, match="does not have"):
        load_with_key(locked_model, key=OwnershipKey(arch=key.arch, sections=unknown, tensors=dict(key.tensors)))
    # The locked model was pruned further: the merge no longer gives the ticket.
    pruned = locked_model.masks
    kept = torch.nonzero(pruned[name])[0].tolist()
    pruned[name][tuple(kept)] = False
    locked_model.set_masks(pruned)
    with pytest.raises(KeyMismatchError, match="digest"):
        load_with_key(locked_model, key=key)
    with pytest.raises(KeyMismatchError, match="cifar_resnet20"):
        km.lock_model(tiny_model, ratio=0.1, key=OwnershipKey(arch="cifar_resnet20"))


def test_split_and_lock_return_named_tuples_in_their_documented_order(tiny_model) -> None:
    split = km.split_key_mask(tiny_model, ratio=0.1, score="omp")
    assert isinstance(split, km.KeySplit) and split._fields == ("key_masks", "locked_masks")
    key_masks, locked_masks = split
    assert key_masks is split.key_masks and locked_masks is split.locked_masks
    assert count_kept(split.key_masks) == round(0.1 * count_kept(tiny_model.masks))
    ticket = km.lock_model(tiny_model, ratio=0.1, score="omp")
    assert isinstance(ticket, km.LockedTicket) and ticket._fields == ("model", "key")
    locked_model, key = ticket
    assert locked_model is ticket.model and key is ticket.key
    assert mask_digest(ticket.model.masks) == mask_digest(split.locked_masks)
    assert ticket.key.section("keymask")["locked_digest"] == mask_digest(split.locked_masks)


def test_lock_model_records_a_digest_of_score_weights_not_the_weights(tiny_model, tmp_path) -> None:
    rewind = make_model("cifar_resnet8", seed=5)
    plain = km.lock_model(tiny_model, ratio=0.1, score="omp").key.section("keymask")
    assert "scored_on" not in plain and "score_weights_sha256" not in plain
    digests = set()
    for source in (rewind, rewind.state_dict(), rewind.timm_model.state_dict()):
        locked, key = km.lock_model(tiny_model, ratio=0.1, score="omp", score_weights=source)
        section = key.section("keymask")
        assert section["scored_on"] == "given weights" and "score_weights" not in section["score_options"]
        assert len(section["score_weights_sha256"]) == 64
        digests.add(section["score_weights_sha256"])
        text = json.dumps(key.sections)
        assert "tensor(" not in text and len(text) < 20_000
        want = km.split_key_mask(tiny_model, ratio=0.1, score="omp", score_weights=rewind).locked_masks
        assert mask_digest(locked.masks) == mask_digest(want)  # the weights were still used for scoring
    assert len(digests) == 1  # a model and its state dicts name the same weights
    other = km.lock_model(tiny_model, ratio=0.1, score="omp", score_weights=make_model("cifar_resnet8", seed=6))
    assert other.key.section("keymask")["score_weights_sha256"] not in digests
    key.save(tmp_path / "k.json")
    assert OwnershipKey.load(tmp_path / "k.json").section("keymask")["scored_on"] == "given weights"


def test_lock_model_extends_an_existing_key_into_a_new_one(tiny_model) -> None:
    existing = OwnershipKey(arch="cifar_resnet8").with_section("triggers", {"n": 10, "num_classes": 10,
                                                                           "image_size": 8, "channels": 3})
    _, key = km.lock_model(tiny_model, ratio=0.1, key=existing)
    assert set(key.sections) == {"triggers", "keymask"} and set(existing.sections) == {"triggers"}
    assert (key.secret, key.nonce) == (existing.secret, existing.nonce)
    assert key.commitment() == existing.commitment()  # the key mask is no part of the public commitment
    with pytest.raises(KeyMismatchError, match="already holds a 'keymask' section"):
        km.lock_model(tiny_model, ratio=0.1, key=key)  # a key mask is never replaced


def test_lock_model_on_a_signed_key_keeps_every_signature_kernel_public() -> None:
    """A signed ticket locked with its key keeps its whole signature in the public model, without
    the caller naming the signature's kernels (they are derived from the key)."""
    from hf_lottery_verify.signature import embed_signature, extract_signature, signature_positions

    model = make_model("cifar_resnet20", density=0.1)
    signed = embed_signature(model, "hf-lottery:alice", key=OwnershipKey(arch="cifar_resnet20", secret="ab" * 32))
    positions = signature_positions(signed)
    locked, key = km.lock_model(model, ratio=0.3, score="omp", key=signed)
    for name, where in positions.items():  # every kept signature weight stays in the locked mask
        assert torch.equal(locked.masks[name][where], model.masks[name][where]), name
    assert extract_signature(locked, key=key).bit_agreement == 1.0
    unprotected, _ = km.lock_model(model, ratio=0.3, score="omp")  # the same split without the signed key ...
    assert any(not torch.equal(unprotected.masks[n][w], model.masks[n][w]) for n, w in positions.items())  # ... takes some
    restored = load_with_key(locked, key=key)  # the key still restores the ticket
    assert all(torch.equal(restored.masks[n], model.masks[n]) for n in model.masks)
    first = next(iter(model.masks))
    both, _ = km.lock_model(model, ratio=0.3, score="omp", key=signed, protect={first: model.masks[first].clone()})
    assert torch.equal(both.masks[first], model.masks[first])  # protect= adds positions to the signature's
    assert all(torch.equal(both.masks[n][w], model.masks[n][w]) for n, w in positions.items())


def test_split_key_folder(tiny_model, tmp_path) -> None:
    tiny_model.save_pretrained(tmp_path / "full")
    with pytest.raises(KeyFileError, match="inside the model folder"):
        workflows.split_key_folder(tmp_path / "full", ratio=0.1, key_out=tmp_path / "out" / "k.json", out_dir=tmp_path / "out")
    report = workflows.split_key_folder(tmp_path / "full", ratio=0.1, score="betweenness", seed=1,
                                 key_out=tmp_path / "k.json", out_dir=tmp_path / "out", compact=True)
    json.dumps(report)
    assert report["verified"] and report["n"] == round(0.1 * count_kept(tiny_model.masks))
    assert report["density_locked"] + report["density_key"] == pytest.approx(report["density_full"])
    assert math.isclose(report["density_full"], tiny_model.density)
    restored = load_with_key(tmp_path / "out", key=tmp_path / "k.json")
    assert _state_equal(restored, tiny_model)
    with pytest.raises(KeyFileError, match="already holds a key mask"):
        workflows.split_key_folder(tmp_path / "full", ratio=0.1, key_out=tmp_path / "k.json", out_dir=tmp_path / "out2")


def test_single_weight_key_round_trips_through_files(tiny_model, tmp_path) -> None:
    ratio = 1 / count_kept(tiny_model.masks)  # n = 1: most parameters get an empty key
    locked_model, key = km.lock_model(tiny_model, ratio=ratio, score="ewp")
    assert key.section("keymask")["n"] == 1
    assert sum(v.numel() for k, v in key.tensors.items() if k.startswith("keymask.values.")) == 1
    key.save(tmp_path / "k.json")
    restored = load_with_key(locked_model, key=OwnershipKey.load(tmp_path / "k.json"))
    assert _state_equal(restored, tiny_model)


# --------------------------------------------------------------------------- distribution: structurally edited copies


def _locked_with_reference(*, reference_of: str = "locked", random_bn: bool = True):
    """A cifar_resnet8 ticket (non-trivial batch norms), its locked copy and a key with a reference section."""
    from hf_lottery_verify.alignment import with_reference

    full = make_model(density=0.2)
    if random_bn:
        gen = torch.Generator().manual_seed(1)
        for module in full.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.data = 0.5 + torch.rand(n, generator=gen)
                module.bias.data = 0.2 * torch.randn(n, generator=gen)
                module.running_mean.data = 0.2 * torch.randn(n, generator=gen)
                module.running_var.data = 0.5 + torch.rand(n, generator=gen)
    full.eval()
    locked, key = km.lock_model(full, ratio=0.1, score="omp")
    key = with_reference(key, locked if reference_of == "locked" else full)
    return full, locked, key


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x).logits


@pytest.mark.parametrize("reference_of", ["locked", "full"])
@pytest.mark.parametrize("random_bn", [True, False])
def test_load_with_key_restores_a_permuted_rescaled_locked_ticket(reference_of: str, random_bn: bool) -> None:
    from hf_lottery_verify.attacks.structural import permute_channels, rescale_channels

    full, locked, key = _locked_with_reference(reference_of=reference_of, random_bn=random_bn)
    stolen = rescale_channels(permute_channels(locked, seed=1), seed=2)
    restored = load_with_key(stolen, key=key)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    want = _logits(full, x)
    assert float((_logits(restored, x) - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))
    assert all(torch.equal(restored.masks[n], full.masks[n]) for n in full.masks)
    assert restored.alignment.permuted and restored.alignment.rescaled
    # Without the reference the edited copy does not fit, as before.
    plain = OwnershipKey(arch=key.arch, sections={"keymask": key.sections["keymask"]},
                         tensors={k: v for k, v in key.tensors.items() if k.startswith("keymask.")})
    with pytest.raises(KeyMismatchError, match="overlaps|digest"):
        load_with_key(stolen, key=plain)


def test_load_with_key_restores_a_widened_copy_from_a_folder(tmp_path) -> None:
    from hf_lottery_verify.attacks.structural import add_dummy_channels, permute_channels, rescale_channels

    full, locked, key = _locked_with_reference()
    key.save(tmp_path / "key.json")
    stolen = add_dummy_channels(rescale_channels(permute_channels(locked, seed=3), seed=4), seed=5, per_space=2)
    stolen.save_pretrained(tmp_path / "stolen")
    with pytest.raises(hlv.ShapeMismatchError):
        hlv.load_model(tmp_path / "stolen")  # the widened copy does not load as the architecture
    restored = load_with_key(tmp_path / "stolen", key=tmp_path / "key.json")
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert float((_logits(restored, x) - _logits(full, x)).abs().max()) <= 1e-4
    assert restored.alignment.widened


def test_load_with_key_keeps_its_behaviour_for_the_unmodified_copy() -> None:
    full, locked, key = _locked_with_reference()
    restored = load_with_key(locked, key=key)
    assert _state_equal(restored, full)  # bit-exact, no alignment needed
    assert not hasattr(restored, "alignment")
    with pytest.raises(KeyMismatchError, match="overlaps"):
        load_with_key(full, key=key)  # the full ticket is not the locked one, also after alignment
    other = make_model(density=0.2, seed=7)
    with pytest.raises(KeyMismatchError, match="digest|overlaps"):
        load_with_key(other, key=key)  # an unrelated model: the merged masks are not the ticket's
    with pytest.raises(KeyMismatchError, match="cifar_resnet20"):
        load_with_key(make_model("cifar_resnet20", density=0.2), key=key)


# --------------------------------------------------------------------------- fidelity (Figure 2 arms)


@pytest.fixture
def one_thread():
    """Tiny CPU trainings: one intra-op thread. With two, a busy 2-core machine makes OpenMP threads wait on each
    other and these tests run ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fidelity_setup():
    from .helpers import tiny_data, tiny_train_config

    ticket = make_model(num_labels=4, density=0.2)
    rewind = make_model(num_labels=4)  # the same initialisation, dense: W_k with k = 0
    return ticket, rewind, tiny_data(), tiny_train_config()


def test_keymask_fidelity_runs_consistent_and_seeded(one_thread) -> None:
    ticket, rewind, data, config = _fidelity_setup()
    before = {n: p.detach().clone() for n, p in rewind.timm_parameters().items()}
    report = workflows.keymask_fidelity(ticket, rewind, data=data, train_config=config, rewind_epoch=1, ratio=0.2,
                                 score="omp", seed=3)
    kept = count_kept(ticket.masks)
    assert report.score == "omp" and report.ratio == 0.2 and report.seed == 3
    assert report.n == round(0.2 * kept) and report.kept == kept
    assert report.n / report.kept == pytest.approx(0.2, abs=1e-3)
    assert report.density_full == pytest.approx(ticket.density)
    assert report.density_locked == pytest.approx((report.kept - report.n) / report.masked_weights)
    assert report.locked_drop == pytest.approx(report.full_accuracy - report.locked_accuracy)
    assert len(report.fake_accuracies) == 1 and report.fake_drop == pytest.approx(
        report.full_accuracy - report.fake_accuracies[0])
    assert report.test_count == len(data.test) and not report.full_accuracy_reused
    assert set(report.seconds) == {"evaluate", "full", "locked", "fake1[0]"}
    for acc in (report.ticket_accuracy, report.locked_ticket_accuracy, report.full_accuracy, report.locked_accuracy):
        assert 0.0 <= acc <= 100.0
    d = json.loads(json.dumps(report.to_dict()))
    assert d["locked_drop"] == report.locked_drop and d["n"] == report.n
    assert all(torch.equal(before[n], p.detach()) for n, p in rewind.timm_parameters().items())  # rewind untouched
    assert ticket.density == pytest.approx(report.density_full)  # ticket untouched
    again = workflows.keymask_fidelity(ticket, rewind, data=data, train_config=config, rewind_epoch=1, ratio=0.2,
                                score="omp", seed=3)
    strip = lambda r: {k: v for k, v in r.to_dict().items() if k != "seconds"}  # noqa: E731
    assert strip(again) == strip(report)


def test_keymask_fidelity_arms_get_the_right_masks(monkeypatch, one_thread) -> None:
    ticket, rewind, data, config = _fidelity_setup()
    seen = []

    def fake_retrain(rewind_model, masks, data_pair, *, train_config, rewind_epoch, **kwargs):
        seen.append(({n: m.clone() for n, m in masks.items()}, train_config, rewind_epoch))
        return rewind_model, {"accuracy": 50.0 + len(seen), "loss": 1.0, "count": len(data_pair.test)}

    monkeypatch.setattr(workflows.fidelity, "retrain_from_rewind", fake_retrain)
    key, locked = km.split_key_mask(ticket, ratio=0.1, score="random", seed=2)
    report = workflows.keymask_fidelity(ticket, rewind, data=data, train_config=config, rewind_epoch=2, key_masks=key,
                                 fake_trials=2)
    assert report.score is None and report.ratio is None and report.n == count_kept(key)
    full_arm, locked_arm, fake_a, fake_b = (s[0] for s in seen)
    assert all(cfg is config and k == 2 for _, cfg, k in seen)
    assert all(torch.equal(full_arm[n], ticket.masks[n]) for n in key)
    assert all(torch.equal(locked_arm[n], locked[n]) for n in key)
    for fake in (fake_a, fake_b):
        assert count_kept(fake) == count_kept(ticket.masks)  # same size as M: M_l plus n random entries
        assert all(bool((fake[n] | ~locked[n]).all()) for n in key)  # contains M_l
    assert any(not torch.equal(fake_a[n], fake_b[n]) for n in key)
    assert (report.full_accuracy, report.locked_accuracy, report.fake_accuracies) == (51.0, 52.0, [53.0, 54.0])
    # The with-key accuracy is reused.
    seen.clear()
    again = workflows.keymask_fidelity(ticket, rewind, data=data, train_config=config, rewind_epoch=2, key_masks=key,
                                fake_trials=0, full_accuracy=80.0)
    assert len(seen) == 1 and all(torch.equal(seen[0][0][n], locked[n]) for n in key)
    assert again.full_accuracy_reused and again.full_accuracy == 80.0 and again.n == report.n
    assert again.fake_accuracy is None and again.fake_drop is None


def test_keymask_fidelity_rejects_bad_input(one_thread) -> None:
    ticket, rewind, data, config = _fidelity_setup()
    key, locked = km.split_key_mask(ticket, ratio=0.1)
    common = dict(data=data, train_config=config, rewind_epoch=1)
    with pytest.raises(MaskError, match="not both"):
        workflows.keymask_fidelity(ticket, rewind, key_masks=key, ratio=0.1, **common)
    with pytest.raises(MaskError, match="No split"):
        workflows.keymask_fidelity(ticket, rewind, **common)
    outside = {n: ~ticket.masks[n] for n in key}
    with pytest.raises(MaskError, match="prunes"):
        workflows.keymask_fidelity(ticket, rewind, key_masks=outside, **common)
    with pytest.raises(MaskError, match="other parameters"):
        workflows.keymask_fidelity(ticket, rewind, key_masks=dict(list(key.items())[:1]), **common)
    with pytest.raises(MaskError, match="torch.bool"):
        workflows.keymask_fidelity(ticket, rewind, key_masks={n: m.float() for n, m in key.items()}, **common)
    with pytest.raises(MaskError, match="no masks"):
        workflows.keymask_fidelity(rewind, rewind, ratio=0.1, **common)
    with pytest.raises(ValueError, match="rewind_epoch"):
        workflows.keymask_fidelity(ticket, rewind, ratio=0.1, data=data, train_config=config, rewind_epoch=3)
    with pytest.raises(ValueError, match="fake_trials"):
        workflows.keymask_fidelity(ticket, rewind, ratio=0.1, fake_trials=-1, **common)
    with pytest.raises(DensityError):
        workflows.keymask_fidelity(ticket, rewind, ratio=1.5, **common)


def test_keymask_fidelity_shares_one_trainer_and_matches_standalone_arms(monkeypatch, one_thread) -> None:
    from hf_lottery_verify import data as data_module
    from hf_lottery_verify.training import TrainConfig, TrainingContext, make_accelerator

    compiled, uploads = [], []
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: (compiled.append(module), module)[1])
    real_init = data_module.DeviceData.__init__
    monkeypatch.setattr(data_module.DeviceData, "__init__",
                        lambda self, d, device="cpu": (uploads.append(d), real_init(self, d, device))[1])
    ticket, rewind, data, config = _fidelity_setup()
    config = TrainConfig(**{**config.to_dict(), "compile": True})
    rng = torch.get_rng_state()
    report = workflows.keymask_fidelity(ticket, rewind, data=data, train_config=config, rewind_epoch=1, ratio=0.2,
                                 score="omp", seed=3)
    assert len(compiled) == 1  # three arms, one compiled forward
    assert len(uploads) == 2  # the train and the test split, once each
    assert torch.equal(torch.get_rng_state(), rng)  # no global reseeding
    # the second arm (trained by the reset trainer) equals a standalone retraining
    _, locked = km.split_key_mask(ticket, ratio=0.2, score="omp", seed=3)
    _, alone = workflows.retrain_from_rewind(rewind, locked, data, train_config=config, rewind_epoch=1)
    assert alone["accuracy"] == report.locked_accuracy
    # a sweep shares one context across calls: still one compiled forward, one upload per split
    compiled.clear()
    uploads.clear()
    context, acc = TrainingContext(), make_accelerator(config)
    sweep = [workflows.keymask_fidelity(ticket, rewind, data=data, train_config=config, rewind_epoch=1, ratio=ratio,
                                 score="omp", seed=3, fake_trials=0, full_accuracy=report.full_accuracy,
                                 accelerator=acc, context=context) for ratio in (0.2, 0.1)]
    context.close()
    assert len(compiled) == 1 and len(uploads) == 2
    assert sweep[0].locked_accuracy == report.locked_accuracy


@pytest.mark.slow
def test_keymask_experiment_example_tiny(tmp_path) -> None:
    """examples/keymask_experiment.py --tiny runs end to end (catches drift between the example and the API)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "keymask_experiment.py"
    proc = subprocess.run([sys.executable, str(script), "--tiny", "--threads", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "keymask_fig2.json").read_text())
    assert report["preset"] == "tiny" and "--tiny" in report["command"]
    assert {r["score"] for r in report["results"]} == set(km.list_scorers())
    assert all(r["full_accuracy"] == report["full_accuracy"] for r in report["results"])
    assert "CPU" in report["machine"]["summary"]
    table = (tmp_path / "keymask_fig2.md").read_text()
    assert "| key ratio | n |" in table and "fake1" in table
