"""The local Hub against the real, unpatched huggingface_hub client (and timm / transformers on top of it)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import select
import socket
import struct
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import (
    HfApi,
    ModelCard,
    constants,
    get_hf_file_metadata,
    get_safetensors_metadata,
    get_session,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import save_file

from hf_lottery_verify.localhub import DEFAULT_USER

from .hub_server import LocalHub, git_blob_sha1

# huggingface_hub's LFS PUT passes a file object as `data=`, which httpx2 deprecates: the client's affair.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

CLIENT_HEADER_RANGE = 100_001  # parse_safetensors_file_metadata first asks for bytes=0-100000


def _write_folder(folder: Path, *, weights: int = 300) -> dict[str, bytes]:
    """A small model folder: a JSON config, a nested text file and a float32 safetensors file."""
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"arch": "tiny", "num_labels": 3}))
    (folder / "sub" / "notes.txt").write_text("hello from a sub folder\n")
    save_file({"w": torch.arange(weights * weights, dtype=torch.float32).reshape(weights, weights)},
              str(folder / "model.safetensors"), metadata={"claim": "alice"})
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def _safetensors_with_metadata(metadata: dict[str, str], tensor: torch.Tensor) -> bytes:
    """Raw safetensors bytes (so a test can make the header as large as it likes)."""
    header = {"__metadata__": metadata,
              "t": {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [0, tensor.numel() * 4]}}
    header_bytes = json.dumps(header).encode()
    return struct.pack("<Q", len(header_bytes)) + header_bytes + tensor.numpy().tobytes()


# ---- environment -------------------------------------------------------------------------------


def test_client_points_at_the_local_hub(local_hub: LocalHub) -> None:
    assert constants.ENDPOINT == local_hub.url == os.environ["HF_ENDPOINT"]
    assert constants.HF_HUB_DISABLE_XET
    home = Path(os.environ["HF_HOME"]).resolve()
    assert not home.is_relative_to(Path.home().resolve())  # nothing is written under ~
    assert Path(constants.HF_HUB_CACHE).resolve().is_relative_to(home)


def test_hub_repo_id_is_a_fresh_valid_id(hub_repo_id: str) -> None:
    validate_repo_id(hub_repo_id)
    owner, name = hub_repo_id.split("/")
    assert owner == "local-user" and name.startswith("test_hub_repo_id_is_a_fresh_valid_id-")
    assert not HfApi().repo_exists(hub_repo_id)  # not created yet: each test creates its own
    HfApi().create_repo(hub_repo_id)
    assert HfApi().repo_exists(hub_repo_id)
    assert HfApi().create_repo(hub_repo_id, exist_ok=True).repo_id == hub_repo_id


# ---- upload and download -----------------------------------------------------------------------


def test_upload_folder_then_download_and_snapshot(fresh_hub: LocalHub, hub_repo_id: str, tmp_path: Path) -> None:
    api = HfApi()
    files = _write_folder(tmp_path / "src")
    api.create_repo(hub_repo_id)
    info = api.upload_folder(repo_id=hub_repo_id, folder_path=tmp_path / "src", commit_message="Add model")

    assert Path(hf_hub_download(hub_repo_id, "config.json")).read_bytes() == files["config.json"]
    snapshot = Path(snapshot_download(hub_repo_id))
    assert snapshot.name == info.oid
    for path, data in files.items():
        assert (snapshot / path).read_bytes() == data
    assert (snapshot / ".gitattributes").is_file()  # the Hub's initial commit

    model = api.model_info(hub_repo_id)
    assert model.sha == info.oid and model.private is False
    assert {s.rfilename for s in model.siblings} == set(files) | {".gitattributes"}
    tree = {entry.path: entry for entry in api.list_repo_tree(hub_repo_id, recursive=True)}
    assert tree["model.safetensors"].lfs.sha256 == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert tree["config.json"].lfs is None and tree["config.json"].blob_id == git_blob_sha1(files["config.json"])
    assert {entry.path for entry in api.list_repo_tree(hub_repo_id)} == {".gitattributes", "config.json",
                                                                         "model.safetensors", "sub"}
    # The safetensors file went through the LFS batch API and a PUT; the JSON file inline in the commit.
    assert fresh_hub.find_requests(method="POST", path_contains=".git/info/lfs/objects/batch")
    assert fresh_hub.find_requests(method="PUT", path_contains="/__lfs/")
    assert fresh_hub.server_errors == []


def test_etags_and_sizes_are_what_the_client_expects(hub_repo_id: str, tmp_path: Path) -> None:
    files = _write_folder(tmp_path / "src", weights=10)
    HfApi().create_repo(hub_repo_id)
    HfApi().upload_folder(repo_id=hub_repo_id, folder_path=tmp_path / "src")
    lfs = get_hf_file_metadata(hf_hub_url(hub_repo_id, "model.safetensors"))
    regular = get_hf_file_metadata(hf_hub_url(hub_repo_id, "config.json"))
    assert lfs.etag == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert lfs.size == len(files["model.safetensors"])
    assert regular.etag == git_blob_sha1(files["config.json"]) and regular.size == len(files["config.json"])
    assert lfs.commit_hash == regular.commit_hash == HfApi().model_info(hub_repo_id).sha


def test_byte_ranges(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    fresh_hub.create_repo(hub_repo_id)
    fresh_hub.put_file(hub_repo_id, "data.txt", b"0123456789")
    url = hf_hub_url(hub_repo_id, "data.txt")
    auth = {"Authorization": f"Bearer {os.environ['HF_TOKEN']}"}
    answer = get_session().get(url, headers={**auth, "Range": "bytes=2-5"})
    assert answer.status_code == 206 and answer.content == b"2345"
    assert answer.headers["Content-Range"] == "bytes 2-5/10"
    assert get_session().get(url, headers={**auth, "Range": "bytes=-3"}).content == b"789"
    assert get_session().get(url, headers={**auth, "Range": "bytes=7-"}).content == b"789"
    assert get_session().get(url, headers={**auth, "Range": "bytes=20-"}).status_code == 416


def test_an_old_commit_stays_downloadable_by_sha(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    first = api.upload_file(path_or_fileobj=b"version 1", path_in_repo="weights.txt", repo_id=hub_repo_id).oid
    second = api.upload_file(path_or_fileobj=b"version 2", path_in_repo="weights.txt", repo_id=hub_repo_id).oid
    thief = fresh_hub.put_file(hub_repo_id, "weights.txt", b"stolen", message="Edit weights")

    assert len({first, second, thief}) == 3 and all(len(oid) == 40 for oid in (first, second, thief))
    assert Path(hf_hub_download(hub_repo_id, "weights.txt", revision=first)).read_bytes() == b"version 1"
    assert Path(hf_hub_download(hub_repo_id, "weights.txt", revision=second)).read_bytes() == b"version 2"
    assert Path(hf_hub_download(hub_repo_id, "weights.txt")).read_bytes() == b"stolen"
    assert api.model_info(hub_repo_id, revision=first[:7]).sha == first  # short shas resolve too
    assert api.list_repo_commits(hub_repo_id)[0].title == "Edit weights"


def test_commits_are_listed_newest_first_with_dates(hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    oids = [api.upload_file(path_or_fileobj=f"v{i}".encode(), path_in_repo="f.txt", repo_id=hub_repo_id,
                            commit_message=f"commit {i}").oid for i in range(3)]
    commits = api.list_repo_commits(hub_repo_id)
    assert [c.commit_id for c in commits[:3]] == oids[::-1]
    assert [c.title for c in commits] == ["commit 2", "commit 1", "commit 0", "initial commit"]
    assert commits[-1].authors == ["system"]
    dates = [c.created_at for c in commits]
    assert all(newer > older for newer, older in zip(dates, dates[1:], strict=False))
    assert all(d.tzinfo is not None for d in dates)
    assert api.model_info(hub_repo_id).last_modified == dates[0]
    # Listing from an older commit starts there.
    assert [c.commit_id for c in api.list_repo_commits(hub_repo_id, revision=oids[1])][:2] == [oids[1], oids[0]]


def test_deleting_files_keeps_history(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    kept = api.upload_file(path_or_fileobj=b"a", path_in_repo="dir/a.txt", repo_id=hub_repo_id).oid
    fresh_hub.put_file(hub_repo_id, "dir/b.txt", b"b")
    api.delete_file("dir/a.txt", repo_id=hub_repo_id)
    fresh_hub.delete_file(hub_repo_id, "dir/b.txt")
    assert api.list_repo_files(hub_repo_id) == [".gitattributes"]
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo_id, "dir/a.txt")
    assert Path(hf_hub_download(hub_repo_id, "dir/a.txt", revision=kept)).read_bytes() == b"a"


def test_unchanged_upload_makes_no_commit(hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    first = api.upload_file(path_or_fileobj=b"same", path_in_repo="f.txt", repo_id=hub_repo_id).oid
    again = api.upload_file(path_or_fileobj=b"same", path_in_repo="f.txt", repo_id=hub_repo_id).oid
    assert again == first and len(api.list_repo_commits(hub_repo_id)) == 2


def test_branches_and_tags(hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    v1 = api.upload_file(path_or_fileobj=b"main 1", path_in_repo="f.txt", repo_id=hub_repo_id).oid
    api.create_tag(hub_repo_id, tag="v1")
    api.create_branch(hub_repo_id, branch="dev")
    dev = api.upload_file(path_or_fileobj=b"dev", path_in_repo="f.txt", repo_id=hub_repo_id, revision="dev").oid
    api.upload_file(path_or_fileobj=b"main 2", path_in_repo="f.txt", repo_id=hub_repo_id)

    assert Path(hf_hub_download(hub_repo_id, "f.txt", revision="v1")).read_bytes() == b"main 1"
    assert Path(hf_hub_download(hub_repo_id, "f.txt", revision="dev")).read_bytes() == b"dev"
    assert Path(hf_hub_download(hub_repo_id, "f.txt")).read_bytes() == b"main 2"
    refs = api.list_repo_refs(hub_repo_id)
    assert {b.name: b.target_commit for b in refs.branches}["dev"] == dev
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", v1)]
    with pytest.raises(HfHubHTTPError):
        api.create_branch(hub_repo_id, branch="dev")
    api.create_branch(hub_repo_id, branch="dev", exist_ok=True)


# ---- header-only reads -------------------------------------------------------------------------


def test_safetensors_header_is_read_through_ranges_only(fresh_hub: LocalHub, hub_repo_id: str,
                                                        tmp_path: Path) -> None:
    files = _write_folder(tmp_path / "src")
    size = len(files["model.safetensors"])
    assert size > 3 * CLIENT_HEADER_RANGE
    HfApi().create_repo(hub_repo_id)
    HfApi().upload_folder(repo_id=hub_repo_id, folder_path=tmp_path / "src")
    fresh_hub.clear_log()

    metadata = get_safetensors_metadata(hub_repo_id)
    assert metadata.files_metadata["model.safetensors"].metadata == {"claim": "alice"}
    assert metadata.parameter_count == {"F32": 300 * 300}
    gets = fresh_hub.find_requests(method="GET", path_contains="model.safetensors")
    assert gets and all(entry["range"] and entry["status"] == 206 for entry in gets)
    assert sum(entry["bytes_sent"] for entry in gets) <= CLIENT_HEADER_RANGE < size


def test_a_large_header_takes_a_second_range_request(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    claim = "x" * 150_000  # a header bigger than the client's first 100 kB range
    data = _safetensors_with_metadata({"claim": claim}, torch.zeros(200_000))
    fresh_hub.create_repo(hub_repo_id)
    fresh_hub.put_file(hub_repo_id, "model.safetensors", data)
    fresh_hub.clear_log()
    parsed = HfApi().parse_safetensors_file_metadata(hub_repo_id, "model.safetensors")
    assert parsed.metadata == {"claim": claim}
    gets = fresh_hub.find_requests(method="GET", path_contains="model.safetensors")
    assert [entry["range"].split("=")[1].split("-")[0] for entry in gets] == ["0", "8"]
    assert sum(entry["bytes_sent"] for entry in gets) < len(data) / 2


# ---- model cards, timm and transformers --------------------------------------------------------


def test_model_card_round_trip(hub_repo_id: str) -> None:
    HfApi().create_repo(hub_repo_id)
    card = ModelCard("---\nlicense: mit\nlibrary_name: timm\ntags:\n- lottery-ticket\n---\n\n# A ticket\n")
    card.push_to_hub(hub_repo_id)
    loaded = ModelCard.load(hub_repo_id)
    assert loaded.data.license == "mit" and loaded.data.tags == ["lottery-ticket"]
    assert loaded.text.strip() == "# A ticket"
    info = HfApi().model_info(hub_repo_id)
    assert info.card_data.license == "mit" and info.library_name == "timm"


def test_invalid_card_metadata_is_refused(hub_repo_id: str) -> None:
    HfApi().create_repo(hub_repo_id)
    with pytest.raises(ValueError, match="Invalid metadata"):
        HfApi().upload_file(path_or_fileobj=b"---\nkey: [unclosed\n---\n", path_in_repo="README.md",
                            repo_id=hub_repo_id)


def test_timm_push_then_pretrained_load(hub_repo_id: str) -> None:
    timm = pytest.importorskip("timm")
    from timm.models import push_to_hf_hub

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3)  # a 0.37 M-parameter timm ResNet
    push_to_hf_hub(model, hub_repo_id)
    loaded = timm.create_model("hf-hub:" + hub_repo_id, pretrained=True)
    assert loaded.num_classes == 3
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert {"config.json", "model.safetensors", "README.md"} <= set(HfApi().list_repo_files(hub_repo_id))


def test_transformers_timm_wrapper_round_trip(hub_repo_id: str) -> None:
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    config = transformers.TimmWrapperConfig(architecture="test_resnet", num_labels=3)
    model = transformers.TimmWrapperForImageClassification(config).eval()
    model.push_to_hub(hub_repo_id)
    loaded = transformers.TimmWrapperForImageClassification.from_pretrained(hub_repo_id).eval()
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits,
                                   rtol=1e-4, atol=1e-9)


def test_transformers_loads_a_timm_pushed_repo_once_num_classes_is_stripped(hub_repo_id: str) -> None:
    """ECOSYSTEM_FACTS trap: timm writes model_args.num_classes, transformers passes num_classes again."""
    timm = pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")
    from timm.models import push_to_hf_hub

    model = timm.create_model("test_resnet", num_classes=3)
    push_to_hf_hub(model, hub_repo_id, safe_serialization=True)
    with pytest.raises(TypeError, match="num_classes"):
        transformers.TimmWrapperForImageClassification.from_pretrained(hub_repo_id)
    config = transformers.TimmWrapperConfig.from_pretrained(hub_repo_id)
    config.model_args = {k: v for k, v in (config.model_args or {}).items() if k != "num_classes"}
    loaded = transformers.TimmWrapperForImageClassification.from_pretrained(hub_repo_id, config=config)
    expected, actual = model.state_dict(), loaded.timm_model.state_dict()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


# ---- errors ------------------------------------------------------------------------------------


def test_typed_errors(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(hub_repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("gpt2")  # canonical ids without an owner are never stored here
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo_id, "config.json")
    fresh_hub.create_repo(hub_repo_id)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(hub_repo_id, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(hub_repo_id, ".gitattributes", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_commits(hub_repo_id, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo_id, "missing.json")
    assert api.file_exists(hub_repo_id, ".gitattributes") and not api.file_exists(hub_repo_id, "missing.json")
    with pytest.raises(HfHubHTTPError) as caught:
        api.get_discussion_details(hub_repo_id, 1)  # outside the implemented surface: 501, never a fake 404
    assert caught.value.response.status_code == 501
    assert fresh_hub.server_errors == []


def test_a_private_repo_is_visible_to_its_owner_only(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="f.txt", repo_id=hub_repo_id)
    assert api.model_info(hub_repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(hub_repo_id, token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo_id, "f.txt", token=False)
    assert fresh_hub.find_requests(method="GET", path_contains=hub_repo_id)[-1]["status"] == 401
    with pytest.raises(RepositoryNotFoundError):  # another user, with a valid token: as if it did not exist
        api.model_info(hub_repo_id, token=fresh_hub.add_user("mallory"))
    assert fresh_hub.find_requests(method="GET", path_contains=hub_repo_id)[-1]["status"] == 404
    api.update_repo_settings(hub_repo_id, private=False)
    assert api.model_info(hub_repo_id, token=False).private is False


def test_injected_fault_is_a_non_json_500(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    fresh_hub.inject_fault(1, status=500, body=b"<html>boom</html>", path_contains="/api/models/")
    with pytest.raises(HfHubHTTPError) as caught:
        api.model_info(hub_repo_id)  # model_info does not retry
    assert caught.value.response.status_code == 500
    assert api.model_info(hub_repo_id).id == hub_repo_id  # only the next matching request failed
    fresh_hub.inject_fault(1, status=None)  # drop the connection without an answer
    with pytest.raises(httpx2.RemoteProtocolError):
        api.model_info(hub_repo_id)


def test_stop_then_start_on_the_same_port(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    url = fresh_hub.url
    fresh_hub.stop()
    assert not fresh_hub.is_running
    with pytest.raises(httpx2.ConnectError):
        api.model_info(hub_repo_id)  # no retry here: refused at once
    fresh_hub.start()
    assert fresh_hub.url == url
    assert api.model_info(hub_repo_id).id == hub_repo_id  # the data survived the restart


# ---- cache and subprocesses --------------------------------------------------------------------


def test_cached_snapshot_is_served_while_the_server_is_down(fresh_hub: LocalHub, hub_repo_id: str,
                                                            tmp_path: Path) -> None:
    files = _write_folder(tmp_path / "src", weights=10)
    HfApi().create_repo(hub_repo_id)
    HfApi().upload_folder(repo_id=hub_repo_id, folder_path=tmp_path / "src")
    online = snapshot_download(hub_repo_id)
    fresh_hub.stop()
    assert snapshot_download(hub_repo_id, local_files_only=True) == online
    assert snapshot_download(hub_repo_id) == online  # repo_info is refused at once, then the cache is used
    assert Path(hf_hub_download(hub_repo_id, "config.json")).read_bytes() == files["config.json"]


def test_subprocesses_reach_the_same_hub_and_respect_offline_mode(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    fresh_hub.create_repo(hub_repo_id)
    fresh_hub.put_file(hub_repo_id, "config.json", b'{"from": "subprocess"}')
    script = ("import sys; from huggingface_hub import hf_hub_download; "
              "print(open(hf_hub_download(sys.argv[1], 'config.json')).read())")
    online = subprocess.run([sys.executable, "-c", script, hub_repo_id], capture_output=True, text=True, check=True)
    assert json.loads(online.stdout) == {"from": "subprocess"}
    fresh_hub.clear_log()
    offline = subprocess.run([sys.executable, "-c", script, hub_repo_id], capture_output=True, text=True,
                             check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert json.loads(offline.stdout) == {"from": "subprocess"}
    assert fresh_hub.requests == []  # served from the shared cache without a single request


# ---- a real server: users, namespaces, hostile requests ---------------------------------------

OWNER = {"Authorization": f"Bearer {os.environ.get('HF_TOKEN', '')}"}


def _http(hub: LocalHub, method: str, path: str, body: bytes = b"",
          headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPResponse, bytes]:
    """One request with http.client (for what the Hub client never sends); returns status, response, body."""
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer, answer.read()
    finally:
        conn.close()


def _raw(hub: LocalHub, request: bytes) -> bytes:
    """Send raw bytes; return all the server answers until it closes the connection (30 s at most)."""
    with socket.create_connection((hub.host, hub.port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _status(api_call) -> int:
    with pytest.raises(HfHubHTTPError) as caught:
        api_call()
    return caught.value.response.status_code


@pytest.fixture
def mallory(fresh_hub: LocalHub) -> str:
    """A second user's valid token."""
    return fresh_hub.add_user("mallory")


