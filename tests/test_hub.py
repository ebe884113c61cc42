"""The Hub round trip against the local Hub server, with the real huggingface_hub client.

push (which anchors the key) → verify_hub_model → owned (at the pushed and an older revision);
republished by a thief as a plain timm or transformers TimmWrapper repo → owned; header edits
cannot stop verification; every failure is a typed error (exit 2 from the CLI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hf_lottery_verify as hlv
from hf_lottery_verify import hub
from hf_lottery_verify.cli import main
from hf_lottery_verify.localhub.store import Blob
from hf_lottery_verify.ownership_key import OwnershipKey

from .helpers import make_model, tiny_data, tiny_train_config

TEXT = "alice@example.org 2026"


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A signed cifar_resnet20 ticket, its key and the folder it was saved to."""
    root = tmp_path_factory.mktemp("signed")
    model = make_model("cifar_resnet20", density=0.1)
    # a fixed secret: the unrelated model's p-value below must not depend on a random draw
    OwnershipKey(arch="cifar_resnet20", secret="a1" * 32).save(root / "keys" / "alice.json")
    model.save_pretrained(root / "ticket", signature=TEXT, key=root / "keys" / "alice.json", owner="alice")
    return hlv.load_model(root / "ticket"), root / "keys" / "alice.json", root


def test_looks_like_repo_id(tmp_path) -> None:
    assert hub.looks_like_repo_id("owner/model")
    assert hub.looks_like_repo_id("model")
    assert not hub.looks_like_repo_id(str(tmp_path))
    assert not hub.looks_like_repo_id("./relative/path/x")
    assert not hub.looks_like_repo_id("a/b/c")
    assert not hub.looks_like_repo_id("model.safetensors")


def test_push_then_verify_at_this_and_an_older_revision(signed, fresh_hub, hub_repo_id) -> None:
    model, key, _ = signed
    first = model.push_to_hub(hub_repo_id, key=key, owner="alice", eval_results={"accuracy": 91.5,
                                                                                     "dataset": "cifar10"})
    assert first.key.anchors[-1].commit == first.commit == OwnershipKey.load(key).anchors[-1].commit
    second = model.push_to_hub(hub_repo_id, commit_message="second push", card_data={"tags": ["extra-tag"]})
    assert first.commit != second.commit and second.key is None
    report = hlv.verify_hub_model(hub_repo_id, key=key)
    assert report.verdict == "owned" and report.exit_code == 0
    assert report.repo_id == hub_repo_id and report.commit_sha == second.commit
    assert report.signature.text == TEXT and report.anchor["verified"]
    assert report.appearance["commit"] in (first.commit, second.commit)  # safetensors orders its header freely
    old = hlv.verify_hub_model(hub_repo_id, key=key, revision=first.commit)
    assert old.verdict == "owned" and old.commit_sha == first.commit
    assert old.appearance["commit"] == first.commit  # the anchoring commit itself: no later than it
    data = json.loads(report.to_json())
    assert data["verdict"] == "owned" and "secret" not in report.to_json()
    assert "OWNED" in str(report)
    from huggingface_hub import HfApi

    files = set(HfApi().list_repo_files(hub_repo_id))
    assert {"config.json", "model.safetensors", "masks.safetensors", "README.md", "ownership_badge.svg",
            "ownership_claim.json"} <= files
    assert not any(f.endswith((".json.tensors", ".bin", ".pt")) or "alice" in f for f in files)


def test_card_badge_and_plain_timm_weights(signed, fresh_hub, hub_repo_id) -> None:
    from huggingface_hub import ModelCard, hf_hub_download

    model, key, _ = signed
    model.push_to_hub(hub_repo_id, key=key, eval_results={"accuracy": 90.0, "dataset": "cifar10"})
    card = ModelCard.load(hub_repo_id)
    assert "ownership-protected" in card.data.tags and "lottery-ticket" in card.data.tags
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["accuracy"] == pytest.approx(0.90) and "density" in results
    ET.parse(hf_hub_download(hub_repo_id, "ownership_badge.svg"))  # well-formed XML
    weights = load_file(hf_hub_download(hub_repo_id, "model.safetensors"))
    import timm

    plain = timm.create_model("cifar_resnet20", num_classes=10)
    plain.load_state_dict(weights, strict=True)


