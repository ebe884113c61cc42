"""``verify_model`` and ``verify_hub_model``: every scheme of the owner's key against one suspect.

Flow for a white-box suspect (a Hub repo, a folder, a file, a state dict, a model):
read its raw tensors without trusting anything it says
(:func:`hf_lottery_verify.suspect.read_suspect`) → re-align its channels to the key's
reference when the key has one (:mod:`hf_lottery_verify.alignment`) → Scheme V2: recover
the mask from the weights and decode the keyed QR signature → Scheme V3: query the
suspect's network on the secret trigger set → Scheme V1 (with ``eval_data``): accuracy
with and without the key → one :class:`~hf_lottery_verify.verify.report.VerificationReport`.

A black-box suspect (an ``http(s)://`` inference endpoint, or any callable returning
labels) can only be tested with Scheme V3.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..errors import HfLotteryError, KeyMismatchError
from ..ownership_key import KEYMASK_SECTION, SIGNATURE_SECTION, TRIGGERS_SECTION, OwnershipKey
from ..suspect import Suspect, read_suspect
from .report import VerdictPolicy, VerificationReport, decide

__all__ = ["verify_model", "verify_hub_model", "quick_check"]

logger = logging.getLogger(__name__)

LOW_CONFIDENCE = 0.5
"""Alignment confidence below which the report notes that the suspect does not look like a copy."""
V1_DISCLAIMER = ("V1 key masks control who can use the ticket; they are not evidence of ownership of a copy "
                 "(a thief can fine-tune the locked ticket back)")


def _as_key(key: OwnershipKey | str | os.PathLike) -> OwnershipKey:
    return key if isinstance(key, OwnershipKey) else OwnershipKey.load(key)


def _key_facts(key: OwnershipKey) -> dict[str, Any]:
    return {"arch": key.arch, "schemes": key.schemes(), "commitment": key.commitment(), "created": key.created}


def _is_endpoint(suspect: Any) -> bool:
    return isinstance(suspect, str) and suspect.startswith(("http://", "https://"))


def _is_black_box_callable(suspect: Any) -> bool:
    return callable(suspect) and not isinstance(suspect, (nn.Module, str, os.PathLike, Mapping, Suspect))


# --------------------------------------------------------------------------- alignment


def _check_fits(suspect: Suspect, key: OwnershipKey) -> list[str]:
    """Refuse a suspect of another architecture altogether; return notes for partial fits.

    Widened layers (dummy channels) keep every name and change shapes: alignment deals with
    them. A suspect missing most of the architecture's convolutions is another network.
    """
    import timm

    with torch.device("meta"):
        expected = [n for n, p in timm.create_model(key.arch.split(".")[0]).named_parameters()
                    if p.dim() == 4]
    present = [n for n in expected if n in suspect.state_dict]
    if len(present) < max(1, len(expected) // 2):
        shown = ", ".join(sorted(suspect.state_dict)[:3]) or "no tensors"
        raise KeyMismatchError(
            f"The suspect is not a {key.arch}: it has {len(present)} of the {len(expected)} convolution weights "
            f"that architecture has (its tensors: {shown}, ...). Verification needs the key's architecture; "
            "use the key made for this model.")
    missing = len(expected) - len(present)
    return [f"{missing} of the key architecture's convolutions are missing from the suspect"] if missing else []


def _align(suspect: Suspect, key: OwnershipKey, notes: list[str]) -> tuple[dict[str, torch.Tensor], Any, Any]:
    """The suspect's tensors in the key's reference layout, the alignment and the reference.

    Without a reference in the key (keys made before re-alignment existed), the tensors are
    used in their stored order.
    """
    from ..alignment import align_suspect, reference_from_key

    reference = reference_from_key(key)
    if reference is None:
        notes.append("the key has no alignment reference; channels were read in their stored order (permuted or "
                     "widened copies cannot be re-aligned)")
        return suspect.state_dict, None, None
    alignment = align_suspect(suspect.state_dict, reference)
    if alignment.confidence < LOW_CONFIDENCE:
        notes.append(f"the suspect's channels match the key's reference poorly (confidence {alignment.confidence:.2f}):"
                     " it is probably not a copy of the owner's model")
    return alignment.state_dict, alignment, reference


def _reference_shapes(key: OwnershipKey) -> dict[str, tuple[int, ...]] | None:
    """Dense shapes from the key (to decode a compact-layout suspect whose header lies)."""
    shapes = (key.sections.get("reference") or {}).get("shapes")
    return {n: tuple(s) for n, s in shapes.items()} if isinstance(shapes, dict) else None


# --------------------------------------------------------------------------- schemes


def _v2_evidence(weights: Mapping[str, torch.Tensor], key: OwnershipKey, alignment: Any, reference: Any, *,
                 stored: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Scheme V2 on the re-aligned suspect.

    Re-alignment searches the suspect's channel orders for the best match to the owner's
    reference, so on a model that is no copy (alignment confidence below ``LOW_CONFIDENCE``)
    the aligned mask agrees with the signature more than chance would: measured on 60 null
    models, the aligned V2 p-values had a median of 0.04 where the suspect's own order gives
    about 0.5. There the p-value is the larger of the two (the search is not evidence); a
    decode to the key's text counts from either order.
    """
    from ..errors import HfLotteryError
    from ..recovery import recover_aligned_masks
    from ..signature import extract_signature

    source: dict[str, torch.Tensor] = dict(weights)
    if alignment is not None:
        # masks recovered in the reference's coordinates (rescaling undone, per-row counts);
        # handed to extraction as 0/1 weights, which it reads back exactly
        source.update({n: m.to(torch.float32) for n, m in recover_aligned_masks(alignment, reference).items()})
    ev = extract_signature(source, key)
    d = ev.to_dict()
    if alignment is not None and alignment.confidence < LOW_CONFIDENCE and stored is not None:
        d["aligned_p_value"] = ev.p_value
        try:
            own = extract_signature(dict(stored), key)
        except HfLotteryError as exc:  # e.g. a widened suspect: no own-order reading, so no calibrated p-value
            d["unaligned"] = {"error": str(exc)}
            d["p_value"] = 1.0
        else:
            unaligned = {"p_value": own.p_value, "matches": own.matches, "bit_agreement": own.bit_agreement}
            if own.matches and not ev.matches:
                d.update(own.to_dict())
            d["unaligned"] = unaligned
            d["aligned_p_value"] = ev.p_value
            d["p_value"] = max(ev.p_value, own.p_value)
    status = "decodes to the key's text" if d["matches"] else (
        f"decodes to another text {d['text']!r}" if d["text"] else f"does not decode ({d['decode_reason']})")
    d["summary"] = (f"QR signature {status}; bit agreement {d['bit_agreement']:.3f}, p={d['p_value']:.2g}"
                    + (f", {d['erasures']} erasures" if d["erasures"] else "")
                    + (" (p-value in the suspect's own channel order: the alignment found no copy)"
                       if "aligned_p_value" in d else ""))
    d["decisive"] = bool(d["matches"])
    return d