def test_whoami_names_the_tokens_user(fresh_hub: LocalHub, mallory: str) -> None:
    assert HfApi().whoami()["name"] == DEFAULT_USER  # the token configure_hub_environment exported
    assert HfApi(token=mallory).whoami()["name"] == "mallory"
    assert fresh_hub.add_user("mallory") == mallory  # a known user keeps their token
    assert _status(lambda: HfApi(token="not-a-real-token").whoami()) == 401
    assert _http(fresh_hub, "GET", "/api/whoami-v2")[0] == 401  # no token (the client refuses to ask)


def test_a_token_nobody_holds_is_refused_even_for_reads(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    api, bad = HfApi(), HfApi(token="not-a-real-token")
    api.create_repo(hub_repo_id)
    api.upload_file(path_or_fileobj=b'{"owner": true}', path_in_repo="config.json", repo_id=hub_repo_id)
    assert _status(lambda: bad.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json",
                                           repo_id=hub_repo_id)) == 401
    assert _status(lambda: bad.model_info(hub_repo_id)) == 401
    assert fresh_hub.read_file(hub_repo_id, "config.json") == b'{"owner": true}'
    assert fresh_hub.server_errors == []


def test_another_users_token_cannot_write_in_my_namespace(fresh_hub: LocalHub, hub_repo_id: str,
                                                          mallory: str) -> None:
    """The issue's case: with any token, one user overwrote another's config.json."""
    api, thief = HfApi(), HfApi(token=mallory)
    api.create_repo(hub_repo_id)
    api.upload_file(path_or_fileobj=b'{"owner": true}', path_in_repo="config.json", repo_id=hub_repo_id)
    api.create_tag(hub_repo_id, tag="v1")
    refused = {
        "commit": lambda: thief.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=hub_repo_id),
        "delete file": lambda: thief.delete_file("config.json", repo_id=hub_repo_id),
        "tag": lambda: thief.create_tag(hub_repo_id, tag="v2"),
        "branch": lambda: thief.create_branch(hub_repo_id, branch="dev"),
        "settings": lambda: thief.update_repo_settings(hub_repo_id, private=True),
        "delete repo": lambda: thief.delete_repo(hub_repo_id),
        "create in my namespace": lambda: thief.create_repo(f"{DEFAULT_USER}/{hub_repo_id.split('/')[1]}-2"),
    }
    assert {name: _status(call) for name, call in refused.items()} == dict.fromkeys(refused, 403)
    assert _status(lambda: thief.delete_tag(hub_repo_id, tag="v1")) == 501  # nobody deletes refs on this hub
    assert fresh_hub.read_file(hub_repo_id, "config.json") == b'{"owner": true}'
    assert api.model_info(hub_repo_id).private is False
    assert [tag.name for tag in api.list_repo_refs(hub_repo_id).tags] == ["v1"]
    # in its own namespace the same token writes, and the commit is the thief's
    own = f"mallory/{hub_repo_id.split('/')[1]}"
    thief.create_repo(own)
    thief.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=own)
    assert thief.list_repo_commits(own)[0].authors == ["mallory"]
    assert fresh_hub.server_errors == []


