"""Property-based fuzzing of what a suspect controls: its safetensors files and its config.json.

Whatever the bytes, reading gives a valid result or a typed ``HfLotteryError`` with a
one-line message — never another exception — through the Python API (``read_safetensors``,
``read_suspect``, ``load_model``, ``verify_model`` with a small key) and through the command
line (exit 2 and one line on stderr; never exit 1 from a crash). Files are built valid and
then broken one way each (a field replaced by any JSON value, a shifted byte range, a random
header, deep nesting, a wrong length prefix, truncation, appended or flipped bytes).
Derandomized, so CI runs the same examples every time; 12-30 s in all on the 2-core CPU machine.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hf_lottery_verify as hlv
from hf_lottery_verify.cli import main
from hf_lottery_verify.storage import read_safetensors

from .helpers import make_model

FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=8)
    | st.integers(-3, 3) | st.sampled_from([-(2**63), 2**32, 2**63 - 1, 2**63, 2**64, 2**64 + 1, 10**30]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
"""Any JSON value, with the integers that break naive shape arithmetic."""
ITEM_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "BOOL": 1}


@st.composite
def safetensors_bytes(draw) -> bytes:
    """A valid safetensors file of up to three small tensors, then broken one way (or not at all)."""
    header: dict = {}
    data = b""
    for i in range(draw(st.integers(0, 3))):
        dtype = draw(st.sampled_from(sorted(ITEM_SIZES)))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        size = math.prod(shape) * ITEM_SIZES[dtype]
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += draw(st.binary(min_size=size, max_size=size))
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=6), JSON | st.text(), max_size=3))
    how = draw(st.sampled_from(["none", "field", "shift", "header", "nest", "length", "truncate", "append", "flip"]))
    names = [n for n in header if n != "__metadata__"]
    if how == "field" and names:
        entry = header[draw(st.sampled_from(names))]
        entry[draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))] = draw(JSON)
    elif how == "shift" and names:
        entry = header[draw(st.sampled_from(names))]
        entry["data_offsets"] = [o + draw(st.integers(-4, 4)) for o in entry["data_offsets"]]
    elif how == "header":
        header = draw(JSON)
    raw = json.dumps(header).encode()
    if how == "nest":
        depth = draw(st.sampled_from([10, 2_000, 100_000]))
        raw = b'{"a":' * depth + b"1" + b"}" * depth
    prefix = len(raw).to_bytes(8, "little")
    if how == "length":
        prefix = draw(st.integers(0, 2**64 - 1) | st.integers(0, len(raw) + 8)).to_bytes(8, "little")
    blob = prefix + raw + data
    if how == "truncate":
        blob = blob[: draw(st.integers(0, len(blob)))]
    elif how == "append":
        blob += draw(st.binary(min_size=1, max_size=16))
    elif how == "flip" and blob:
        i = draw(st.integers(0, len(blob) - 1))
        blob = blob[:i] + bytes([blob[i] ^ draw(st.integers(1, 255))]) + blob[i + 1:]
    return blob


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    """A signed cifar_resnet8 folder and its key."""
    root = tmp_path_factory.mktemp("fuzz")
    make_model("cifar_resnet8", density=0.2).save_pretrained(root / "signed", signature="alice 2026",
                                                             key=root / "key.json", owner="alice")
    return root / "signed", root / "key.json"


@st.composite
def configs(draw, base: dict) -> str:
    """A config.json: the owner's with fields replaced by any JSON value, any JSON, or deep nesting."""
    how = draw(st.sampled_from(["fields", "fields", "fields", "any", "nest"]))
    if how == "any":
        return json.dumps(draw(JSON))
    if how == "nest":
        return "[" * 100_000 + "]" * 100_000
    config = dict(base)
    for name in draw(st.lists(st.sampled_from(sorted(base) + ["checkpoint_path"]), min_size=1, max_size=3)):
        config[name] = draw(JSON | st.sampled_from(["resnet18", "../../etc/passwd", "hf-hub:x/y", [3, 10**6, 10**6]]))
    if draw(st.booleans()):
        config["model_args"] = draw(st.dictionaries(
            st.sampled_from(["checkpoint_path", "pretrained_cfg", "drop_rate", "channels", "in_chans"]), JSON,
            max_size=2))
    return json.dumps(config)


def _typed_one_line(call) -> object | None:
    """``call()``'s result, or ``None`` when it raised a typed error with a one-line message."""
    try:
        return call()
    except hlv.HfLotteryError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 1000, message
        return None


@settings(max_examples=400, **FUZZ)
@given(blob=safetensors_bytes())
def test_any_safetensors_file_reads_or_fails_typed(tmp_path_factory, blob: bytes) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path_factory.getbasetemp()) as folder:
        path = Path(folder) / "model.safetensors"
        path.write_bytes(blob)
        notes: list[str] = []
        lenient = _typed_one_line(lambda: read_safetensors(path, notes=notes))
        strict = _typed_one_line(lambda: read_safetensors(path))
        assert strict is None or lenient is not None  # the suspect's reading refuses no more than the owner's
        suspect = _typed_one_line(lambda: hlv.read_suspect(folder))
        assert (suspect is None) == (lenient is None)
        _typed_one_line(lambda: hlv.load_model(folder))


@settings(max_examples=150, **FUZZ)
@given(data=st.data())
def test_any_config_is_a_hint_for_suspects_and_a_typed_error_or_model_when_loading(owner, tmp_path_factory,
                                                                                   data) -> None:
    signed, _ = owner
    text = data.draw(configs(json.loads((signed / "config.json").read_text())))
    with tempfile.TemporaryDirectory(dir=tmp_path_factory.getbasetemp()) as folder:
        shutil.copy(signed / "model.safetensors", folder)
        (Path(folder) / "config.json").write_text(text)
        suspect = hlv.read_suspect(folder)  # the config is only a hint: reading never fails because of it
        assert suspect.state_dict and isinstance(suspect.config, (dict, type(None)))
        _typed_one_line(lambda: hlv.load_model(folder))


@settings(max_examples=12, **FUZZ)
@given(data=st.data())
def test_verification_and_the_command_line_never_crash_into_a_verdict(owner, tmp_path_factory, capsys,
                                                                      data) -> None:
    signed, key = owner
    with tempfile.TemporaryDirectory(dir=tmp_path_factory.getbasetemp()) as folder:
        if data.draw(st.booleans()):
            (Path(folder) / "model.safetensors").write_bytes(data.draw(safetensors_bytes()))
        else:
            shutil.copy(signed / "model.safetensors", folder)
            (Path(folder) / "config.json").write_text(data.draw(configs(json.loads(
                (signed / "config.json").read_text()))))
        report = _typed_one_line(lambda: hlv.verify_model(folder, key=key, require_anchor=False))
        capsys.readouterr()
        code = main(["verify", folder, "--key", str(key), "--json", "--unanchored"])
        out, err = capsys.readouterr()
        if report is None:
            assert code == 2 and err.count("\n") == 1 and err.startswith("hf-lottery verify: error: ")
        else:
            assert code == report.exit_code and json.loads(out)["verdict"] == report.verdict