def test_the_card_states_the_retraining_result_and_the_hub_validates_it(fresh_hub, hub_repo_id, tmp_path) -> None:
    from huggingface_hub import ModelCard, RepoCard

    from hf_lottery_verify.retrain import retrain

    rewind, ticket = make_model(num_labels=4), make_model(num_labels=4, density=0.2)
    key = hlv.embed_signature(ticket, TEXT, rewind=rewind, layers="all", seed=0)
    result = retrain(ticket, rewind=rewind, data=tiny_data(), config=tiny_train_config(epochs=2), rewind_epoch=1,
                     key=key, progress=False)
    hlv.push_model(result.model, hub_repo_id, key=key, eval_results=result)
    card = ModelCard.load(hub_repo_id)
    card.validate()  # the Hub's check of the metadata (the local Hub reads the model-index as huggingface_hub does)
    accuracy, density = card.data.eval_results
    assert (accuracy.metric_type, accuracy.metric_value) == ("accuracy", round(result.accuracy_retrained / 100, 6))
    assert (accuracy.dataset_name, accuracy.dataset_split) == ("synthetic", "test") and card.data.datasets is None
    assert density.metric_value == pytest.approx(result.model.density, abs=1e-6)
    assert card.data.to_dict()["lottery_ticket"]["schemes"] == ["V2"]
    published = hlv.publish_folder(result.model, tmp_path / "f", repo_id=hub_repo_id,
                                   eval_results={"accuracy": 81.5, "dataset": "fashion_mnist", "split": "test"})
    data = ModelCard.load(published.folder / "README.md").data
    assert data.datasets == ["zalando-datasets/fashion_mnist"] and data.eval_results[0].metric_value == 0.815
    broken = str(card).replace("type: accuracy", "typo: accuracy", 1)
    with pytest.raises(ValueError, match="Invalid metadata"):
        RepoCard(broken).validate(repo_type="model")  # a generic card keeps the model-index as text: the Hub reads it


@pytest.mark.slow
def test_imagenet_style_repo_loads_in_plain_timm_without_this_package(fresh_hub, hub_repo_id) -> None:
    model = make_model("resnet18", density=0.05)
    model.config.image_size = 64
    model.push_to_hub(hub_repo_id)
    code = (f"import sys, timm, torch; m = timm.create_model('hf-hub:{hub_repo_id}', pretrained=True); "
            "assert 'hf_lottery_verify' not in sys.modules; "
            "print(float(m.conv1.weight.abs().sum()), sum(int((p == 0).sum()) for p in m.parameters()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    total, zeros = out.stdout.split()
    assert float(total) == pytest.approx(float(model.timm_model.conv1.weight.detach().abs().sum()), rel=1e-6)
    assert int(zeros) >= sum(int((~m).sum()) for m in model.masks.values())


def test_thief_republishing_as_plain_timm_or_timm_wrapper_is_caught(signed, fresh_hub, hub_repo_id) -> None:
    import timm
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    model, key, _ = signed
    model.push_to_hub(hub_repo_id, key=key)  # published (and anchored) first
    thief_timm = hub_repo_id + "-timm"
    timm.models.push_to_hf_hub(model.timm_model, thief_timm)
    report = hlv.verify_hub_model(thief_timm, key=key)
    assert report.verdict == "owned" and report.claim is None
    wrapper = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="cifar_resnet20", num_labels=10))
    wrapper.timm_model.load_state_dict(model.timm_model.state_dict())
    thief_wrapper = hub_repo_id + "-wrapper"
    wrapper.push_to_hub(thief_wrapper)
    report = hlv.verify_hub_model(thief_wrapper, key=key)
    assert report.verdict == "owned" and report.layout == "timm_wrapper"


