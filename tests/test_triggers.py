from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_lottery_verify.errors import ConfigError, DatasetError, KeyFileError, KeyFileNotFoundError, KeyMismatchError
from hf_lottery_verify.ownership_key import OwnershipKey
from hf_lottery_verify.stats import binomial_tail
from hf_lottery_verify.triggers import (
    TRIGGERS_SECTION,
    TriggerSet,
    add_triggers,
    load_adi_trigger_set,
    make_trigger_set,
    predict_labels,
    trigger_evidence,
    triggers_from_key,
)

from .helpers import make_model

# the reference copy lives beside the repository (../shared/data/adi_trigger_set); never copy it into the repo
ADI_DIR = Path(os.environ.get("HF_LOTTERY_ADI_DIR",
                              Path(__file__).resolve().parents[2] / "shared" / "data" / "adi_trigger_set"))
needs_adi = pytest.mark.skipif(not (ADI_DIR / "pics").is_dir(), reason="Adi trigger set not available")

SECRET, OTHER_SECRET = "ab" * 32, "cd" * 32  # fixed key secrets

# make_trigger_set(8, num_classes=10, image_size=16, seed=2024).digest(), recorded once: the promise is that
# the same seed gives the same bytes on every machine, so a change here means old seeds no longer reproduce.
GOLDEN_DIGEST = "c81a0677d2a110ef559d0295bb2b739d50d924a3262c1ec14b8530fed0c2d6ce"


# --------------------------------------------------------------------------- generation


def test_same_seed_same_set_and_different_seed_different_set() -> None:
    a = make_trigger_set(100, num_classes=10, seed=3)
    b = make_trigger_set(100, num_classes=10, seed=3)
    c = make_trigger_set(100, num_classes=10, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.digest() == b.digest()
    assert a.digest() != c.digest()
    assert not torch.equal(a.images, c.images) and not torch.equal(a.labels, c.labels)
    assert (a.images.shape, a.images.dtype, a.labels.dtype) == ((100, 3, 32, 32), torch.uint8, torch.int64)
    assert (a.source, a.seed, a.num_classes) == ("procedural", 3, 10)


def test_image_i_depends_only_on_seed_and_index() -> None:
    small, large = make_trigger_set(5, num_classes=10, seed=11), make_trigger_set(12, num_classes=10, seed=11)
    assert torch.equal(small.images, large.images[:5]) and torch.equal(small.labels, large.labels[:5])


@pytest.mark.slow
def test_digest_is_the_same_in_a_fresh_process_with_another_hash_seed() -> None:
    code = ("from hf_lottery_verify.triggers import make_trigger_set; "
            "print(make_trigger_set(20, num_classes=10, image_size=16, seed=77).digest())")
    here = make_trigger_set(20, num_classes=10, image_size=16, seed=77).digest()
    root = Path(__file__).resolve().parents[1]
    hash_seed = "4242" if os.environ.get("PYTHONHASHSEED") != "4242" else "17"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=root,
                         timeout=300)
    assert out.stdout.strip().splitlines()[-1] == here


def test_golden_digest_pins_the_generator() -> None:
    digest = make_trigger_set(8, num_classes=10, image_size=16, seed=2024).digest()
    assert digest == GOLDEN_DIGEST, "make_trigger_set no longer reproduces recorded sets from their seeds"


def test_images_look_out_of_distribution() -> None:
    t = make_trigger_set(100, num_classes=10, seed=5)
    flat = t.images.flatten(1)
    # every image spans the full 0..255 range and is far from constant
    assert bool((flat.min(1).values == 0).all()) and bool((flat.max(1).values == 255).all())
    assert float(flat.float().std(1).min()) > 30
    # many distinct colours per image, and every image differs from every other one
    colours = sorted(len(torch.unique(img.reshape(3, -1).T, dim=0)) for img in t.images)
    assert colours[0] >= 2 and colours[50] >= 50
    assert len({bytes(img.numpy().tobytes()) for img in t.images}) == 100
    # pairwise far apart, not just different in a pixel
    dist = torch.cdist(flat.double(), flat.double()) / flat.shape[1] ** 0.5
    assert float((dist + torch.eye(100) * 1e9).min()) > 20
    # saturated colours: channels differ strongly somewhere in most images (not grey)
    spread = (t.images.max(1).values.int() - t.images.min(1).values.int()).flatten(1).max(1).values
    assert int((spread > 128).sum()) >= 90
    # labels uniform in range
    assert int(t.labels.min()) >= 0 and int(t.labels.max()) < 10
    assert len(torch.unique(t.labels)) == 10


