from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hf_lottery_verify as hlv
from hf_lottery_verify.cli import build_parser, main


def test_version_and_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hf-lottery {hlv.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "demo" in capsys.readouterr().out


def test_every_subcommand_has_help(capsys) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices, "no subcommands registered"
    for name in sub.choices:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "usage: hf-lottery" in capsys.readouterr().out


def test_demo_json_report(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--arch", "cifar_resnet8", "--density", "0.1", "--out", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prune"]["density"] == pytest.approx(0.1, abs=1e-4)
    assert report["save_dense"]["reloaded_bit_exact"] and report["save_compact"]["reloaded_bit_exact"]
    assert report["reloaded_outputs_identical"]
    assert (tmp_path / "cifar_resnet8-compact" / "model.safetensors").is_file()


def test_library_errors_become_exit_code_2(capsys) -> None:
    assert main(["demo", "--arch", "not_a_model"]) == 2
    assert "Unknown architecture" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    exe = shutil.which("hf-lottery") or str(Path(sys.executable).parent / "hf-lottery")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("hf-lottery ")
