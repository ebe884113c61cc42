"""The example and benchmark scripts run (tiny sizes), so they cannot drift from the library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=True)


@pytest.mark.slow
def test_find_ticket_example(tmp_path: Path) -> None:
    out = _run("examples/find_ticket.py", "--arch", "cifar_resnet8", "--dataset", "synthetic", "--train-limit", "256",
               "--test-limit", "64", "--out", str(tmp_path), "--epochs", "2", "--batch-size", "32", "--lr", "0.1",
               "--precision", "fp32", "--max-rounds", "1", "--cpu")
    assert "ticket" in out.stdout
    assert (tmp_path / "ticket" / "model.safetensors").is_file()


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