def test_grayscale_and_size_options() -> None:
    t = make_trigger_set(10, num_classes=3, image_size=20, channels=1, seed=0)
    assert t.images.shape == (10, 1, 20, 20)
    assert bool((t.images.flatten(1).max(1).values == 255).all())
    assert int(t.labels.max()) < 3


@pytest.mark.parametrize(
    "kwargs",
    [dict(n=0, num_classes=10), dict(num_classes=1), dict(num_classes=10, channels=2),
     dict(num_classes=10, image_size=2)],
)
def test_make_trigger_set_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(DatasetError):
        make_trigger_set(**kwargs, seed=0)


def test_seed_is_required() -> None:
    with pytest.raises(TypeError):
        make_trigger_set(10, num_classes=10)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- the TriggerSet object


def test_resized_is_deterministic_and_converts_channels() -> None:
    t = make_trigger_set(6, num_classes=10, seed=1)
    assert t.resized(image_size=32, channels=3) is t
    small = t.resized(image_size=16, channels=3)
    assert small.images.shape == (6, 3, 16, 16) and torch.equal(small.labels, t.labels)
    assert small.digest() == t.resized(image_size=16, channels=3).digest()
    gray = t.resized(image_size=32, channels=1)
    expected = (0.299 * t.images[:, 0].double() + 0.587 * t.images[:, 1].double()
                + 0.114 * t.images[:, 2].double()).round().to(torch.uint8)
    assert torch.equal(gray.images[:, 0], expected)
    back = gray.resized(image_size=32, channels=3)
    assert back.images.shape == (6, 3, 32, 32) and torch.equal(back.images[:, 0], back.images[:, 2])
    # resizing a flat image keeps it flat
    flat = TriggerSet(torch.full((1, 3, 32, 32), 77, dtype=torch.uint8), torch.tensor([1]), 10)
    assert bool((flat.resized(image_size=7, channels=3).images == 77).all())
    with pytest.raises(DatasetError):
        t.resized(image_size=16, channels=2)


