"""The local Hub against the real, unpatched huggingface_hub client (and timm / transformers on top of it)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
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


def test_a_private_repo_needs_a_token(fresh_hub: LocalHub, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="f.txt", repo_id=hub_repo_id)
    assert api.model_info(hub_repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(hub_repo_id, token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo_id, "f.txt", token=False)
    assert fresh_hub.find_requests(method="GET", path_contains=hub_repo_id)[-1]["status"] == 401
    fresh_hub.set_private(hub_repo_id, False)
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