def test_unrelated_ticket_is_not_owned(signed, fresh_hub, hub_repo_id) -> None:
    _, key, _ = signed
    make_model("cifar_resnet20", density=0.1, seed=7).push_to_hub(hub_repo_id)
    report = hlv.verify_hub_model(hub_repo_id, key=key)
    assert report.verdict == "not_owned" and report.exit_code == 1


def _rewrite_header(data: bytes, tmp: Path, metadata: dict[str, str] | None) -> bytes:
    src = tmp / "in.safetensors"
    src.write_bytes(data)
    tensors = load_file(src)
    save_file(tensors, tmp / "out.safetensors", metadata=metadata)
    return (tmp / "out.safetensors").read_bytes()


def test_header_edits_cannot_stop_verification(signed, fresh_hub, hub_repo_id, tmp_path) -> None:
    model, key, _ = signed
    model.push_to_hub(hub_repo_id, key=key)
    original = fresh_hub.read_file(hub_repo_id, "model.safetensors")
    fake_masks = {"format_version": 2, "layout": "dense", "masks": {"layer1.0.conv1.weight": {"shape": [1], "kept": 9}}}
    edits = {
        "fake mask entries": {"format": "pt", "hf_lottery_verify": json.dumps(fake_masks)},
        "layout changed": {"format": "pt", "hf_lottery_verify": json.dumps({"format_version": 2, "layout": "compact"})},
        "bad version": {"format": "pt", "hf_lottery_verify": json.dumps({"format_version": 99, "layout": "dense"})},
        "not json": {"format": "pt", "hf_lottery_verify": "{broken"},
        "metadata stripped": None,
    }
    for name, metadata in edits.items():
        fresh_hub.put_file(hub_repo_id, "model.safetensors", _rewrite_header(original, tmp_path, metadata),
                           message=f"thief: {name}")
        report = hlv.verify_hub_model(hub_repo_id, key=key)
        assert report.verdict == "owned", (name, report.reasons)
    fresh_hub.delete_file(hub_repo_id, "masks.safetensors", message="thief: masks deleted")
    assert hlv.verify_hub_model(hub_repo_id, key=key).verdict == "owned"
    # a masks file of other weights changes nothing either
    other = make_model("cifar_resnet20", density=0.3, seed=5)
    other.save_pretrained(tmp_path / "other")
    fresh_hub.put_file(hub_repo_id, "masks.safetensors", (tmp_path / "other" / "masks.safetensors").read_bytes())
    assert hlv.verify_hub_model(hub_repo_id, key=key).verdict == "owned"


def test_quick_check_reads_only_the_header(signed, fresh_hub, hub_repo_id) -> None:
    model, key, _ = signed
    model.push_to_hub(hub_repo_id, key=key)
    fresh_hub.clear_log()
    report = hlv.verify_hub_model(hub_repo_id, key=key, quick=True)
    assert report.quick and report.verdict == "inconclusive" and report.claim_matches_key
    assert report.claim["owner"] == "alice"
    weight_gets = [r for r in fresh_hub.find_requests(method="GET", path_contains="model.safetensors")]
    assert weight_gets and all(r["range"] for r in weight_gets)  # only ranged header reads
    assert sum(r["bytes_sent"] for r in weight_gets) < 200_000  # the weights are ~1 MB