def test_to_image_data() -> None:
    t = make_trigger_set(4, num_classes=10, seed=1)
    d = t.to_image_data(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert d.name == "triggers" and d.num_classes == 10 and torch.equal(d.images, t.images)
    with pytest.raises(DatasetError):
        t.to_image_data(mean=(0.5,), std=(0.25,))


def test_trigger_set_validation() -> None:
    images = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(DatasetError):
        TriggerSet(images.float(), torch.tensor([0, 1, 2]), 10)  # type: ignore[arg-type]
    with pytest.raises(DatasetError):
        TriggerSet(images, torch.tensor([0, 1]), 10)
    with pytest.raises(DatasetError):
        TriggerSet(images, torch.tensor([0, 1, 10]), 10)
    with pytest.raises(DatasetError):
        TriggerSet(images, torch.tensor([0, -1, 2]), 10)
    assert TriggerSet(images, torch.tensor([0, 1, 2], dtype=torch.int32), 10).labels.dtype == torch.int64


def test_digest_covers_images_and_labels() -> None:
    t = make_trigger_set(5, num_classes=10, seed=1)
    images = t.images.clone()
    images[0, 0, 0, 0] ^= 1
    labels = t.labels.clone()
    labels[0] = (labels[0] + 1) % 10
    assert TriggerSet(images, t.labels, 10).digest() != t.digest()
    assert TriggerSet(t.images, labels, 10).digest() != t.digest()
    assert TriggerSet(t.images.clone(), t.labels.clone(), 10, "other", None).digest() == t.digest()


# --------------------------------------------------------------------------- Adi et al.'s set


@needs_adi
def test_adi_labels_bind_to_lexicographically_sorted_file_names() -> None:
    from PIL import Image

    names = sorted(p.name for p in (ADI_DIR / "pics").iterdir() if p.suffix.lower() == ".jpg")
    assert names[:4] == ["1.jpg", "10.jpg", "100.jpg", "11.jpg"]
    labels = [int(float(x)) for x in (ADI_DIR / "labels-cifar.txt").read_text().split()]
    t = load_adi_trigger_set(ADI_DIR, mode="resize")
    assert t.images.shape == (100, 3, 32, 32) and t.source == "adi:resize" and t.seed is None
    assert t.labels.tolist() == labels
    for i in (0, 1, 2, 3, 57, 99):  # image i is the i-th sorted file name
        with Image.open(ADI_DIR / "pics" / names[i]) as img:
            ref = np.asarray(img.convert("RGB").resize((32, 32), Image.BILINEAR)).transpose(2, 0, 1)
        assert np.array_equal(t.images[i].numpy(), ref), names[i]


@needs_adi
def test_adi_center_crop_takes_the_central_pixels_without_resizing() -> None:
    from PIL import Image

    names = sorted(p.name for p in (ADI_DIR / "pics").iterdir() if p.suffix.lower() == ".jpg")
    t = load_adi_trigger_set(ADI_DIR, mode="center_crop")
    assert t.images.shape == (100, 3, 32, 32) and t.source == "adi:center_crop"
    for i in (0, 2, 99):
        with Image.open(ADI_DIR / "pics" / names[i]) as img:
            a = np.asarray(img.convert("RGB"))
        h, w = a.shape[:2]
        top, left = int(round((h - 32) / 2.0)), int(round((w - 32) / 2.0))
        assert np.array_equal(t.images[i].numpy(), a[top: top + 32, left: left + 32].transpose(2, 0, 1))
    gray = load_adi_trigger_set(ADI_DIR, mode="center_crop", channels=1, image_size=24)
    assert gray.images.shape == (100, 1, 24, 24)
    assert torch.equal(gray.labels, t.labels)


def test_adi_mode_is_required() -> None:
    with pytest.raises(TypeError):
        load_adi_trigger_set(ADI_DIR)  # type: ignore[call-arg]
    with pytest.raises(DatasetError):
        load_adi_trigger_set(ADI_DIR, mode="crop")  # type: ignore[arg-type]


def _adi_like(folder: Path, labels: list[str], n_images: int) -> Path:
    from PIL import Image

    (folder / "pics").mkdir(parents=True)
    for i in range(1, n_images + 1):
        Image.fromarray(np.full((40, 50, 3), i * 20, dtype=np.uint8)).save(folder / "pics" / f"{i}.png")
    (folder / "labels-cifar.txt").write_text("\n".join(labels) + "\n")
    return folder


def test_adi_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_adi_trigger_set(tmp_path / "nowhere", mode="resize")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="pics"):
        load_adi_trigger_set(tmp_path / "empty", mode="resize")
    with pytest.raises(DatasetError, match="2 labels but .* 3 images"):
        load_adi_trigger_set(_adi_like(tmp_path / "count", ["1.0", "2.0"], 3), mode="resize")
    with pytest.raises(DatasetError, match="not an integer in"):
        load_adi_trigger_set(_adi_like(tmp_path / "range", ["1.0", "12.0", "3.0"], 3), mode="resize")
    with pytest.raises(DatasetError, match="not an integer in"):
        load_adi_trigger_set(_adi_like(tmp_path / "frac", ["1.0", "2.5", "3.0"], 3), mode="resize")
    ok = load_adi_trigger_set(_adi_like(tmp_path / "ok", ["4.0", "5.0", "6.0"], 3), mode="center_crop",
                              image_size=64)
    assert ok.images.shape == (3, 3, 64, 64)  # smaller than the crop: zero-padded, like torchvision
    assert ok.labels.tolist() == [4, 5, 6] and int(ok.images[0, 0, 0, 0]) == 0 and int(ok.images[0, 0, 32, 32]) == 20