def _suspect_network(weights: Mapping[str, torch.Tensor], key: OwnershipKey, suspect: Suspect | None,
                     alignment: Any) -> nn.Module:
    """A model of the key's architecture holding the suspect's (aligned) weights, with its normalisation."""
    from ..loading import load_model

    model = alignment.to_model() if alignment is not None else load_model(dict(weights), arch=key.arch)
    config = (suspect.config if suspect else None) or {}
    published = (key.sections.get("reference") or {}).get("published") or {}
    mean, std = published.get("image_mean"), published.get("image_std")
    if mean is None and isinstance(config.get("pretrained_cfg"), dict):
        mean, std = config["pretrained_cfg"].get("mean"), config["pretrained_cfg"].get("std")
    if mean is not None and std is not None and len(mean) == model.config.in_chans:
        model.config.image_mean, model.config.image_std = tuple(mean), tuple(std)
    pretrained = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else {}
    input_size = pretrained.get("input_size")
    size = (published.get("image_size") or config.get("image_size")
            or (input_size[-1] if isinstance(input_size, (list, tuple)) and input_size else None))
    if isinstance(size, int) and size > 0:  # queries are resized to this: the size the published model was trained at, not the class default
        model.config.image_size = int(size)
    return model.eval()


def _v3_evidence(suspect: Any, key: OwnershipKey, *, policy: VerdictPolicy, tests: int, label2id: Mapping | None,
                 query_options: Mapping[str, Any]) -> dict[str, Any]:
    from ..blackbox import query_labels
    from ..triggers import trigger_evidence, triggers_from_key

    triggers = triggers_from_key(key)
    published = (key.sections.get("reference") or {}).get("published") or {}
    config = getattr(suspect, "config", None)
    size = published.get("image_size") or getattr(config, "image_size", None) or triggers.image_size
    chans = published.get("in_chans") or getattr(config, "in_chans", None) or triggers.channels
    adapted = triggers.resized(image_size=int(size), channels=int(chans))
    mapping = label2id or published.get("label2id") or None
    result = query_labels(suspect, adapted.images, label2id=mapping, **dict(query_options))
    ev = trigger_evidence(result.labels, triggers, alpha=policy.alpha / max(1, tests), queried=result.queried,
                          failed=result.failed)
    d = ev.to_dict()
    d["kind"] = result.kind
    d["errors"] = list(result.errors)[:5]
    d["summary"] = (f"trigger agreement {ev.matches}/{ev.n} ({ev.agreement:.0%}), p={ev.p_value:.2g}"
                    f"; {ev.answered} answered" + (f", {ev.failed} failed" if ev.failed else ""))
    d["decisive"] = bool(ev.p_value <= policy.alpha / max(1, tests))
    return d


