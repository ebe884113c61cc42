"""Channel graph of timm ResNets (hf_lottery_verify.keymask.graph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from hf_lottery_verify.architectures import CifarResNet
from hf_lottery_verify.errors import MaskError, UnsupportedArchitectureError
from hf_lottery_verify.keymask.graph import (
    EDGE_ADD,
    EDGE_IDENTITY,
    EDGE_WEIGHT,
    ChannelGraph,
    build_channel_graph,
)

from .helpers import make_model


def _check_invariants(graph: ChannelGraph) -> None:
    n = graph.num_edges
    for arr in (graph.dst, graph.weight, graph.param, graph.out_channel, graph.in_channel, graph.kind):
        assert arr.shape == (n,)
    assert graph.point_offsets[-1] == graph.num_nodes
    # Nodes are numbered in forward order: every edge points forward (a topological order).
    assert bool((graph.src < graph.dst).all())
    assert bool((graph.src >= 0).all()) and bool((graph.dst < graph.num_nodes).all())
    weight_edges = graph.kind == EDGE_WEIGHT
    assert bool((graph.param[weight_edges] >= 0).all()) and bool((graph.param[~weight_edges] == -1).all())
    assert bool((graph.weight[~weight_edges] == 1.0).all())
    g = graph.to_igraph()
    assert g.vcount() == graph.num_nodes and g.ecount() == n and g.is_dag() and g.is_directed()
    e = n // 2
    assert g.es[e].tuple == (graph.src[e], graph.dst[e])


def test_dense_cifar_resnet8_nodes_and_edges() -> None:
    model = make_model("cifar_resnet8")
    graph = build_channel_graph(model)
    _check_invariants(graph)
    assert graph.point_names == (
        "input", "conv1",
        "layer1.0.conv1", "layer1.0.conv2", "layer1.0",
        "layer2.0.conv1", "layer2.0.conv2", "layer2.0",
        "layer3.0.conv1", "layer3.0.conv2", "layer3.0",
    )
    assert graph.num_nodes == 3 + 16 + 3 * 16 + 3 * 32 + 3 * 64
    kernels = 16 * 3 + (16 * 16 * 2) + (32 * 16 + 32 * 32 + 32 * 16) + (64 * 32 + 64 * 64 + 64 * 32)
    assert int((graph.kind == EDGE_WEIGHT).sum()) == kernels
    assert int((graph.kind == EDGE_IDENTITY).sum()) == 16  # only layer1.0 has an identity shortcut
    assert int((graph.kind == EDGE_ADD).sum()) == 16 + 32 + 64
    assert graph.param_names[0] == "conv1.weight"
    assert "layer2.0.downsample.0.weight" in graph.param_names and "fc.weight" not in graph.param_names


def test_follows_forward_graph_with_shortcuts() -> None:
    graph = build_channel_graph(make_model("cifar_resnet8"))
    stem, l1, l2 = graph.nodes_of("conv1"), graph.nodes_of("layer1.0"), graph.nodes_of("layer2.0")
    ident = graph.kind == EDGE_IDENTITY
    assert set(graph.src[ident]) == set(stem) and set(graph.dst[ident]) == set(l1)
    np.testing.assert_array_equal(graph.src[ident] - stem[0], graph.dst[ident] - l1[0])  # c -> c
    ds = graph.edges_of("layer2.0.downsample.0.weight")
    assert ds.size == 32 * 16
    assert set(graph.src[ds]) == set(l1) and set(graph.dst[ds]) == set(l2)  # skips the residual branch
    c1 = graph.edges_of("layer2.0.conv1.weight")
    assert set(graph.src[c1]) == set(l1)  # the next block reads the output *after* the residual add
    add = (graph.kind == EDGE_ADD) & np.isin(graph.dst, l2)
    assert set(graph.src[add]) == set(graph.nodes_of("layer2.0.conv2"))


def test_no_edge_for_fully_pruned_kernels() -> None:
    model = make_model("cifar_resnet8")
    name = "layer1.0.conv1.weight"
    w = model.timm_parameters()[name].detach()
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask[3, 5, 0, 1] = True  # one kept weight in kernel (3, 5)
    mask[3, 6] = True  # a full kernel (3, 6)
    mask[7, 0, 2, 2] = True
    graph = build_channel_graph(model, {name: mask})
    e = graph.edges_of(name)
    got = sorted(zip(graph.out_channel[e].tolist(), graph.in_channel[e].tolist(), strict=True))
    assert got == [(3, 5), (3, 6), (7, 0)]
    weights = dict(zip(zip(graph.out_channel[e].tolist(), graph.in_channel[e].tolist(), strict=True),
                       graph.weight[e].tolist(), strict=True))
    assert weights[(3, 5)] == pytest.approx(abs(float(w[3, 5, 0, 1])))
    assert weights[(3, 6)] == pytest.approx(float(w[3, 6].abs().sum()))
    # Fully pruned parameter: no edges at all, but the nodes stay.
    graph = build_channel_graph(model, {name: torch.zeros_like(mask)})
    assert graph.edges_of(name).size == 0 and graph.nodes_of("layer1.0.conv1").size == 16


def test_masked_ticket_edges_match_squeezed_masks(tiny_model) -> None:
    graph = build_channel_graph(tiny_model)
    _check_invariants(graph)
    params = tiny_model.timm_parameters()
    for name, mask in tiny_model.masks.items():
        e = graph.edges_of(name)
        kept = mask.flatten(2).any(dim=2)
        assert e.size == int(kept.sum())
        sums = (params[name].detach().double().abs() * mask).flatten(2).sum(dim=2)
        np.testing.assert_allclose(graph.weight[e], sums[graph.out_channel[e], graph.in_channel[e]].numpy())


def test_mask_shape_mismatch_raises() -> None:
    model = make_model("cifar_resnet8")
    with pytest.raises(MaskError, match="shape"):
        build_channel_graph(model, {"layer1.0.conv1.weight": torch.ones(2, 2, dtype=torch.bool)})


def test_bottleneck_and_classifier() -> None:
    net = CifarResNet(Bottleneck, (1, 2, 1), channels=(4, 8, 16), num_classes=5)
    graph = build_channel_graph(net, include_classifier=True)
    _check_invariants(graph)
    assert graph.point_names[2:6] == ("layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer1.0")
    assert graph.nodes_of("layer1.0").size == 16 and graph.nodes_of("fc").size == 5
    assert "layer1.0.downsample.0.weight" in graph.param_names  # 4 -> 16 channels: a conv shortcut
    ident = graph.kind == EDGE_IDENTITY
    assert set(graph.dst[ident]) == set(graph.nodes_of("layer2.1"))  # the only identity shortcut
    fc = graph.edges_of("fc.weight")
    assert fc.size == 5 * 64 and set(graph.src[fc]) == set(graph.nodes_of("layer3.0"))


@pytest.mark.parametrize("stem_type", ["", "deep"])
def test_imagenet_stems_and_avg_down(stem_type: str) -> None:
    net = ResNet(BasicBlock, [1, 1, 1, 1], channels=(4, 8, 16, 32), stem_type=stem_type, stem_width=8,
                 avg_down=True, num_classes=3)
    graph = build_channel_graph(net)
    _check_invariants(graph)
    stem = [p for p in graph.point_names if p.startswith("conv1")]
    assert stem == (["conv1.0", "conv1.3", "conv1.6"] if stem_type else ["conv1"])
    assert "layer4.0" in graph.point_names
    assert "layer2.0.downsample.1.weight" in graph.param_names  # the conv after the avg_down pool


def test_non_resnet_is_refused() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="not a ResNet"):
        build_channel_graph(torch.nn.Sequential(torch.nn.Linear(3, 3)))


# --------------------------------------------------------------------------- option A (zero-padding shortcuts)


def test_zero_pad_shortcut_edges() -> None:
    graph = build_channel_graph(make_model("cifar_resnet8_a"))
    _check_invariants(graph)
    assert not any("downsample" in p for p in graph.param_names)
    ident = graph.kind == EDGE_IDENTITY
    stem, l1, l2, l3 = (graph.nodes_of(p) for p in ("conv1", "layer1.0", "layer2.0", "layer3.0"))
    # layer1.0: c -> c; layer2.0: 16 channels c -> c + 8; layer3.0: 32 channels c -> c + 16.
    to_l2 = ident & np.isin(graph.dst, l2)
    assert sorted(graph.src[to_l2] - l1[0]) == list(range(16))
    np.testing.assert_array_equal(graph.dst[to_l2] - l2[0], graph.src[to_l2] - l1[0] + 8)
    np.testing.assert_array_equal(graph.out_channel[to_l2], graph.in_channel[to_l2] + 8)
    to_l3 = ident & np.isin(graph.dst, l3)
    assert int(to_l3.sum()) == 32 and set(graph.dst[to_l3] - l3[0]) == set(range(16, 48))
    assert int(ident.sum()) == 16 + 16 + 32 and set(graph.src[ident & np.isin(graph.dst, l1)]) == set(stem)
    # Padded channels are reached through the residual branch only.
    padded = np.concatenate([l2[:8], l2[24:]])
    assert not np.isin(graph.dst[ident], padded).any()
    assert int((graph.kind == EDGE_ADD).sum()) == 16 + 32 + 64


def test_zero_pad_with_wrong_widths_is_refused() -> None:
    from hf_lottery_verify.architectures import ZeroPadShortcut

    net = make_model("cifar_resnet8_a").timm_model
    net.layer2[0].downsample = ZeroPadShortcut(4)
    with pytest.raises(UnsupportedArchitectureError):
        build_channel_graph(net)


@pytest.mark.parametrize("score", ["omp", "ewp", "betweenness", "random"])
def test_scorers_run_on_the_papers_resnet20(score: str) -> None:
    from hf_lottery_verify import keymask as km

    model = make_model("cifar_resnet20_a", density=0.2)
    scores = km.compute_scores(model, score=score, seed=1)
    assert set(scores) == set(model.masks)
    for name, mask in model.masks.items():
        s = scores[name]
        assert s.dtype == torch.float64 and s.shape == mask.shape and bool(torch.isfinite(s).all())
        if score in ("ewp", "omp"):
            assert bool((s[mask] >= 0).all()) and bool((s[~mask] == 0).all())
    if score == "ewp":  # every surviving input->output path counts: kept weights of the last block score > 0
        assert float(scores["layer3.2.conv2.weight"][model.masks["layer3.2.conv2.weight"]].max()) > 0
    key, locked = km.split_key_mask(model, ratio=0.05, score=score, seed=1)
    assert all(torch.equal(key[n] | locked[n], model.masks[n]) for n in model.masks)