# --------------------------------------------------------------------------- the key


def _key(secret: str = SECRET) -> OwnershipKey:
    return OwnershipKey(arch="cifar_resnet8", secret=secret)


def _images_key() -> OwnershipKey:
    """A key whose trigger set is loaded images (kept in the key's tensor file)."""
    return add_triggers(_key(), num_classes=10, images=make_trigger_set(10, num_classes=10, image_size=8, seed=1))


def test_key_round_trip_through_files(tmp_path: Path) -> None:
    blank = _key()
    key = add_triggers(blank, num_classes=10, n=30, image_size=16, per_batch=2)
    assert TRIGGERS_SECTION not in blank.sections  # a new key, the given one unchanged
    section = key.triggers()
    assert (section.n, section.num_classes, section.image_size, section.channels) == (30, 10, 16, 3)
    assert (section.source, section.images_digest, section.per_batch) == ("procedural", None, 2)
    assert not key.tensors  # procedural images are regenerated, never stored
    t = triggers_from_key(key)
    assert t.images.shape == (30, 3, 16, 16) and t.num_classes == 10 and t.source == "procedural"
    path = key.save(tmp_path / "owner.key.json")
    assert not list(tmp_path.glob("*.safetensors"))
    loaded = triggers_from_key(OwnershipKey.load(path))
    assert torch.equal(loaded.images, t.images) and torch.equal(loaded.labels, t.labels)
    assert loaded.digest() == t.digest() and key.schemes() == ["V3"]
    with pytest.raises(KeyMismatchError, match="already holds a 'triggers' section"):
        add_triggers(key, num_classes=10)  # a trigger set is never replaced


def test_labels_and_images_are_derived_from_the_secret() -> None:
    """The same secret gives the same set on any key made with it; another secret, other labels and images."""
    a = triggers_from_key(add_triggers(_key(), num_classes=10))
    b = triggers_from_key(add_triggers(_key(), num_classes=10))  # another key (nonce, date), same secret
    c = triggers_from_key(add_triggers(_key(OTHER_SECRET), num_classes=10))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert (a.labels != c.labels).float().mean() > 0.7 and not torch.equal(a.images, c.images)
    assert 0 <= int(a.labels.min()) and int(a.labels.max()) < 10 and len(torch.unique(a.labels)) == 10
    assert (a.labels == make_trigger_set(100, num_classes=10, seed=0).labels).float().mean() < 0.3  # not a fixed seed


def test_loaded_images_keep_their_pixels_but_get_derived_labels(tmp_path: Path) -> None:
    """Adi et al.'s public set comes with labels; the key keeps the images and derives its own labels,
    so nobody can bring images labelled with a model's own predictions."""
    adi = load_adi_trigger_set(_adi_like(tmp_path / "adi", [str(i % 10) for i in range(12)], 12), mode="resize")
    key = add_triggers(_key(), num_classes=10, images=adi)
    t = triggers_from_key(key)
    assert torch.equal(t.images, adi.images) and t.source == "images"
    assert not torch.equal(t.labels, adi.labels)  # the loader's labels are not used
    again = triggers_from_key(add_triggers(_key(), num_classes=10, images=adi.images))  # a tensor works too
    assert torch.equal(again.labels, t.labels)  # derived from the secret, the same for the same secret
    other = triggers_from_key(add_triggers(_key(OTHER_SECRET), num_classes=10, images=adi.images))
    assert torch.equal(other.images, t.images) and not torch.equal(other.labels, t.labels)
    key.save(tmp_path / "k.json")
    loaded = triggers_from_key(OwnershipKey.load(tmp_path / "k.json"))
    assert torch.equal(loaded.images, t.images) and torch.equal(loaded.labels, t.labels)


