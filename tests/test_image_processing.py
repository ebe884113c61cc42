"""Published tickets work with transformers' own loaders: the image processor, ``pipeline`` and remote code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import hf_lottery_verify as hlv
from hf_lottery_verify.data import FASHION_MNIST_DIR, FMNIST_CLASSES, load_image_dataset, normalize
from hf_lottery_verify.image_processing import SparseResNetImageProcessor
from hf_lottery_verify.training import TrainConfig, Trainer, evaluate

from .helpers import make_model

needs_fashion_mnist = pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                                         reason="Debian's dataset-fashion-mnist is not installed")

# Run in a fresh interpreter that cannot import hf_lottery_verify: only transformers, timm and the repo's own code.
WITHOUT_LIBRARY = r"""
import json, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_lottery_verify":
            raise ImportError("hf_lottery_verify is hidden in this test")
sys.meta_path.insert(0, Refuse())
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
images, out = [Image.open(p) for p in sys.argv[3:]], {}
for source in sys.argv[1:3]:  # a saved folder and a Hub repo
    model = AutoModelForImageClassification.from_pretrained(source, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=True)
    labels = pipeline("image-classification", model=source, trust_remote_code=True)(images, top_k=1)
    out[source] = {"pipeline": [r[0]["label"] for r in labels],
                   "logits": model(**processor(images, return_tensors="pt")).logits.tolist(),
                   "classes": [type(model).__module__, type(processor).__module__]}
out["library_loaded"] = any(m.startswith("hf_lottery_verify") for m in sys.modules)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fashion_ticket():
    """A ResNet-8 (option A) trained on 3,000 real Fashion-MNIST images (67% on the 200-image test split)."""
    data = load_image_dataset("fashion_mnist", train_limit=3000, test_limit=200, seed=0)
    torch.manual_seed(0)
    model = hlv.SparseResNetForImageClassification(hlv.SparseResNetConfig(arch="cifar_resnet8_a", in_chans=1))
    recipe = TrainConfig(epochs=4, batch_size=64, lr=0.2, schedule="onecycle", weight_decay=5e-4, pad=2, flip=False)
    Trainer(model, data.train, recipe, progress=False).train()  # its config records the data's statistics and names
    return model.eval(), data.test


def _pil(test) -> list[Image.Image]:
    return [Image.fromarray(x[0].numpy(), mode="L") for x in test.images]


def _library_names(model, test) -> list[str]:
    with torch.no_grad():
        logits = model(normalize(test.images, model.config.image_mean, model.config.image_std)).logits
    return [FMNIST_CLASSES[i] for i in logits.argmax(1).tolist()]


def test_processor_reads_images_as_the_library_does() -> None:
    model = make_model(in_chans=1)
    model.config.image_size, model.config.image_mean, model.config.image_std = 12, (0.3,), (0.4,)
    processor = SparseResNetImageProcessor.from_model_config(model.config)
    gray = torch.randint(0, 256, (3, 1, 12, 12), dtype=torch.uint8)
    rgb = [Image.fromarray(x[0].numpy(), mode="L").convert("RGB") for x in gray]  # what pipeline() hands over
    pixels = processor(rgb, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels, normalize(gray, (0.3,), (0.4,)))  # bit for bit
    assert processor(Image.new("RGB", (40, 30)), return_tensors="pt")["pixel_values"].shape == (1, 1, 12, 12)
    model.config.image_mean = model.config.image_std = None
    with pytest.raises(hlv.ConfigError, match="declares no input normalisation"):
        SparseResNetImageProcessor.from_model_config(model.config)


@pytest.mark.slow
@needs_fashion_mnist
def test_pipeline_on_a_folder_gives_class_names_at_the_library_accuracy(fashion_ticket, tmp_path: Path) -> None:
    from transformers import AutoImageProcessor, pipeline

    model, test = fashion_ticket
    model.save_pretrained(tmp_path / "ticket")
    assert {"preprocessor_config.json", "modeling_sparse_resnet.py"} <= {p.name for p in (tmp_path / "ticket").iterdir()}
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path / "ticket"), SparseResNetImageProcessor)
    answers = pipeline("image-classification", model=str(tmp_path / "ticket"))(_pil(test), top_k=1)
    names = [a[0]["label"] for a in answers]
    assert names == _library_names(model, test)
    truth = [FMNIST_CLASSES[i] for i in test.labels.tolist()]
    accuracy = 100 * sum(n == t for n, t in zip(names, truth, strict=True)) / len(truth)
    assert accuracy == evaluate(model, test)["accuracy"] and accuracy > 50  # chance: 10%


@pytest.mark.slow
@needs_fashion_mnist
def test_a_pushed_repo_loads_with_pipeline_and_without_the_library(fashion_ticket, hub_repo_id, tmp_path) -> None:
    from transformers import pipeline

    model, test = fashion_ticket
    hlv.push_model(model, hub_repo_id)
    model.save_pretrained(tmp_path / "folder")
    expected = _library_names(model, test)
    assert [a[0]["label"] for a in pipeline("image-classification", model=hub_repo_id)(_pil(test), top_k=1)] == expected
    paths = []
    for i, image in enumerate(_pil(test)[:40]):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", WITHOUT_LIBRARY, str(tmp_path / "folder"), hub_repo_id, *paths],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got.pop("library_loaded") is False and len(got) == 2
    with torch.no_grad():
        ours = model(normalize(test.images[:40], model.config.image_mean, model.config.image_std)).logits
    for loaded in got.values():
        assert all(m.startswith("transformers_modules") for m in loaded["classes"])
        assert loaded["pipeline"] == expected[:40]
        assert torch.allclose(torch.tensor(loaded["logits"]), ours, atol=1e-4)


def test_the_verifier_never_fetches_the_modeling_file(fresh_hub, hub_repo_id) -> None:
    model = make_model(density=0.2)
    key = hlv.embed_signature(model, "hlv", layers="all")
    hlv.push_model(model, hub_repo_id, key=key)
    from huggingface_hub import HfApi

    assert "modeling_sparse_resnet.py" in HfApi().list_repo_files(hub_repo_id)
    fresh_hub.clear_log()
    report = hlv.verify_hub_model(hub_repo_id, key=key, require_anchor=False)
    assert report.verdict == "owned" and not any(f.endswith(".py") for f in report.files_read)
    fetched = [r["path"] for r in fresh_hub.find_requests(path_contains="/resolve/")]
    assert fetched and not any(path.endswith(".py") for path in fetched)
    assert not hlv.load_model(hub_repo_id).config.to_dict().get("trust_remote_code")