def test_every_write_needs_a_token(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    api, anonymous = HfApi(), HfApi(token=False)
    api.create_repo(hub_repo_id)
    name = hub_repo_id.split("/")[1]
    assert _status(lambda: anonymous.delete_repo(hub_repo_id)) == 401  # the issue: this needed no token
    assert _status(lambda: anonymous.create_repo(f"{DEFAULT_USER}/{name}-2")) == 401
    assert _status(lambda: anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="f.txt",
                                                 repo_id=hub_repo_id)) == 401
    assert _status(lambda: anonymous.create_tag(hub_repo_id, tag="v1")) == 401
    assert api.repo_exists(hub_repo_id) and api.list_repo_files(hub_repo_id) == [".gitattributes"]
    batch = json.dumps({"operation": "upload", "objects": [{"oid": "0" * 64, "size": 3}]}).encode()
    assert _http(fresh_hub, "POST", f"/{hub_repo_id}.git/info/lfs/objects/batch", batch)[0] == 401


def test_lfs_uploads_need_a_url_signed_by_an_authorized_batch(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    HfApi().create_repo(hub_repo_id)
    data = b"weights" * 10
    oid = hashlib.sha256(data).hexdigest()
    put = f"/__lfs/models/{hub_repo_id}/{oid}"
    # no signature, or a forged one: refused before a byte of the (announced 50 MB) body is read
    head = f"PUT {put}?size={len(data)}&sig={'0' * 64} HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n"
    assert _raw(fresh_hub, head.encode()).startswith(b"HTTP/1.1 403")
    assert _http(fresh_hub, "PUT", put, data)[0] == 403
    batch = json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}).encode()
    status, _, answer = _http(fresh_hub, "POST", f"/{hub_repo_id}.git/info/lfs/objects/batch", batch, OWNER)
    href = json.loads(answer)["objects"][0]["actions"]["upload"]["href"].removeprefix(fresh_hub.url)
    assert status == 200 and _http(fresh_hub, "PUT", href, b"other content")[0] == 400  # signed for this oid only
    assert _http(fresh_hub, "PUT", href, data)[0] == 200
    assert fresh_hub.repo(hub_repo_id).lfs_objects == {oid: data}