@pytest.mark.parametrize("field,value", [("labels", [1, 2, 3]), ("seed", 7), ("digest", "0" * 64)])
def test_a_triggers_section_that_names_its_labels_or_seed_is_refused(tmp_path: Path, field: str, value) -> None:
    path = add_triggers(_key(), num_classes=10, n=20).save(tmp_path / "k.json")
    manifest = json.loads(path.read_text())
    manifest["sections"]["triggers"][field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(KeyFileError, match=f"does not know \\({field}\\)"):
        OwnershipKey.load(path)


@pytest.mark.parametrize("field,value,match", [
    ("image_size", 10**5, "image_size must lie in"), ("n", 10**9, "n must lie in"), ("channels", 2, "channels"),
    ("num_classes", 1, "num_classes"), ("n", "100", "not int"), ("source", "images", "images_digest"),
])
def test_a_triggers_section_out_of_range_is_refused_on_load_before_any_allocation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value, match: str) -> None:
    import hf_lottery_verify.triggers.key as trigger_key

    path = add_triggers(_key(), num_classes=10, n=20).save(tmp_path / "k.json")
    manifest = json.loads(path.read_text())
    manifest["sections"]["triggers"][field] = value
    path.write_text(json.dumps(manifest))
    monkeypatch.setattr(trigger_key, "make_trigger_set", None)  # nothing may be generated from it
    with pytest.raises(KeyFileError, match=match):
        OwnershipKey.load(path)


@pytest.mark.parametrize("options,match", [(dict(n=0), "n must lie"), (dict(image_size=10**5), "image_size"),
                                           (dict(num_classes=1), "num_classes"), (dict(channels=2), "channels")])
def test_add_triggers_refuses_bad_options_with_a_library_error(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):  # one clear line on the command line, never a traceback
        add_triggers(_key(), **{"num_classes": 10, **options})


def test_loaded_images_must_be_a_uint8_batch_of_square_images() -> None:
    for images in (torch.zeros(3, 3, 8, 12, dtype=torch.uint8), torch.zeros(3, 3, 8, 8), torch.zeros(3, 8, 8)):
        with pytest.raises(ConfigError, match="uint8 .*square"):
            add_triggers(_key(), num_classes=10, images=images)


def test_key_tampering_is_detected(tmp_path: Path) -> None:
    key = _images_key()
    # altered images in memory
    images = key.tensors["triggers.images"].clone()
    images[0, 0, 0, 0] ^= 1
    forged = OwnershipKey(arch=key.arch, secret=key.secret, sections=json.loads(json.dumps(key.sections)),
                          tensors={**key.tensors, "triggers.images": images})
    with pytest.raises(KeyFileError, match="altered"):
        triggers_from_key(forged)
    # altered digest in the JSON file
    path = key.save(tmp_path / "k.json")
    manifest = json.loads(path.read_text())
    manifest["sections"]["triggers"]["images_digest"] = "0" * 64
    path.write_text(json.dumps(manifest))
    with pytest.raises(KeyFileError, match="altered"):
        triggers_from_key(OwnershipKey.load(path))
    # missing tensors, missing section
    bare = OwnershipKey(arch=key.arch, secret=key.secret, sections=json.loads(json.dumps(key.sections)))
    with pytest.raises(KeyFileError, match="missing"):
        triggers_from_key(bare)
    with pytest.raises(KeyMismatchError, match="no 'triggers' section"):
        triggers_from_key(_key())


def test_the_commitment_covers_the_trigger_set() -> None:
    key = _images_key()
    assert add_triggers(_key(), num_classes=10, n=20).commitment() != add_triggers(_key(), num_classes=10,
                                                                                  n=21).commitment()
    images = key.tensors["triggers.images"].clone()
    images[0, 0, 0, 0] ^= 1
    forged = OwnershipKey(arch=key.arch, secret=key.secret, nonce=key.nonce, sections=key.sections,
                          tensors={**key.tensors, "triggers.images": images})
    assert forged.commitment() != key.commitment()


