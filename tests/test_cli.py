from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


@pytest.mark.slow
def test_demo_reduced_runs_end_to_end_on_fashion_mnist(tmp_path: Path, capsys, local_hub) -> None:
    """The README's main command in its CI size: real data, local Hub, three attacks, report folder."""
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "reduced", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["steps"]["verify"]["verdict"] == "owned"
    assert report["steps"]["publish"]["mode"] == "local hub"
    assert len(report["steps"]["attacks"]) == 3 and all(r["verdict"] == "owned" for r in report["steps"]["attacks"])
    assert report["steps"]["keymask"]["accuracy_with_key"] >= report["steps"]["keymask"]["accuracy_locked"]
    for name in ("report.json", "summary.md", "README.md", "ownership_badge.svg", "imp_accuracy_vs_density.png",
                 "attack_strength.png"):
        assert (out / name).is_file(), name
    assert (out / "imp_accuracy_vs_density.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "owned" in (out / "summary.md").read_text()
    assert not list(out.glob("README*")) or "owner.key" not in (out / "README.md").read_text()
    # a second run with the same --out resumes: the ticket and the signed model are reused
    assert main(["demo", "--preset", "reduced", "--out", str(out), "--hub", "folder", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["steps"]["ticket"] == report["steps"]["ticket"] | {"seconds": again["steps"]["ticket"]["seconds"]}
    assert again["steps"]["publish"]["mode"] == "folder" and again["ok"]


def test_library_errors_become_exit_code_2(capsys) -> None:
    assert main(["demo", "--arch", "not_a_model"]) == 2
    assert "Unknown architecture" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    exe = shutil.which("hf-lottery") or str(Path(sys.executable).parent / "hf-lottery")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("hf-lottery ")


def test_find_ticket_command(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["find-ticket", "--arch", "cifar_resnet8", "--dataset", "synthetic", "--train-limit", "512",
            "--test-limit", "100", "--out", str(out), "--epochs", "2", "--rewind-epoch", "1", "--batch-size", "32",
            "--schedule", "onecycle", "--ratios", "0.5", "0.2", "--max-rounds", "1", "--pad", "1", "--cpu", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rounds"][0]["kind"] == "dense" and len(report["rounds"]) == 2
    assert report["rounds"][1]["ratio"] == 0.5
    ticket = hlv.load_model(out / "ticket")
    assert ticket.density == pytest.approx(report["ticket_density"], abs=1e-6)
    assert ticket.config.in_chans == 3 and ticket.config.image_size == 16


def test_split_key_command(tmp_path: Path, capsys) -> None:
    from hf_lottery_verify.loading import load_with_key

    from .helpers import make_model

    model = make_model(density=0.2)
    model.save_pretrained(tmp_path / "ticket")
    argv = ["split-key", str(tmp_path / "ticket"), "--ratio", "0.1", "--score", "omp", "--key-out",
            str(tmp_path / "keys" / "owner.json"), "--out", str(tmp_path / "public"), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == round(0.1 * sum(int(m.sum()) for m in model.masks.values()))
    full = load_with_key(tmp_path / "public", key=tmp_path / "keys" / "owner.json")
    assert all(torch.equal(full.masks[n], model.masks[n]) for n in model.masks)
    # the key may not be written into the folder that is published
    bad = ["split-key", str(tmp_path / "ticket"), "--ratio", "0.1", "--key-out",
           str(tmp_path / "public2" / "key.json"), "--out", str(tmp_path / "public2")]
    assert main(bad) == 2
    assert "inside the model folder" in capsys.readouterr().err


def test_sign_then_extract_commands(tmp_path: Path, capsys) -> None:
    from .helpers import make_model

    make_model("cifar_resnet20", density=0.1).save_pretrained(tmp_path / "ticket")
    key = tmp_path / "keys" / "owner.json"
    argv = ["sign", str(tmp_path / "ticket"), "--signature", "alice 2026", "--key-out", str(key), "--out",
            str(tmp_path / "signed"), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["copies"] >= 1
    assert set(hlv.OwnershipKey.load(key).signature().widths) == {2}  # auto: a v2 symbol pairs in every stage
    single = tmp_path / "keys" / "single.json"
    assert main(["sign", str(tmp_path / "ticket"), "--signature", "alice 2026", "--key-out", str(single), "--out",
                 str(tmp_path / "signed_single"), "--coding", "single"]) == 0
    assert set(hlv.OwnershipKey.load(single).signature().widths) == {1}
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # argparse: the choices in one line, exit 2
        main(["sign", str(tmp_path / "ticket"), "--signature", "x", "--key-out", str(tmp_path / "k3.json"),
              "--out", str(tmp_path / "s3"), "--coding", "triple"])
    assert info.value.code == 2 and "triple" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "signed"), "--key", str(key), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "alice 2026"
    # the unsigned ticket does not carry the signature: exit 1, not an error
    assert main(["extract", str(tmp_path / "ticket"), "--key", str(key)]) == 1
    capsys.readouterr()
    # an existing key is never overwritten: a second signature is refused with one line
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_attack_list_and_attack_on_a_folder(tmp_path: Path, capsys) -> None:
    from .helpers import make_model

    assert main(["attack", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("prune", "permute", "fake3"))
    make_model("cifar_resnet20", density=0.2).save_pretrained(tmp_path / "ticket")
    argv = ["attack", "prune", str(tmp_path / "ticket"), "--out", str(tmp_path / "pruned"), "--param",
            "fraction=0.5", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["attack"] == "prune"
    assert hlv.load_model(tmp_path / "pruned").density == pytest.approx(0.1, abs=0.01)
    assert main(["attack", "no-such-attack", str(tmp_path / "ticket"), "--out", str(tmp_path / "x")]) == 2
    assert "no-such-attack" in capsys.readouterr().err
    assert main(["attack", "prune", str(tmp_path / "ticket"), "--out", str(tmp_path / "y"), "--param", "oops"]) == 2
    assert main(["attack", "prune", str(tmp_path / "ticket")]) == 2  # no --out
    assert "--out" in capsys.readouterr().err


def test_calibrate_command_reports_no_false_owned(tmp_path: Path, capsys) -> None:
    from hf_lottery_verify.signature import embed_signature

    from .helpers import make_model

    model = make_model("cifar_resnet20", density=0.1)
    embed_signature(model, "alice 2026", key=hlv.OwnershipKey(arch="cifar_resnet20", secret="00" * 32)).save(
        tmp_path / "owner.json")
    argv = ["calibrate", "--key", str(tmp_path / "owner.json"), "--n", "4", "--kinds", "init", "signed_other"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "false 'owned': 0 of 4" in out and "upper bound" in out


def test_split_key_on_a_signed_ticket_keeps_its_signature_readable(tmp_path: Path, capsys) -> None:
    from .helpers import make_model

    make_model("cifar_resnet20", density=0.1).save_pretrained(tmp_path / "ticket")
    key = tmp_path / "keys" / "owner.json"
    assert main(["sign", str(tmp_path / "ticket"), "--signature", "alice 2026", "--key-out", str(key), "--out",
                 str(tmp_path / "signed")]) == 0
    assert main(["split-key", str(tmp_path / "signed"), "--ratio", "0.3", "--key-out", str(key), "--out",
                 str(tmp_path / "locked")]) == 0
    capsys.readouterr()
    assert main(["extract", str(tmp_path / "locked"), "--key", str(key), "--json"]) == 0  # V1 left the QR public
    assert json.loads(capsys.readouterr().out)["text"] == "alice 2026"


def test_an_unexpected_exception_is_an_error_never_a_verdict(tmp_path: Path, capsys, monkeypatch) -> None:
    from hf_lottery_verify.cli import COMMANDS

    key = tmp_path / "key.json"
    assert main(["triggers", "--key", str(key), "--arch", "cifar_resnet8", "--num-classes", "10", "--n", "8"]) == 0
    capsys.readouterr()
    # a malformed endpoint URL used to end in a traceback and exit 1, which reads as "not owned"
    assert main(["verify", "--endpoint", "http://[::1", "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["-v", "verify", "--endpoint", "http://[::1", "--key", str(key)]) == 2
    assert "Traceback" in capsys.readouterr().err  # -v shows where it came from

    def add_boom(sub) -> None:
        p = sub.add_parser("boom")
        p.add_argument("--what", default="memory")

        def crash(args):
            if args.what == "memory":
                raise MemoryError()
            return crash(args) if args.what == "recursion" else {}["line one\nline two"]

        p.set_defaults(handler=crash)

    monkeypatch.setitem(COMMANDS, "boom", add_boom)
    for what, name in (("memory", "MemoryError"), ("recursion", "RecursionError"), ("key", "KeyError")):
        assert main(["boom", "--what", what]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"unexpected {name}" in err and "-v" in err


def test_out_folders_are_not_overwritten_without_overwrite(tmp_path: Path, capsys) -> None:
    from .helpers import make_model

    ticket, busy = tmp_path / "ticket", tmp_path / "busy"
    make_model("cifar_resnet20", density=0.1).save_pretrained(ticket)
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in ticket.iterdir()}
    sign = ["sign", str(ticket), "--signature", "alice 2026", "--key-out", str(tmp_path / "k.json"), "--out"]
    refused = [sign + [str(ticket)], sign + [str(busy)],
               ["split-key", str(ticket), "--ratio", "0.1", "--key-out", str(tmp_path / "k2.json"), "--out",
                str(ticket)],
               ["attack", "prune", str(ticket), "--out", str(busy)],
               ["retrain", str(ticket), "--rewind", str(ticket), "--out", str(ticket), "--dataset", "synthetic"]]
    for argv in refused:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in ticket.iterdir()} == before  # the published model is untouched
    assert main(sign + [str(busy), "--overwrite"]) == 0
    assert (busy / "model.safetensors").is_file() and (busy / "notes.txt").read_text() == "mine"


def test_triggers_refuses_a_path_as_the_architecture_of_a_new_key(tmp_path: Path, capsys) -> None:
    key = tmp_path / "key.json"
    assert main(["triggers", "--key", str(key), "--arch", "../../etc/passwd", "--num-classes", "10"]) == 2
    assert "Unknown architecture" in capsys.readouterr().err and not key.exists()