def _v1_evidence(model: nn.Module, key: OwnershipKey, eval_data: Any) -> dict[str, Any]:
    from ..keymask import load_with_key
    from ..training import evaluate

    d: dict[str, Any] = {"note": V1_DISCLAIMER, "decisive": False}
    d["accuracy_without_key"] = evaluate(model, eval_data)["accuracy"]
    try:
        merged = load_with_key(model, key)
        d["accuracy_with_key"] = evaluate(merged, eval_data)["accuracy"]
        d["key_merges"] = True
    except HfLotteryError as exc:
        d["key_merges"] = False
        d["merge_error"] = str(exc)
    with_key = d.get("accuracy_with_key")
    d["summary"] = (f"accuracy {d['accuracy_without_key']:.2f}% as published"
                    + (f", {with_key:.2f}% with the key merged" if with_key is not None else
                       ", the key does not merge (the mask differs from the locked ticket)")
                    + " (informative only)")
    return d


# --------------------------------------------------------------------------- entry points


def verify_model(
    suspect: Any,
    key: OwnershipKey | str | os.PathLike,
    *,
    eval_data: Any = None,
    policy: VerdictPolicy | None = None,
    label2id: Mapping[str, int] | None = None,
    timeout: float = 10.0,
    retries: int = 2,
    budget: int | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> VerificationReport:
    """Verify a suspect against the owner's key with every scheme the key holds.

    Args:
        suspect: A model, a state dict, a :class:`~hf_lottery_verify.suspect.Suspect`, a
            folder or ``.safetensors`` file, a Hub repo id, an ``http(s)://`` inference
            endpoint, or any callable mapping a uint8 image batch to labels (black-box).
        key (`OwnershipKey`, `str` or `os.PathLike`): The owner's private key (or its path).
        eval_data (`ImageData`, *optional*): A labelled test split; adds the Scheme V1
            accuracies with and without the key (informative).
        policy (`VerdictPolicy`, *optional*): Decision thresholds (defaults: no false ``owned``).
        label2id (`Mapping[str, int]`, *optional*): How an endpoint's label strings map to
            class indices (default: the key's record of the published labels).
        timeout (`float`, *optional*, defaults to 10.0): Per-request timeout for endpoints.
        retries (`int`, *optional*, defaults to 2): Retries per endpoint request.
        budget (`int`, *optional*): Maximum endpoint requests.
        revision (`str`, *optional*): Hub revision, for repo ids.
        token (`str` or `bool`, *optional*): Hub token.
        local_files_only (`bool`, *optional*, defaults to `False`): Hub cache only.
        cache_dir (`str` or `os.PathLike`, *optional*): Hub cache folder.

    Returns:
        The :class:`VerificationReport`.

    Raises:
        KeyFileError: The key cannot be read.
        CheckpointError, PickleRefusedError, HubError: The suspect cannot be read at all.
        EndpointError: The endpoint refuses every connection.
    """
    t0 = time.perf_counter()
    key = _as_key(key)
    policy = policy or VerdictPolicy()
    notes: list[str] = []
    timings: dict[str, float] = {}
    evidence: dict[str, dict[str, Any]] = {}
    query = {"timeout": timeout, "retries": retries, "budget": budget}
    tests = 1
    report = VerificationReport(verdict="inconclusive", key=_key_facts(key), policy=vars(policy) | {},
                                library=f"hf_lottery_verify {__version__}")

    if _is_endpoint(suspect) or _is_black_box_callable(suspect):
        report.source = suspect if isinstance(suspect, str) else getattr(suspect, "__name__", type(suspect).__name__)
        report.kind = "endpoint" if isinstance(suspect, str) else "callable"
        if TRIGGERS_SECTION not in key.sections:
            notes.append("a black-box suspect can only be tested with a trigger set (Scheme V3); this key has none")
        else:
            t = time.perf_counter()
            evidence["V3"] = _v3_evidence(suspect, key, policy=policy, tests=tests, label2id=label2id,
                                          query_options=query)
            timings["v3_s"] = time.perf_counter() - t
        return _finish(report, evidence, policy, tests, notes, timings, t0)

    t = time.perf_counter()
    shapes = _reference_shapes(key)
    read = suspect if isinstance(suspect, Suspect) else read_suspect(
        suspect, revision=revision, token=token, local_files_only=local_files_only, cache_dir=cache_dir,
        shapes=shapes)
    timings["read_s"] = time.perf_counter() - t
    report.source, report.kind, report.layout = read.source, read.kind, read.layout
    report.repo_id, report.revision, report.commit_sha = read.repo_id, read.revision, read.commit_sha
    report.files_read = list(read.files_read)
    report.claim = read.claim
    if read.claim is not None:
        report.claim_matches_key = read.claim.get("key_commitment") == key.commitment() if read.claim.get(
            "key_commitment") else None
    notes.extend(read.notes)
    notes.extend(_check_fits(read, key))

    t = time.perf_counter()
    weights, alignment, reference = _align(read, key, notes)
    timings["align_s"] = time.perf_counter() - t
    if alignment is not None:
        report.alignment = alignment.to_dict()

    if SIGNATURE_SECTION in key.sections:
        t = time.perf_counter()
        try:
            evidence["V2"] = _v2_evidence(weights, key, alignment, reference, stored=read.state_dict)
        except HfLotteryError as exc:
            evidence["V2"] = {"error": str(exc), "summary": f"not readable: {exc}", "decisive": False}
        timings["v2_s"] = time.perf_counter() - t

    model = None
    if TRIGGERS_SECTION in key.sections or (eval_data is not None and KEYMASK_SECTION in key.sections):
        try:
            model = suspect if isinstance(suspect, nn.Module) and alignment is None else _suspect_network(
                weights, key, read, alignment)
        except HfLotteryError as exc:
            notes.append(f"the suspect's weights do not build a {key.arch}: {exc}")
    if TRIGGERS_SECTION in key.sections:
        t = time.perf_counter()
        if model is None:
            evidence["V3"] = {"error": "no network could be built from the suspect's weights",
                              "summary": "not testable", "decisive": False}
        else:
            evidence["V3"] = _v3_evidence(model, key, policy=policy, tests=tests, label2id=label2id,
                                          query_options=query)
        timings["v3_s"] = time.perf_counter() - t
    if eval_data is not None and KEYMASK_SECTION in key.sections and model is not None:
        t = time.perf_counter()
        evidence["V1"] = _v1_evidence(model, key, eval_data)
        timings["v1_s"] = time.perf_counter() - t
    elif KEYMASK_SECTION in key.sections:
        notes.append("V1 figures need eval_data (a labelled test split); " + V1_DISCLAIMER)
    return _finish(report, evidence, policy, tests, notes, timings, t0)


def _finish(report: VerificationReport, evidence: dict[str, dict[str, Any]], policy: VerdictPolicy, tests: int,
            notes: list[str], timings: dict[str, float], t0: float) -> VerificationReport:
    report.evidence = evidence
    report.tests = tests
    report.verdict, report.reasons = decide(evidence, policy=policy, tests=tests)
    report.notes = notes
    timings["total_s"] = time.perf_counter() - t0
    report.timings = {k: round(v, 4) for k, v in timings.items()}
    return report


def quick_check(repo_id: str, key: OwnershipKey | str | os.PathLike, *, revision: str | None = None,
                token: str | bool | None = None) -> VerificationReport:
    """Read the public claim from the weights header over HTTP range requests; no weights are downloaded.

    A claim is information, not evidence (anyone can write one), so the verdict of a quick
    check is never ``owned``: it is ``inconclusive`` and says whether the claim carries the
    key's commitment.

    Args:
        repo_id (`str`): The Hub repo.
        key (`OwnershipKey`, `str` or `os.PathLike`): The owner's key (only its public commitment is used).
        revision (`str`, *optional*): Branch, tag or commit.
        token (`str` or `bool`, *optional*): Hub token.

    Returns:
        The report (``quick=True``).

    Raises:
        HubError: The repo or its weights header cannot be read.
    """
    from ..hub import read_remote_claim

    t0 = time.perf_counter()
    key = _as_key(key)
    remote = read_remote_claim(repo_id, revision=revision, token=token)
    claim = remote.claim
    matches = None if not claim or not claim.get("key_commitment") else claim["key_commitment"] == key.commitment()
    if claim is None:
        reason = "the weights header carries no ownership claim"
    elif matches:
        reason = "the published claim carries this key's commitment (a claim is not evidence; run a full verification)"
    else:
        reason = "the published claim carries another key's commitment (run a full verification)"
    return VerificationReport(
        verdict="inconclusive", reasons=[reason], source=repo_id, kind="hub", repo_id=repo_id, revision=revision,
        commit_sha=remote.commit_sha, files_read=[f"{remote.filename} (header only)"], claim=claim,
        claim_matches_key=matches, key=_key_facts(key), quick=True, library=f"hf_lottery_verify {__version__}",
        timings={"total_s": round(time.perf_counter() - t0, 4)})


def verify_hub_model(
    repo_id_or_path: str | os.PathLike,
    *,
    key: OwnershipKey | str | os.PathLike,
    revision: str | None = None,
    token: str | bool | None = None,
    eval_data: Any = None,
    quick: bool = False,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    policy: VerdictPolicy | None = None,
    priority: bool = True,
    progress: Callable[[str], None] | None = None,
) -> VerificationReport:
    """Pull a Hub repo (or read a local folder or file) and verify it against the owner's key.

    Args:
        repo_id_or_path (`str` or `os.PathLike`): ``owner/name`` on the Hub (or the server in
            ``HF_ENDPOINT``), or a local folder / ``.safetensors`` file.
        key (`OwnershipKey`, `str` or `os.PathLike`): The owner's private key (or its path).
        revision (`str`, *optional*): Branch, tag or commit to verify.
        token (`str` or `bool`, *optional*): Hub token.
        eval_data (`ImageData`, *optional*): A labelled test split for the Scheme V1 figures.
        quick (`bool`, *optional*, defaults to `False`): Only read the public claim from the
            weights header (range requests; no weights downloaded, no evidence).
        local_files_only (`bool`, *optional*, defaults to `False`): Verify from the Hub cache
            (also with ``HF_HUB_OFFLINE=1``; an unreachable server falls back to the cache too).
        cache_dir (`str` or `os.PathLike`, *optional*): Hub cache folder.
        policy (`VerdictPolicy`, *optional*): Decision thresholds.
        priority (`bool`, *optional*, defaults to `True`): For Hub repos, walk the commit
            history to find when the key's commitment was first published.
        progress (`Callable[[str], None]`, *optional*): Receives one line per stage.

    Returns:
        The :class:`VerificationReport` (with the repo id and the resolved commit sha).

    Raises:
        HubError: The repo or revision does not exist, or the server is unreachable and the
            repo is not cached.
        PickleRefusedError: The repo holds only pickle weights.
        CorruptCheckpointError: The weights file is truncated or corrupt.
        CheckpointError: No weights; the path does not exist.
        KeyFileError: The key cannot be read.
    """
    say = progress or (lambda _line: None)
    key = _as_key(key)
    if quick:
        say(f"reading the claim of {repo_id_or_path} (header only)")
        return quick_check(str(repo_id_or_path), key, revision=revision, token=token)
    say(f"reading {repo_id_or_path}" + (f" @ {revision}" if revision else ""))
    suspect = read_suspect(repo_id_or_path, revision=revision, token=token, local_files_only=local_files_only,
                           cache_dir=cache_dir)
    say("checking the evidence")
    report = verify_model(suspect, key, eval_data=eval_data, policy=policy)
    if priority and suspect.kind == "hub" and not any("local Hub cache" in n for n in suspect.notes):
        t = time.perf_counter()
        try:
            report.priority = _priority(suspect.repo_id or str(repo_id_or_path), key, token=token, revision=revision)
        except HfLotteryError as exc:
            report.notes.append(f"commit history not read: {exc}")
        report.timings["priority_s"] = round(time.perf_counter() - t, 4)
    return report


def _priority(repo_id: str, key: OwnershipKey, *, token: str | bool | None, revision: str | None
              ) -> dict[str, Any]:
    from ..hub import claim_history

    mine = key.commitment()
    history = claim_history(repo_id, token=token, revision=revision)
    first = next((h for h in history if h["commitment"] == mine), None)
    others: dict[str, dict[str, Any]] = {}
    for h in history:
        c = h["commitment"]
        if c and c != mine and c not in others:
            others[c] = {"first_commit": h["commit"], "first_date": h["date"]}
    return {"commitment": mine, "first_commit": first["commit"] if first else None,
            "first_date": first["date"] if first else None, "commits_read": len(history), "other_claims": others}