def test_key_tensor_file_tampering_is_detected_on_load(tmp_path: Path) -> None:
    path = _images_key().save(tmp_path / "k.json")
    tfile = path.with_name(json.loads(path.read_text())["tensors"]["file"])
    raw = bytearray(tfile.read_bytes())
    raw[-1] ^= 0xFF
    tfile.write_bytes(bytes(raw))
    with pytest.raises(KeyFileError, match="altered or damaged .*restore both k.json and") as info:
        OwnershipKey.load(path)
    assert not isinstance(info.value, FileNotFoundError) and info.value.path == str(tfile)
    # bytes flipped in the middle (tensor data, not only the tail), or in the header
    for where in (len(raw) // 2, 10):
        raw = bytearray(tfile.read_bytes())
        raw[-1] ^= 0xFF  # undo the first flip
        raw[where] ^= 0x01
        tfile.write_bytes(bytes(raw))
        with pytest.raises(KeyFileError, match="checksum mismatch"):
            OwnershipKey.load(path)
        raw[where] ^= 0x01
        raw[-1] ^= 0xFF
        tfile.write_bytes(bytes(raw))


def test_a_key_file_of_another_format_version_is_refused(tmp_path: Path) -> None:
    path = _images_key().save(tmp_path / "k.json")
    manifest = json.loads(path.read_text())
    cases = [  # a list: True == 1 as a dict key
        (1, "format 1 .*reads format 3 only.*Sign and publish again"),
        (2, "format 2 .*reads format 3 only.*Sign and publish again"),
        (99, "has key format '99' \\(int\\); .*reads format 3 \\(an integer\\). Upgrade it, or restore"),
        (True, "has key format 'True' \\(bool\\)"),
        (0, "has key format '0'"),
        ("3", "has key format '3' \\(str\\)"),
        (None, "has key format 'None'"),
    ]
    for version, message in cases:
        path.write_text(json.dumps({**manifest, "hf_lottery_verify_key": version}))
        with pytest.raises(KeyFileError, match=message) as info:
            OwnershipKey.load(path)
        assert not isinstance(info.value, FileNotFoundError) and info.value.path == str(path)
    path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "hf_lottery_verify_key"}))
    with pytest.raises(KeyFileError, match="not an hf_lottery_verify ownership key"):
        OwnershipKey.load(path)
    path.write_text(json.dumps(manifest))
    assert OwnershipKey.load(path).format_version == manifest["hf_lottery_verify_key"] == 3  # the original loads


def test_a_key_json_pointing_elsewhere_or_malformed_is_refused(tmp_path: Path) -> None:
    path = _images_key().save(tmp_path / "k.json")
    manifest = json.loads(path.read_text())
    bad = {
        "the recorded checksum": ({**manifest, "tensors": {**manifest["tensors"], "sha256": "0" * 64}},
                                  "altered or damaged"),
        "a path outside the key's folder": ({**manifest, "tensors": {**manifest["tensors"], "file": "../x"}},
                                            "invalid tensor file '../x'"),
        "a non-object tensors entry": ({**manifest, "tensors": ["x"]}, "invalid tensor file"),
        "an unknown section": ({**manifest, "sections": {**manifest["sections"], "regions": {}}}, "unknown"),
        "a short secret": ({**manifest, "secret": "ab" * 16}, "secret must be 64"),
    }
    for what, (content, message) in bad.items():
        path.write_text(json.dumps(content))
        with pytest.raises(KeyFileError, match=message) as info:
            OwnershipKey.load(path)
        assert "restore" in str(info.value), what  # every message says how to recover
    path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "arch"}))
    with pytest.raises(KeyFileError, match="architecture"):
        OwnershipKey.load(path)
    path.write_text("{not json")
    with pytest.raises(KeyFileError, match="not an ownership key .*restore it"):
        OwnershipKey.load(path)
    path.write_text("[" * 100_000 + "]" * 100_000)  # hostile nesting: a typed error, never a crash
    with pytest.raises(KeyFileError, match="not an ownership key .*nested too deeply.*restore it"):
        OwnershipKey.load(path)


def test_a_missing_key_file_is_also_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileNotFoundError, match="No ownership key at .*Pass the JSON key file") as info:
        OwnershipKey.load(tmp_path / "nope.key.json")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, KeyFileError)
    assert info.value.path == str(tmp_path / "nope.key.json")
    with pytest.raises(KeyFileError, match="is a folder") as info:
        OwnershipKey.load(tmp_path)
    assert not isinstance(info.value, FileNotFoundError)


