"""The example and benchmark scripts run (tiny sizes), so they cannot drift from the library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import hf_lottery_verify as hlv

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=True)


TINY = ["--dataset", "synthetic", "--train_limit", "256", "--test_limit", "64", "--epochs", "2", "--batch_size", "32",
        "--pad", "1", "--cpu"]


@pytest.fixture(scope="module")
def found(tmp_path_factory) -> Path:
    """examples/find_ticket.py on tiny synthetic data (the ε check off so that the round is kept)."""
    out = tmp_path_factory.mktemp("examples") / "run"
    done = _run("examples/find_ticket.py", "--arch", "cifar_resnet8", "--out", str(out), "--rewind_epoch", "1",
                "--ratios", "0.5", "--max_rounds", "1", "--epsilon", "100", *TINY)
    assert "ticket" in done.stdout
    assert (out / "ticket" / "model.safetensors").is_file() and (out / "rewind" / "model.safetensors").is_file()
    return out


@pytest.mark.slow
def test_find_then_sign_retrain_push_to_a_local_hub_and_verify(found: Path, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "owner.json"
    out = _run("examples/sign_retrain_push.py", "--run", str(found), "--repo_id", "alice/r8-ticket", "--key_out",
               str(key), "--out", str(tmp_path / "published"), "--signature", "alice 2026", "--triggers", "20",
               "--local_hub", *TINY)
    assert "pushed alice/r8-ticket" in out.stdout and "): owned" in out.stdout  # anchored by the push
    assert key.is_file() and len(hlv.OwnershipKey.load(key).anchors) == 1
    # the folder that was pushed, once the example's Hub is gone: its anchor cannot be read back (exit 3) ...
    res = subprocess.run([sys.executable, "examples/verify_hub_model.py", str(tmp_path / "published"), "--key",
                          str(key), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 3 and json.loads(res.stdout)["verdict"] == "inconclusive"
    # ... and its evidence still verifies as the owner's own check (exit 0)
    res = subprocess.run([sys.executable, "examples/verify_hub_model.py", str(tmp_path / "published"), "--key",
                          str(key), "--json", "--unanchored"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and json.loads(res.stdout)["verdict"] == "owned"
    # the verifier's example on the signed ticket's folder: exit 1 (not owned) on the unsigned ticket
    res = subprocess.run([sys.executable, "examples/verify_hub_model.py", str(found / "ticket"), "--key", str(key),
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and json.loads(res.stdout)["verdict"] == "not_owned"
    res = subprocess.run([sys.executable, "examples/verify_hub_model.py", str(tmp_path / "missing"), "--key",
                          str(key)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_attack_suite_example(tmp_path: Path) -> None:
    from hf_lottery_verify.publishing import publish_folder

    from .helpers import make_model

    model = make_model("cifar_resnet20", density=0.1)
    hlv.embed_signature(model, "alice 2026").save(tmp_path / "key.json")
    publish_folder(model, tmp_path / "signed", repo_id="alice/r20-ticket", key=tmp_path / "key.json")  # + reference
    report = tmp_path / "rows.json"
    out = _run("examples/attack_suite.py", str(tmp_path / "signed"), "--key", str(tmp_path / "key.json"),
               "--dataset", "synthetic", "--test_limit", "32", "--attacks", "permute", "rescale", "--json_out",
               str(report), "--unanchored")  # the owner's own ticket, before publishing it
    rows = json.loads(report.read_text())["rows"]
    assert rows and all(r["verdict"] == "owned" for r in rows)  # function-preserving: the evidence stays
    assert "successful attack settings" in out.stdout


@pytest.mark.slow
def test_reproduce_paper_example(tmp_path: Path) -> None:
    out = tmp_path / "paper"
    _run("examples/reproduce_paper.py", "--out", str(out), "--arch", "cifar_resnet8", "--rewind_epoch", "1",
         "--ratios", "0.5", "--max_rounds", "1", "--epsilon", "100", "--stages", "ticket", "table2", "table5",
         *TINY, timeout=600)
    results = json.loads((out / "paper.json").read_text())
    assert set(results["stages"]) == {"ticket", "table2", "table5"}
    assert results["stages"]["table5"][0]["verdict"] == "owned"  # 10% pruning leaves the QR readable
    assert "Table 5" in (out / "paper.md").read_text()


def test_storage_size_benchmark(tmp_path: Path) -> None:
    out = _run("bench/storage_size.py", "--arch", "cifar_resnet20", "--json", str(tmp_path / "r.json"))
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["compact_bit_exact"] and result["dense_bit_exact"]
    assert result["compact_file_bytes"] < result["dense_file_bytes"] / 10
    assert "compact / dense" in out.stdout


@pytest.mark.slow
def test_train_throughput_benchmark_tiny(tmp_path: Path) -> None:
    out = _run("bench/train_throughput.py", "--tiny", "--json", str(tmp_path / "t.json"))
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    ratios = [v for k, v in rows[0].items() if k.startswith("ratio_library_") and not k.endswith("_all")]
    assert ratios and all(r > 0 for r in ratios) and "library_plain" in out.stdout
