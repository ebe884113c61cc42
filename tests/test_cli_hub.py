"""``hf-lottery hub serve``: a local Hub a user starts in one shell and points huggingface_hub at from another."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hf_lottery_verify.cli import main

from .hub_server import LocalHub

# huggingface_hub's LFS PUT passes a file object as `data=`, which httpx2 deprecates: the client's affair.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
CLI = [sys.executable, "-c", "from hf_lottery_verify.cli import main; raise SystemExit(main())"]


@pytest.mark.parametrize("flags", [["--host", "0.0.0.0"], ["--port", "70000"], ["--user", "no/such user"]])
def test_refusals_are_one_line_and_exit_2(capsys, flags: list[str]) -> None:
    assert main(["hub", "serve", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hf-lottery hub: error: ")


def test_a_port_in_use_is_one_line_and_exit_2(capsys, local_hub: LocalHub) -> None:
    assert main(["hub", "serve", "--port", str(local_hub.port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pick another --port" in err


@pytest.mark.slow
def test_serve_prints_the_lines_to_paste_and_serves_until_ctrl_c() -> None:
    server = subprocess.Popen([*CLI, "hub", "serve", "--user", "alice"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    exports: dict[str, str] = {}
    try:
        lines = [server.stdout.readline().strip() for _ in range(5)]
        exports.update(line.removeprefix("export ").split("=", 1) for line in lines[1:])
        assert set(exports) == {"HF_ENDPOINT", "HF_TOKEN", "HF_HUB_DISABLE_XET", "HF_HUB_CACHE"}
        assert exports["HF_ENDPOINT"].startswith("http://127.0.0.1:") and exports["HF_HUB_DISABLE_XET"] == "1"
        api = HfApi(endpoint=exports["HF_ENDPOINT"], token=exports["HF_TOKEN"])
        assert api.whoami()["name"] == "alice"
        api.create_repo("alice/hello")
        api.upload_file(path_or_fileobj=b"weights" * 1000, path_in_repo="model.safetensors", repo_id="alice/hello")
        assert api.list_repo_files("alice/hello") == [".gitattributes", "model.safetensors"]
        with pytest.raises(HfHubHTTPError) as caught:
            api.create_repo("bob/not-mine")  # the printed token writes in alice/ only
        assert caught.value.response.status_code == 403
    finally:
        server.send_signal(signal.SIGINT)
        try:
            out, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
            pytest.fail(f"hub serve did not stop on Ctrl-C; its output: {out!r} {err!r}")
    assert server.returncode == 0 and "stopped" in err and "Traceback" not in err
    assert not Path(exports["HF_HUB_CACHE"]).exists()  # its cache goes with it