def test_a_missing_key_tensor_file_is_also_a_file_not_found_error(tmp_path: Path) -> None:
    path = _images_key().save(tmp_path / "k.json")
    tfile = path.with_name(json.loads(path.read_text())["tensors"]["file"])
    tfile.unlink()
    with pytest.raises(KeyFileNotFoundError, match="tensor file .* is missing; keep it next to k.json") as info:
        OwnershipKey.load(path)
    assert isinstance(info.value, FileNotFoundError) and info.value.path == str(tfile)


# --------------------------------------------------------------------------- evidence


def test_trigger_evidence_with_missing_answers() -> None:
    t = make_trigger_set(100, num_classes=10, seed=0)
    wrong = (t.labels + 1) % 10
    pred = t.labels.clone()
    pred[:40] = -1  # 40 unanswered, 60 right
    ev = trigger_evidence(pred, t, failed=40)
    assert (ev.n, ev.queried, ev.answered, ev.matches, ev.failed) == (100, 100, 60, 60, 40)
    assert ev.agreement == pytest.approx(0.6) and ev.positive and ev.reason is None
    assert ev.p_value == pytest.approx(binomial_tail(60, 100, 0.1), rel=1e-12)
    assert ev.threshold == 37 and not ev.inconclusive  # 37 of 100 at the default alpha, 1e-12
    # unanswered count as misses: the same as wrong answers, never better than right ones
    answered_wrong = torch.where(pred == -1, wrong, pred)
    assert trigger_evidence(answered_wrong, t).p_value == pytest.approx(ev.p_value, rel=1e-12)
    assert trigger_evidence(t.labels, t).p_value < ev.p_value
    json.dumps(ev.to_dict())


def test_trigger_evidence_negative_and_inconclusive() -> None:
    t = make_trigger_set(100, num_classes=10, seed=0)
    chance = t.labels.clone()
    chance[10:] = (chance[10:] + 1) % 10  # 10 of 100 right: chance level
    ev = trigger_evidence(chance, t)
    assert ev.matches == 10 and not ev.positive and not ev.inconclusive and ev.p_value > 0.4
    assert "chance" in ev.reason
    silent = trigger_evidence(torch.full((100,), -1, dtype=torch.int64), t, queried=100, failed=100)
    assert silent.answered == 0 and silent.matches == 0 and silent.p_value == 1.0
    assert not silent.positive and silent.inconclusive and "answered" in silent.reason
    few = t.labels.clone()
    few[20:] = -1  # 20 answers, all right: still below the 37 needed at 1e-12
    ev_few = trigger_evidence(few, t)
    assert ev_few.matches == 20 and not ev_few.positive and ev_few.inconclusive
    assert not trigger_evidence(few, t, alpha=1e-3).positive  # 21 needed at 1e-3: 20 is not enough
    few[20] = t.labels[20]
    assert trigger_evidence(few, t, alpha=1e-3).positive and trigger_evidence(few, t, alpha=1e-3).threshold == 21


def test_trigger_evidence_rejects_bad_predictions() -> None:
    t = make_trigger_set(10, num_classes=10, seed=0)
    with pytest.raises(ValueError):
        trigger_evidence(torch.zeros(9, dtype=torch.int64), t)
    with pytest.raises(ValueError):
        trigger_evidence(torch.zeros(10), t)
    out_of_range = torch.full((10,), 99, dtype=torch.int64)
    ev = trigger_evidence(out_of_range, t)
    assert ev.answered == 10 and ev.matches == 0


def test_predict_labels_on_a_model() -> None:
    model = make_model(num_labels=10, density=0.3)
    model.train()
    t = make_trigger_set(12, num_classes=10, image_size=16, seed=0)
    pred = predict_labels(model, t, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), image_size=8)
    assert pred.dtype == torch.int64 and pred.shape == (12,)
    assert int(pred.min()) >= 0 and int(pred.max()) < 10
    assert model.training  # mode restored
    again = predict_labels(model, t, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), image_size=8, batch_size=5)
    assert torch.equal(pred, again)