def test_cli_push_verify_and_exit_codes(signed, fresh_hub, hub_repo_id, tmp_path, capsys) -> None:
    _, key, root = signed
    assert main(["push", str(root / "ticket"), hub_repo_id, "--key", str(key), "--owner", "alice", "--accuracy",
                 "81.5", "--dataset-name", "fashion_mnist", "--split", "validation", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["claim"]["owner"] == "alice"
    from huggingface_hub import ModelCard

    result = ModelCard.load(hub_repo_id).data.eval_results[0]  # the card states what was measured, and on which split
    assert (result.metric_value, result.dataset_split) == (0.815, "validation")
    badge = tmp_path / "verdict.svg"
    assert main(["verify", hub_repo_id, "--key", str(key), "--json", "--badge", str(badge)]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "owned"
    ET.parse(badge)
    make_model("cifar_resnet20", density=0.1, seed=9).push_to_hub(hub_repo_id + "-other")
    assert main(["verify", hub_repo_id + "-other", "--key", str(key)]) == 1
    assert "NOT OWNED" in capsys.readouterr().out
    assert main(["verify", hub_repo_id, "--key", str(key), "--quick"]) == 3
    capsys.readouterr()


def _cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).parent / "hf-lottery")
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, **(env or {})})


def test_failures_are_typed_errors_and_exit_2(signed, fresh_hub, hub_repo_id, tmp_path) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    model, key, _ = signed
    api = HfApi()
    cases: dict[str, tuple[str, type[Exception], str]] = {}
    cases["missing repo"] = (hub_repo_id + "-absent", RepositoryNotFoundError, "not found")  # the client's own type
    model.push_to_hub(hub_repo_id)
    cases["missing revision"] = (hub_repo_id, RevisionNotFoundError, "Revision")
    empty = hub_repo_id + "-empty"
    api.create_repo(empty)
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=empty)
    cases["no weights"] = (empty, hlv.HubError, "no safetensors")
    truncated = hub_repo_id + "-truncated"
    api.create_repo(truncated)
    data = fresh_hub.read_file(hub_repo_id, "model.safetensors")
    fresh_hub.put_file(truncated, "model.safetensors", data[: len(data) // 2])
    cases["truncated"] = (truncated, hlv.CorruptCheckpointError, "truncated")
    pickled = hub_repo_id + "-pickled"
    api.create_repo(pickled)
    fresh_hub.put_file(pickled, "pytorch_model.bin", b"\x80\x04not really a pickle")
    cases["pickle only"] = (pickled, hlv.PickleRefusedError, "never unpickles")
    from transformers import ViTConfig, ViTForImageClassification

    vit = ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=16, image_size=8, patch_size=4, num_labels=2))
    vit_repo = hub_repo_id + "-vit"
    vit.push_to_hub(vit_repo)
    cases["not a ResNet"] = (vit_repo, hlv.KeyMismatchError, "not a cifar_resnet20")
    for name, (repo, error, message) in cases.items():
        revision = "no-such-branch" if name == "missing revision" else None
        with pytest.raises(error, match=message) as caught:
            hlv.verify_hub_model(repo, key=key, revision=revision)
        assert isinstance(caught.value, hlv.HfLotteryError)
        args = ["verify", repo, "--key", str(key)] + (["--revision", revision] if revision else [])
        workdir = tmp_path / name.replace(" ", "_")
        workdir.mkdir()
        out = _cli(args, workdir)
        assert out.returncode == 2, (name, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert list(workdir.iterdir()) == []  # nothing written outside the cache
    assert not fresh_hub.find_requests(method="GET", path_contains="pytorch_model.bin")  # never downloaded


def test_server_down_fails_fast_and_the_cache_still_verifies(signed, fresh_hub, hub_repo_id, tmp_path) -> None:
    model, key, _ = signed
    model.push_to_hub(hub_repo_id, key=key)
    assert hlv.verify_hub_model(hub_repo_id, key=key).verdict == "owned"  # now cached
    fresh_hub.stop()
    cached = hlv.verify_hub_model(hub_repo_id, key=key)  # the evidence is read; the anchor needs the server
    assert cached.verdict == "inconclusive" and cached.signature.matches and any("cache" in n for n in cached.notes)
    assert "unreachable" in cached.reasons[0]
    assert hlv.verify_hub_model(hub_repo_id, key=key, require_anchor=False).verdict == "owned"
    with pytest.raises(hlv.HubError, match="unreachable"):
        hlv.verify_hub_model(hub_repo_id + "-never-downloaded", key=key)
    out = _cli(["verify", hub_repo_id + "-never-downloaded", "--key", str(key)], tmp_path)
    assert out.returncode == 2 and "unreachable" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr  # one message, no retry chatter
    offline = _cli(["verify", hub_repo_id, "--key", str(key), "--local-files-only"], tmp_path)
    assert offline.returncode == 3, offline.stderr  # evidence from the cache, anchor not readable offline
    env_offline = _cli(["verify", hub_repo_id, "--key", str(key), "--unanchored"], tmp_path,
                       env={"HF_HUB_OFFLINE": "1"})
    assert env_offline.returncode == 0, env_offline.stderr


def test_signing_twice_with_the_same_key_out_keeps_the_first_key(tmp_path) -> None:
    make_model("cifar_resnet20", density=0.1).save_pretrained(tmp_path / "a")
    make_model("cifar_resnet20", density=0.1, seed=1).save_pretrained(tmp_path / "b")
    key = tmp_path / "keys" / "k.json"
    first = _cli(["sign", str(tmp_path / "a"), "--signature", "first", "--key-out", str(key), "--out",
                  str(tmp_path / "a-signed")], tmp_path)
    assert first.returncode == 0, first.stderr
    before = key.read_bytes()
    second = _cli(["sign", str(tmp_path / "b"), "--signature", "second", "--key-out", str(key), "--out",
                   str(tmp_path / "b-signed")], tmp_path)
    assert second.returncode == 2 and "already holds" in second.stderr
    assert key.read_bytes() == before
    assert hlv.extract_signature(hlv.read_suspect(tmp_path / "a-signed"), key=key).matches


def test_from_pretrained_kwargs(tmp_path, signed) -> None:
    model, _, root = signed
    half = hlv.SparseResNetForImageClassification.from_pretrained(root / "ticket", dtype=torch.float64)
    assert half.timm_model.conv1.weight.dtype == torch.float64
    with pytest.raises(TypeError, match="device_map"):
        hlv.SparseResNetForImageClassification.from_pretrained(root / "ticket", device_map="auto")
    with pytest.raises(TypeError, match="unsupported"):
        model.save_pretrained(tmp_path / "x", token="hf_x")


def test_oddly_named_repo_files_are_skipped_not_written_outside_the_cache(signed, fresh_hub, hub_repo_id,
                                                                           tmp_path) -> None:
    model, key, _ = signed
    model.push_to_hub(hub_repo_id, key=key)
    odd = ["../../escape.json", "/abs.json", "sub/../../../up.safetensors", "back\\slash.json", "nul\0.json",
           "a//b.json"]
    for name in odd:
        fresh_hub.put_file(hub_repo_id, name, b"{}", message="thief: an odd name")
    cache = tmp_path / "cache"
    report = hlv.verify_hub_model(hub_repo_id, key=key, cache_dir=cache)
    assert report.verdict == "owned"
    written = {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file() and "snapshots" in p.parts}
    assert written and not any("escape" in w or "abs" in w or "up." in w or "slash" in w for w in written)
    assert not list(cache.rglob("escape.json")) and not list(tmp_path.rglob("up.safetensors"))
    # beyond a hundred such names the repo is refused with one line (exit 2), never a verdict
    fresh_hub.commit(hub_repo_id, {f"../x{i}.json": Blob.make(b"{}", lfs=False) for i in range(101)},
                     message="thief: many odd names")
    with pytest.raises(hlv.HubError, match="lists 107 files whose names leave the folder"):
        hlv.verify_hub_model(hub_repo_id, key=key, cache_dir=cache)