@pytest.mark.parametrize("path", ["/api/models/{repo}/revision/main%0d%0aX-Injected:%20yes",
                                  "/{repo}/resolve/main%0d%0aX-Injected:%20yes/f.txt",
                                  "/{repo}/resolve/%E4%B8%AD%0aX-Injected:%20yes/f.txt"])
def test_no_request_can_inject_a_response_header(fresh_hub: LocalHub, hub_repo_id: str, path: str) -> None:
    fresh_hub.create_repo(hub_repo_id)
    fresh_hub.put_file(hub_repo_id, "f.txt", b"x")
    answer = _raw(fresh_hub, f"GET {path.format(repo=hub_repo_id)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  .encode())
    head = answer.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 404") and b"invalid rev id" in head.lower()
    assert not any(line.lower().startswith(b"x-injected") for line in head.split(b"\r\n"))
    assert b"\n" not in head.replace(b"\r\n", b"") and fresh_hub.server_errors == []


@pytest.mark.parametrize(("header", "status"), [
    ("Content-Length: -1", 400), ("Content-Length: abc", 400), ("Content-Length: 1e3", 400),
    ("Content-Length: +12", 400), (f"Content-Length: {10**12}", 413), ("", 411),
    ("Transfer-Encoding: chunked", 411)])
def test_a_bad_content_length_is_answered_at_once(fresh_hub: LocalHub, header: str, status: int) -> None:
    answer = _raw(fresh_hub, f"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode())
    assert answer.startswith(f"HTTP/1.1 {status}".encode())  # answered, then closed: no thread waits for a body
    assert HfApi().whoami()["name"] == DEFAULT_USER and fresh_hub.server_errors == []


def test_a_body_over_the_cap_is_refused(fresh_hub: LocalHub, hub_repo_id: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    HfApi().create_repo(hub_repo_id)
    monkeypatch.setattr(fresh_hub, "max_body", 1000)
    assert _http(fresh_hub, "POST", "/api/validate-yaml", b"{}" * 600)[0] == 413
    assert _status(lambda: HfApi().upload_file(path_or_fileobj=b"x" * 2000, path_in_repo="f.txt",
                                               repo_id=hub_repo_id)) == 413
    monkeypatch.undo()
    assert HfApi().list_repo_files(hub_repo_id) == [".gitattributes"] and fresh_hub.server_errors == []


@pytest.mark.parametrize("start", [b"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\n",
                                   b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"])
def test_a_slow_client_is_cut_at_the_request_deadline(fresh_hub: LocalHub, monkeypatch: pytest.MonkeyPatch,
                                                      start: bytes) -> None:
    """Slowloris: one byte at a time keeps every read alive; the deadline for the whole request does not."""
    monkeypatch.setattr(fresh_hub, "request_timeout", 1.0)
    closed = False
    with socket.create_connection((fresh_hub.host, fresh_hub.port), timeout=30) as sock:
        sock.sendall(start)
        for _ in range(600):  # up to a minute of trickling, far past the 1 s deadline
            try:
                sock.sendall(b"X-Slow: 1\r\n" if start.startswith(b"GET") else b"x")
                if select.select([sock], [], [], 0.1)[0]:
                    closed = sock.recv(1024) == b""
                    break
            except OSError:  # reset: the server closed it while we were writing
                closed = True
                break
    assert closed
    monkeypatch.undo()
    assert HfApi().whoami()["name"] == DEFAULT_USER and fresh_hub.server_errors == []


def test_malformed_bodies_get_a_400_not_a_server_error(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    fresh_hub.create_repo(hub_repo_id)
    commit = f"/api/models/{hub_repo_id}/commit/main"
    for path, body in [("/api/repos/create", b"[1, 2]"), ("/api/repos/create", b'{"name": "a/b/c"}'),
                       ("/api/repos/create", b'{"name": 5}'), (commit, b"not json"), (commit, b"[1]\n"),
                       (commit, b'{"key": "file", "value": {"path": "../x", "content": ""}}'),
                       (commit, b'{"key": "file", "value": {"path": 3, "content": ""}}'),
                       (f"/api/models/{hub_repo_id}/tag/main", b'{"tag": ["v1"]}')]:
        assert _http(fresh_hub, "POST", path, body, OWNER)[0] == 400, (path, body)
    assert fresh_hub.server_errors == []


# ---- server-side dates -------------------------------------------------------------------------


def test_the_server_dates_repos_and_commits_whatever_the_client_sends(fresh_hub: LocalHub, hub_repo_id: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    now = [datetime(2031, 5, 1, 12, tzinfo=timezone.utc)]
    monkeypatch.setattr(fresh_hub, "clock", lambda: now[0])
    namespace, name = hub_repo_id.split("/")
    forged = "2001-01-01T00:00:00.000Z"
    create = json.dumps({"name": name, "organization": namespace, "createdAt": forged}).encode()
    assert _http(fresh_hub, "POST", "/api/repos/create", create, OWNER)[0] == 200
    now[0] += timedelta(days=1)
    ndjson = "\n".join(json.dumps(line) for line in [
        {"key": "header", "value": {"summary": "backdated", "date": forged, "createdAt": forged,
                                    "authors": [{"user": "someone-else"}]}},
        {"key": "file", "value": {"path": "f.txt", "content": base64.b64encode(b"x").decode(),
                                  "encoding": "base64"}}]).encode()
    headers = {**OWNER, "Content-Type": "application/x-ndjson"}
    assert _http(fresh_hub, "POST", f"/api/models/{hub_repo_id}/commit/main", ndjson, headers)[0] == 200
    api = HfApi()
    info, commits = api.repo_info(hub_repo_id), api.list_repo_commits(hub_repo_id)
    assert info.created_at == datetime(2031, 5, 1, 12, tzinfo=timezone.utc)
    assert commits[0].title == "backdated" and commits[0].created_at == now[0] == info.last_modified
    assert commits[0].authors == [DEFAULT_USER]
    now[0] -= timedelta(days=3650)  # a clock that jumps back: still never before the parent or the creation
    api.upload_file(path_or_fileobj=b"y", path_in_repo="f.txt", repo_id=hub_repo_id)
    latest = api.list_repo_commits(hub_repo_id)[0].created_at
    assert latest > commits[0].created_at > info.created_at


def test_an_injected_clock_orders_repos_and_creation_precedes_commits(fresh_hub: LocalHub, hub_repo_id: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    now = [datetime(2030, 1, 1, tzinfo=timezone.utc)]
    monkeypatch.setattr(fresh_hub, "clock", lambda: now[0])
    api, older, newer = HfApi(), f"{hub_repo_id}-older", f"{hub_repo_id}-newer"
    api.create_repo(older)
    now[0] += timedelta(hours=1)
    api.create_repo(newer)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id=older).oid
    api.create_tag(older, tag="v1")
    assert api.repo_info(older).created_at < api.repo_info(newer).created_at
    commits = api.list_repo_commits(older)
    assert [c.commit_id for c in commits][0] == first and commits[-1].title == "initial commit"
    assert commits[-1].created_at == api.repo_info(older).created_at <= commits[0].created_at
    assert [(t.name, t.target_commit) for t in api.list_repo_refs(older).tags] == [("v1", first)]
