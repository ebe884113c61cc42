from __future__ import annotations

from hf_lottery_verify import hub


def test_repo_id_detection(tmp_path) -> None:
    assert hub.looks_like_repo_id("owner/model")
    assert hub.looks_like_repo_id("model")
    assert not hub.looks_like_repo_id(str(tmp_path))
    assert not hub.looks_like_repo_id("./relative/path/x")
    assert not hub.looks_like_repo_id("a/b/c")
