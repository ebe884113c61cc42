from __future__ import annotations

import pytest

import hf_lottery_verify as hlv
from hf_lottery_verify import hub


def test_repo_id_detection(tmp_path) -> None:
    assert hub.looks_like_repo_id("owner/model")
    assert hub.looks_like_repo_id("model")
    assert not hub.looks_like_repo_id(str(tmp_path))
    assert not hub.looks_like_repo_id("./relative/path/x")
    assert not hub.looks_like_repo_id("a/b/c")


def test_network_failure_is_a_typed_error(monkeypatch) -> None:
    import httpx2
    from huggingface_hub import HfApi

    def refuse(*args, **kwargs):
        raise httpx2.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(HfApi, "list_repo_files", refuse)
    with pytest.raises(hlv.HubError, match="Network or disk failure"):
        hlv.load_model("someone/some-model")


def test_pickle_only_repo_is_refused_before_download(monkeypatch) -> None:
    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "list_repo_files", lambda *a, **k: ["config.json", "pytorch_model.bin"])
    monkeypatch.setattr(hub, "snapshot_download", None, raising=False)
    with pytest.raises(hlv.PickleRefusedError, match="only pickle weights"):
        hlv.load_model("someone/pickled-model")


def test_missing_repo_is_a_typed_error(monkeypatch) -> None:
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    def missing(*args, **kwargs):
        request = httpx2.Request("GET", "https://hub.invalid/api/models/someone/absent")
        raise RepositoryNotFoundError("404", response=httpx2.Response(404, request=request))

    monkeypatch.setattr(HfApi, "list_repo_files", missing)
    with pytest.raises(hlv.HubError, match="not found"):
        hlv.load_model("someone/absent")
