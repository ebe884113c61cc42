"""Tests of hf_lottery_verify.cards: model cards, ownership badges, card files."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

from hf_lottery_verify.cards import (
    BADGE_FILENAME,
    CARD_FILENAME,
    CARD_TAGS,
    CardError,
    library_name_for,
    list_badge_statuses,
    render_badge,
    render_model_card,
    sanitize_claim,
    save_card_files,
)
from hf_lottery_verify.cards.robustness import measured_robustness, summarize_attack_matrix
from hf_lottery_verify.errors import HfLotteryError, UnknownNameError

SVG = "{http://www.w3.org/2000/svg}"
COMMITMENT = "sha256:" + "3f" * 32
CLAIM = {
    "claim_version": 1,
    "owner": "alice",
    "created": "2026-11-30T12:00:00+00:00",
    "schemes": ["V2", "V3"],
    "key_commitment": COMMITMENT,
    "library": "hf_lottery_verify 0.2.0",
}


def _card(**overrides):
    kwargs = dict(
        repo_id="alice/r18-ticket",
        arch="resnet18",
        num_labels=10,
        density=0.01236,
        accuracy=0.936,
        dataset="uoft-cs/cifar10",
        dataset_name="CIFAR-10",
        claim=CLAIM,
    )
    kwargs.update(overrides)
    return render_model_card(**kwargs)


def _metrics(eval_results: list[EvalResult]) -> dict[str, object]:
    return {r.metric_type: r.metric_value for r in eval_results}


def _code_block_after(text: str, heading: str) -> str:
    """The first fenced python block after a heading."""
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


# --------------------------------------------------------------------------- card metadata


def test_card_round_trips_through_a_file(tmp_path: Path) -> None:
    card = _card()
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    assert loaded.data.to_dict() == card.data.to_dict()
    assert loaded.data.library_name == "timm"
    assert loaded.data.license == "apache-2.0"
    assert loaded.data.pipeline_tag == "image-classification"
    assert loaded.data.datasets == ["uoft-cs/cifar10"]
    assert loaded.data.model_name == "r18-ticket"
    assert loaded.text == card.text


def test_model_index_validates_with_the_same_values() -> None:
    card = _card()
    model_index = ModelCard(str(card)).data.to_dict()["model-index"]
    name, results = model_index_to_eval_results(model_index)
    assert name == "r18-ticket"
    assert _metrics(results) == {"accuracy": 0.936, "density": 0.01236}
    for result in results:
        assert result.task_type == "image-classification"
        assert result.dataset_type == "uoft-cs/cifar10"
        assert result.dataset_name == "CIFAR-10"
    # The client rebuilds the same EvalResults when it parses the card text.
    assert ModelCard(str(card)).data.eval_results == card.data.eval_results


def test_density_is_reported_without_accuracy_or_dataset() -> None:
    card = _card(accuracy=None, dataset=None, dataset_name=None)
    results = ModelCard(str(card)).data.eval_results
    assert _metrics(results) == {"density": 0.01236}
    assert results[0].dataset_type == "custom"
    assert card.data.datasets is None
    assert "Top-1 accuracy" not in card.text


@pytest.mark.parametrize(
    ("arch", "library_name"),
    [("resnet18", "timm"), ("resnet50.a1_in1k", "timm"), ("cifar_resnet20", "hf_lottery_verify")],
)
def test_tags_and_library_name(arch: str, library_name: str) -> None:
    card = _card(arch=arch, card_data={"tags": ["cifar10", "sparse"]})
    data = ModelCard(str(card)).data
    assert library_name_for(arch) == library_name
    assert data.library_name == library_name
    for tag in (*CARD_TAGS, "ownership-protected", "cifar10"):
        assert tag in data.tags
    assert len(data.tags) == len(set(data.tags))
    assert data.lottery_ticket["arch"] == arch


def test_loading_instructions_depend_on_the_architecture() -> None:
    timm_block = _code_block_after(_card(arch="resnet18").text, "## How to load")
    assert 'timm.create_model("hf-hub:alice/r18-ticket", pretrained=True)' in timm_block
    assert "hf_lottery_verify" not in timm_block

    cifar_text = _card(arch="cifar_resnet20").text
    cifar_block = _code_block_after(cifar_text, "## How to load")
    assert cifar_block.index("import hf_lottery_verify") < cifar_block.index("timm.create_model(")
    assert 'AutoModelForImageClassification.from_pretrained("alice/r18-ticket")' in cifar_text


def test_card_without_claim_is_not_tagged_protected() -> None:
    card = _card(claim=None)
    data = ModelCard(str(card)).data
    assert "ownership-protected" not in data.tags
    assert "ownership_claim" not in data.to_dict()
    assert "No ownership claim was published" in card.text
    assert "ownership: unverified" in card.text


def test_card_body_has_the_required_sections() -> None:
    text = _card().text
    assert "![ownership: protected." in text and f"]({BADGE_FILENAME})" in text
    assert "1.236%" in text
    assert "93.6%" in text
    assert "pip install hf_lottery_verify" in text
    assert "hf-lottery verify alice/r18-ticket --key key.json" in text
    assert 'hf_lottery_verify.verify_hub_model("alice/r18-ticket", key="key.json")' in text
    assert "Verification needs the owner's private key" in text
    assert "A claim alone proves nothing" in text
    assert "You are caught stealing my winning lottery ticket! Making a lottery ticket claim its ownership" in text
    assert "@inproceedings{" in text and "NeurIPS" in text
    # The public claim: owner, date, commitment.
    assert "| Owner | alice |" in text
    assert "2026-11-30T12:00:00+00:00" in text
    assert COMMITMENT in text


def test_robustness_is_copied_from_the_measured_attack_matrix() -> None:
    matrix = json.loads((Path(__file__).parents[1] / "bench" / "results" / "attack_matrix_cpu.json").read_text())
    summary = measured_robustness()
    assert summary == json.loads(json.dumps(summarize_attack_matrix(matrix), default=str))  # re-run: re-copied
    text = _card().text
    assert f"**{summary['successful']} of {summary['rows']}** attacks" in text
    lines = text.splitlines()
    for attack in summary["attacks"]:  # each measured attack, with every verdict it got, and nothing else claimed
        (row,) = [line for line in lines if line.startswith(f"| {attack['attack']} | {attack['variant']} | ")]
        assert all(f"`{verdict}` ×{n}" in row for verdict, n in attack["verdicts"].items())
        assert all(str(strength) in row for strength in attack["strengths"])


# --------------------------------------------------------------------------- claims


def test_claim_is_an_allow_list_nothing_else_reaches_the_card() -> None:
    leaky = {
        **CLAIM,
        "regions": [[3, 17, 42]],
        "qr": {"version": 3, "error_level": "H"},
        "qr_version": 7,
        "layer": "layer1.0.conv2.weight",
        "offset": [12345, 67890],
        "signatureRow": 4711,
        "nested": {"ok": "kept-value", "param_name": "conv1.weight"},
        "note": "visible-note",
    }
    card = _card(claim=leaky)
    published = card.data.to_dict()["ownership_claim"]
    assert published == CLAIM
    text = str(card)
    for secret in ("regions", "qr_version", "error_level", "12345", "67890", "4711", "conv2.weight", "conv1.weight",
                   "kept-value", "visible-note"):
        assert secret not in text
    # The caller's dict is left untouched.
    assert "regions" in leaky


def test_odd_claim_values_never_crash() -> None:
    import datetime

    odd = {
        "owner": None,
        "created": datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc),
        "schemes": ["V2", {"x": 1}],
        "key_commitment": "not-a-hash",
        "library": {"name": "x"},  # structured: dropped
        "weird": float("nan"),
        7: {"deep": [1, 2.5, None, True]},
    }
    claim = sanitize_claim(odd)
    assert claim == {"owner": None, "created": "2026-11-30T12:00:00+00:00", "schemes": ["V2"],
                     "key_commitment": "not-a-hash"}
    card = _card(claim=odd)
    assert ModelCard(str(card)).data.ownership_claim == claim
    assert "not named (anonymous claim)" in card.text


def test_card_data_cannot_smuggle_a_claim() -> None:
    with pytest.raises(CardError, match="claim="):
        _card(card_data={"ownership_claim": {"owner": "mallory", "layer": "layer1.0.conv1.weight"}})


def test_claim_must_be_a_mapping() -> None:
    with pytest.raises(CardError):
        _card(claim=["owner", "alice"])


def test_markdown_and_html_in_user_text_are_escaped() -> None:
    owner = "eve | <img src=x onerror=alert(1)> **bold** [link](http://x) `tick`"
    card = _card(claim={**CLAIM, "owner": owner}, dataset=None, dataset_name="My <b>data</b> | set")
    text = card.text
    assert "<img" not in text and "<b>" not in text
    owner_row = next(line for line in text.splitlines() if line.startswith("| Owner |"))
    assert len(re.findall(r"(?<!\\)\|", owner_row)) == 3  # the cell's own pipe is escaped
    assert "\\*\\*bold\\*\\*" in owner_row and "\\[link\\]" in owner_row and "\\`tick\\`" in owner_row
    # Metadata keeps the raw value: YAML is data, not Markdown.
    assert ModelCard(str(card)).data.ownership_claim["owner"] == owner


# --------------------------------------------------------------------------- card_data and errors


def test_card_data_adds_and_overrides_fields() -> None:
    extra = {
        "license": "mit",
        "tags": ["my-tag"],
        "language": "en",
        "model-index": [
            {
                "name": "r18-ticket",
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image Classification"},
                        "dataset": {"type": "uoft-cs/cifar10", "name": "CIFAR-10"},
                        "metrics": [{"type": "accuracy", "value": 0.95}, {"type": "f1", "value": 0.9}],
                    }
                ],
            }
        ],
    }
    data = ModelCard(str(_card(card_data=extra))).data
    assert data.license == "mit" and data.language == "en"
    assert "my-tag" in data.tags and "ownership-protected" in data.tags
    assert _metrics(data.eval_results) == {"accuracy": 0.95, "density": 0.01236, "f1": 0.9}

    data = _card(card_data=ModelCardData(license="cc-by-4.0", base_model="timm/resnet18.a1_in1k")).data
    assert data.license == "cc-by-4.0" and data.base_model == "timm/resnet18.a1_in1k"


def test_card_data_eval_results_without_a_model_name() -> None:
    extra = EvalResult(
        task_type="image-classification",
        dataset_type="uoft-cs/cifar10",
        dataset_name="CIFAR-10",
        metric_type="accuracy",
        metric_value=0.5,
        dataset_split="train",
    )
    data = ModelCard(str(_card(card_data={"eval_results": [extra]}))).data
    assert data.model_name == "r18-ticket"
    assert sorted(r.metric_value for r in data.eval_results) == [0.01236, 0.5, 0.936]


def test_extreme_densities_are_not_shown_as_zero() -> None:
    text = _card(density=1.2e-6, accuracy=None).text
    assert "0.00012%" in text and "**0%**" not in text


@pytest.mark.parametrize(
    "overrides",
    [
        {"repo_id": "not a repo id"},
        {"arch": "resnet18; rm -rf /"},
        {"num_labels": 0},
        {"density": 0.0},
        {"density": 1.5},
        {"density": float("nan")},
        {"accuracy": 93.6},
        {"dataset": "../etc"},
        {"card_data": "license: mit"},
        {"card_data": {"model-index": [{"name": "x"}]}},
        {"card_data": {"tags": [1, 2]}},
    ],
)
def test_bad_arguments_raise_card_errors(overrides: dict) -> None:
    with pytest.raises(CardError) as info:
        _card(**overrides)
    assert isinstance(info.value, (HfLotteryError, ValueError))


def test_percentage_accuracy_gets_a_hint() -> None:
    with pytest.raises(CardError, match="fraction"):
        _card(accuracy=93.6)


# --------------------------------------------------------------------------- badges


@pytest.mark.parametrize("status", list_badge_statuses())
def test_badge_is_well_formed_svg_for_every_status(status: str) -> None:
    svg = render_badge(status=status)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img" and root.get("aria-label")
    title = root.find(f"{SVG}title")
    assert title is not None and title.text.startswith("ownership: ")
    rect_fills = [r.get("fill") for r in root.iter(f"{SVG}rect")]
    assert len({f for f in rect_fills if f and f.startswith("#") and f != "#fff"}) == 2  # two halves
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


def test_badge_statuses_cover_the_verdicts() -> None:
    assert set(list_badge_statuses()) == {"protected", "owned", "not_owned", "inconclusive", "unverified"}
    with pytest.raises(UnknownNameError) as info:
        render_badge(status="stolen")
    assert "protected" in str(info.value)


def test_badge_escapes_user_text() -> None:
    label = "a<b>&\"c'</text><script>x</script>"
    message = "]]><!-- \x00\x1b ok"
    svg = render_badge(status="owned", label=label, message=message, detail="<title>spoof</title>")
    assert "<script>" not in svg and "<b>" not in svg and "\x00" not in svg
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts.count(label) == 2
    assert texts.count("]]><!-- ok") == 2
    assert root.find(f"{SVG}title").text == f"{label}: ]]><!-- ok. <title>spoof</title>"


def test_badge_width_follows_the_text_and_long_text_is_shortened() -> None:
    short = ET.fromstring(render_badge(message="ok"))
    wide = ET.fromstring(render_badge(message="WWWWWWWWWW"))
    assert float(wide.get("width")) > float(short.get("width"))
    long_svg = ET.fromstring(render_badge(message="x" * 500))
    assert float(long_svg.get("width")) < 500
    assert any(t.text.endswith("…") for t in long_svg.iter(f"{SVG}text"))


# --------------------------------------------------------------------------- files


def test_save_card_files_writes_both_files(tmp_path: Path) -> None:
    card = _card()
    badge = render_badge(status="protected")
    folder = tmp_path / "repo"
    paths = save_card_files(folder, card, badge)
    assert paths == [folder / CARD_FILENAME, folder / BADGE_FILENAME]
    assert paths[0].read_text(encoding="utf-8") == str(card)
    assert paths[1].read_text(encoding="utf-8") == badge
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD_FILENAME, BADGE_FILENAME])  # no temp files left
    assert ModelCard.load(paths[0]).data.library_name == "timm"
    ET.parse(paths[1])

    # Overwriting works, and a card alone is fine.
    assert save_card_files(folder, str(_card(claim=None)), None) == [folder / CARD_FILENAME]
    assert "ownership-protected" not in paths[0].read_text(encoding="utf-8")


def test_save_card_files_refuses_a_malformed_badge(tmp_path: Path) -> None:
    with pytest.raises(CardError):
        save_card_files(tmp_path, _card(), "<svg><unclosed></svg>")
    with pytest.raises(CardError):
        save_card_files(tmp_path, _card(), "<html/>")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- packaging


def test_pyproject_ships_every_subpackage_and_the_templates() -> None:
    """When pyproject.toml lists packages explicitly (to map model_cards/), the list must not drift."""
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    root = Path(__file__).resolve().parent.parent
    setuptools_cfg = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    if not isinstance(setuptools_cfg.get("packages"), list):
        pytest.skip("pyproject.toml does not map model_cards/ into the package yet (see hf_lottery_verify/cards.py)")
    on_disk = {
        ".".join(p.parent.relative_to(root).parts)
        for p in (root / "hf_lottery_verify").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk <= set(setuptools_cfg["packages"])
    assert setuptools_cfg["package-dir"]["hf_lottery_verify.model_cards"] == "model_cards"
    data = setuptools_cfg["package-data"]["hf_lottery_verify.model_cards"]
    assert all(any(Path(name).match(pattern) for pattern in data) for name in ("x.md.j2", "x.svg.j2"))


def test_templates_are_read_from_the_installed_package_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel keeps the templates in hf_lottery_verify/model_cards/; that copy wins over the checkout's."""
    from hf_lottery_verify.cards import templates

    (tmp_path / "model_cards").mkdir()
    (tmp_path / "model_cards" / templates.BADGE_TEMPLATE_NAME).write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    monkeypatch.setattr(templates.resources, "files", lambda package: tmp_path)
    assert render_badge() == "<svg xmlns='http://www.w3.org/2000/svg'/>"


def test_missing_template_raises_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import hf_lottery_verify.cards as cards
    from hf_lottery_verify.cards import templates

    monkeypatch.setattr(templates, "ASSETS_DIRNAME", "no_such_folder")
    with pytest.raises(cards.CardTemplateNotFoundError) as info:
        render_badge()
    assert isinstance(info.value, FileNotFoundError)
    assert "sparse_ticket" not in str(info.value) and cards.BADGE_TEMPLATE_NAME in str(info.value)
