"""``verify_model`` and ``verify_hub_model``: every scheme of the owner's key against one suspect.

Flow for a white-box suspect (a Hub repo, a folder, a file, a state dict, a model):
read its raw tensors without trusting anything it says
(:func:`hf_lottery_verify.suspect.read_suspect`) → re-align its channels to the key's
reference when the key has one (:mod:`hf_lottery_verify.alignment`) → Scheme V2: recover
the mask from the weights and decode the keyed QR signature → Scheme V3: query the
suspect's network on the trigger set regenerated from the key → Scheme V1 (with
``eval_data``): accuracy with and without the key → the key's anchor, read back from the
Hub, against the suspect's first public appearance → one
:class:`~hf_lottery_verify.verify.report.VerificationReport`.

A black-box suspect (an ``http(s)://`` inference endpoint, or any callable returning
labels) can only be tested with Scheme V3. Several keys (a dispute) are checked against one
reading of the suspect and ranked by anchor time.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..anchors import AnchorCheck, Appearance, check_anchor, first_appearance
from ..atomic import file_sha256
from ..errors import HfLotteryError, KeyMismatchError
from ..ownership_key import KEYMASK_SECTION, SIGNATURE_SECTION, TRIGGERS_SECTION, KeyLike, OwnershipKey, as_key
from ..signature import SignatureEvidence
from ..suspect import Suspect, read_suspect
from ..symmetry import DIHEDRAL, dihedral
from ..triggers import TriggerEvidence
from .report import VerdictPolicy, VerificationReport, decide

__all__ = ["verify", "verify_model", "verify_hub_model", "quick_check"]


LOW_CONFIDENCE = 0.5
"""Alignment confidence below which the report notes that the suspect does not look like a copy."""
V1_DISCLAIMER = ("V1 key masks control who can use the ticket; they are not evidence of ownership of a copy "
                 "(a thief can fine-tune the locked ticket back)")


def _key_facts(key: OwnershipKey) -> dict[str, Any]:
    return {"arch": key.arch, "schemes": key.schemes(), "commitment": key.commitment(),
            "anchors": [f"{a.repo_id}@{a.commit[:12]}" for a in key.anchors]}


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
        expected = [n for n, p in timm.create_model(key.arch).named_parameters()
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
    if alignment.gone_blocks:
        notes.append("blocks that no longer compute anything: " + ", ".join(
            f"{b} ({why})" for b, why in alignment.gone_blocks.items()) + "; their slots read as erasures")
    return alignment.state_dict, alignment, reference.live_only


def _reference_shapes(key: OwnershipKey) -> dict[str, tuple[int, ...]] | None:
    """Dense shapes from the key (to decode a compact-layout suspect whose header lies)."""
    shapes = (key.sections.get("reference") or {}).get("shapes")
    return {n: tuple(s) for n, s in shapes.items()} if isinstance(shapes, dict) else None


# --------------------------------------------------------------------------- schemes


def _signature(weights: Mapping[str, torch.Tensor], key: OwnershipKey, alignment: Any, reference: Any, *,
               stored: Mapping[str, torch.Tensor] | None) -> SignatureEvidence:
    """Scheme V2 on the re-aligned suspect.

    Re-alignment searches the suspect's channel orders for the best match to the owner's
    reference, so on a model that is no copy (alignment confidence below ``LOW_CONFIDENCE``)
    the aligned mask agrees with the signature more than chance would: measured on 60 null
    models, the aligned V2 p-values had a median of 0.04 where the suspect's own order gives
    about 0.5. There the p-value is the larger of the two (the search is not evidence); a
    decode to the key's text counts from either order.
    """
    from ..alignment import recover_aligned_masks
    from ..signature import extract_signature

    source: dict[str, torch.Tensor] = dict(weights)
    kept = None
    if alignment is not None:
        # masks recovered in the reference's coordinates (rescaling undone, per-row counts);
        # handed to extraction as 0/1 weights, which it reads back exactly
        source.update({n: m.to(torch.float32) for n, m in recover_aligned_masks(alignment, reference).items()})
    elif reference is not None:
        kept = {n: int(m.sum()) for n, m in reference.masks.items()}
    ev = extract_signature(source, key=key, kept=kept)
    if alignment is None or alignment.confidence >= LOW_CONFIDENCE or stored is None:
        return ev
    try:
        own = extract_signature(dict(stored), key=key)
    except HfLotteryError:  # e.g. a widened suspect: no own-order reading, so no calibrated p-value
        return dataclasses.replace(ev, p_value=1.0, own_order_p_value=1.0)
    best = own if own.matches and not ev.matches else ev
    return dataclasses.replace(best, p_value=max(ev.p_value, own.p_value), own_order_p_value=own.p_value)


def _suspect_network(weights: Mapping[str, torch.Tensor], key: OwnershipKey, suspect: Suspect | None,
                     alignment: Any) -> nn.Module:
    """A model of the key's architecture holding the suspect's (aligned) weights, with its normalisation."""
    import contextlib

    from ..data import resolve_normalization
    from ..errors import ConfigError
    from ..loading import load_model

    model = (load_model(alignment.state_dict, arch=alignment.arch, model_args=alignment.model_args)
             if alignment is not None else load_model(dict(weights), arch=key.arch))
    config = (suspect.config if suspect else None) or {}
    published = (key.sections.get("reference") or {}).get("published") or {}
    pretrained = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else {}
    for mean, std in ((published.get("image_mean"), published.get("image_std")),  # the owner's, else the suspect's
                      (pretrained.get("mean"), pretrained.get("std"))):
        with contextlib.suppress(ConfigError):
            model.config.image_mean, model.config.image_std = resolve_normalization(
                None, mean, std, in_chans=model.config.in_chans)
            break
    else:
        raise ConfigError("neither the key's reference nor the suspect's config gives the input normalisation")
    input_size = pretrained.get("input_size")
    size = (published.get("image_size") or config.get("image_size")
            or (input_size[-1] if isinstance(input_size, (list, tuple)) and input_size else None))
    if isinstance(size, int) and size > 0:  # queries are resized to this: the size the published model was trained at, not the class default
        model.config.image_size = int(size)
    return model.eval()


def _triggers(suspect: Any, key: OwnershipKey, *, policy: VerdictPolicy, tests: int, label2id: Mapping | None,
              query_options: Mapping[str, Any], notes: list[str]) -> TriggerEvidence:
    from ..blackbox import query_labels
    from ..triggers import trigger_evidence, triggers_from_key

    triggers = triggers_from_key(key)
    published = (key.sections.get("reference") or {}).get("published") or {}
    config = getattr(suspect, "config", None)
    size = published.get("image_size") or getattr(config, "image_size", None) or triggers.image_size
    chans = published.get("in_chans") or getattr(config, "in_chans", None) or triggers.channels
    adapted = triggers.resized(image_size=int(size), channels=int(chans))
    mapping = label2id or published.get("label2id") or None
    # every orientation of the set, until one is decisive: a thief may serve his copy with its kernels flipped or
    # rotated (docs/SECURITY.md); the threshold counts all of them
    best, options = None, dict(query_options)
    for g in DIHEDRAL:
        result = query_labels(suspect, dihedral(adapted.images, g), label2id=mapping, **options)
        notes.extend(f"trigger query ({g}): {e}" for e in list(result.errors)[:3])
        ev = dataclasses.replace(trigger_evidence(result.labels, triggers, alpha=policy.alpha / max(1, tests),
                                                  queried=result.queried, failed=result.failed), transform=g)
        best = ev if best is None or ev.p_value < best.p_value else best
        if options.get("budget") is not None:  # the budget covers every orientation together
            options["budget"] = max(0, options["budget"] - result.queried)
        if best.positive or options.get("budget") == 0:
            break
    assert best is not None
    return best


def _keymask(model: nn.Module, key: OwnershipKey, eval_data: Any) -> dict[str, Any]:
    from ..loading import load_with_key
    from ..training import evaluate

    d: dict[str, Any] = {"note": V1_DISCLAIMER, "accuracy_without_key": evaluate(model, eval_data)["accuracy"]}
    try:
        d["accuracy_with_key"] = evaluate(load_with_key(model, key=key), eval_data)["accuracy"]
    except HfLotteryError as exc:
        d["merge_error"] = str(exc)
    with_key = d.get("accuracy_with_key")
    d["summary"] = (f"accuracy {d['accuracy_without_key']:.2f}% as published"
                    + (f", {with_key:.2f}% with the key merged" if with_key is not None else
                       ", the key does not merge (the mask differs from the locked ticket)")
                    + " (informative only)")
    return d


# --------------------------------------------------------------------------- anchors and appearance


def earliest_anchor(key: OwnershipKey, *, token: str | bool | None = None) -> AnchorCheck | None:
    """The key's earliest anchor that the Hub confirms (else the first failed check; ``None`` without anchors)."""
    checks = [check_anchor(a, key.commitment(), token=token) for a in key.anchors]
    good = sorted((c for c in checks if c.verified), key=lambda c: c.time)
    return good[0] if good else (checks[0] if checks else None)


def _appearance(read: Suspect, *, token: str | bool | None, notes: list[str]) -> Appearance | None:
    """When the suspect's weights first appeared in public: its repo's history, or the repo its claim names."""
    from huggingface_hub import HfApi

    from ..hub import is_offline

    if not read.files_read or (read.kind != "hub" and not (read.claim or {}).get("repo_id")):
        return None
    if is_offline() or any("local Hub cache" in n for n in read.notes):
        notes.append("the suspect's first appearance was not looked up (offline)")
        return None
    path = Path(read.files_read[0])
    repo_id, how = (read.repo_id, "hub history") if read.kind == "hub" else (str(read.claim["repo_id"]), "claimed repo")
    try:
        found = first_appearance(repo_id, filename=path.name, sha256=file_sha256(path), how=how, token=token)
        if found is None and read.kind == "hub":  # the bytes are in the repo: it appeared no earlier than its creation
            created = HfApi().repo_info(repo_id, token=token).created_at
            found = Appearance(time=created, repo_id=repo_id, commit=None, how="repo creation") if created else None
    except HfLotteryError as exc:
        notes.append(f"the suspect's first appearance in {repo_id} could not be read: {exc}")
        return None
    return found


# --------------------------------------------------------------------------- entry points


def verify(
    suspect: Any,
    *,
    key: KeyLike | Sequence[KeyLike],
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    eval_data: Any = None,
    policy: VerdictPolicy | None = None,
    require_anchor: bool = True,
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
        key (`OwnershipKey`, `str`, `os.PathLike` or a sequence of them): The owner's private
            key (or its path). With several keys (a dispute) the suspect is read once, every
            key is checked, and the report is the one of the claim that wins: matching
            evidence and the earliest verified anchor; ``report.dispute`` ranks them all.
        quick (`bool`, *optional*, defaults to `False`): For a Hub repo, only read the public
            claim from the weights header (range requests; no weights downloaded, no
            evidence, never ``owned``).
        progress (`Callable[[str], None]`, *optional*): Receives one line per stage.
        eval_data (`ImageData`, *optional*): A labelled test split; adds the Scheme V1
            accuracies with and without the key (informative).
        policy (`VerdictPolicy`, *optional*): Decision thresholds.
        require_anchor (`bool`, *optional*, defaults to `True`): ``owned`` needs the key's
            commitment anchored in a Hub commit no later than the suspect's first known
            appearance. ``False`` checks your own model before publishing (the report's
            first reason says so).
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
        KeyFileError: A key cannot be read.
        CheckpointError, PickleRefusedError, HubError: The suspect cannot be read at all.
        EndpointError: The endpoint refuses every connection.
    """
    keys = [as_key(k) for k in key] if isinstance(key, (list, tuple)) else [as_key(key)]
    if not keys:
        raise KeyMismatchError("Pass at least one key.")
    say = progress or (lambda _line: None)
    if quick:
        say(f"reading the claim of {suspect} (header only)")
        return quick_check(str(suspect), key=keys[0], revision=revision, token=token)
    policy = policy or VerdictPolicy()
    options = {"eval_data": eval_data, "policy": policy, "require_anchor": require_anchor, "label2id": label2id,
               "query": {"timeout": timeout, "retries": retries, "budget": budget}, "token": token}
    black_box = _is_endpoint(suspect) or _is_black_box_callable(suspect)
    if not black_box and not isinstance(suspect, Suspect):
        say(f"reading {suspect}" + (f" @ {revision}" if revision else ""))
    read = suspect if black_box or isinstance(suspect, Suspect) else read_suspect(
        suspect, revision=revision, token=token, local_files_only=local_files_only, cache_dir=cache_dir,
        shapes=_reference_shapes(keys[0]))
    say("checking the evidence")
    notes: list[str] = []
    t = time.perf_counter()
    appearance = None if black_box else _appearance(read, token=token, notes=notes)
    options["appearance_s"] = time.perf_counter() - t
    reports = [_verify_one(suspect if black_box else read, k, appearance=appearance, notes=list(notes), **options)
               for k in keys]
    if len(reports) == 1:
        return reports[0]
    return _rank(reports)


def _verify_one(read: Any, key: OwnershipKey, *, eval_data: Any, policy: VerdictPolicy, require_anchor: bool,
                label2id: Mapping[str, int] | None, query: Mapping[str, Any], token: str | bool | None,
                appearance: Appearance | None, appearance_s: float, notes: list[str]) -> VerificationReport:
    t0 = time.perf_counter()
    timings: dict[str, float] = {"appearance_s": appearance_s}
    tests = len(DIHEDRAL)  # V3 asks the trigger set in every orientation
    report = VerificationReport(verdict="inconclusive", key=_key_facts(key), policy=vars(policy) | {},
                                require_anchor=require_anchor, library=f"hf_lottery_verify {__version__}")
    signature = triggers = None
    if not isinstance(read, Suspect):  # an endpoint or a callable: Scheme V3 only
        report.source = read if isinstance(read, str) else getattr(read, "__name__", type(read).__name__)
        report.kind = "endpoint" if isinstance(read, str) else "callable"
        if TRIGGERS_SECTION not in key.sections:
            notes.append("a black-box suspect can only be tested with a trigger set (Scheme V3); this key has none")
        else:
            t = time.perf_counter()
            triggers = _triggers(read, key, policy=policy, tests=tests, label2id=label2id, query_options=query,
                                 notes=notes)
            timings["v3_s"] = time.perf_counter() - t
    else:
        report.source, report.kind, report.layout = read.source, read.kind, read.layout
        report.repo_id, report.revision, report.commit_sha = read.repo_id, read.revision, read.commit_sha
        report.files_read, report.claim = list(read.files_read), read.claim
        if read.claim is not None and read.claim.get("key_commitment"):
            report.claim_matches_key = read.claim.get("key_commitment") == key.commitment()
        notes.extend(read.notes)
        notes.extend(_check_fits(read, key))
        t = time.perf_counter()
        weights, alignment, reference = _align(read, key, notes)
        timings["align_s"] = time.perf_counter() - t
        report.alignment = alignment.to_dict() if alignment is not None else None
        if SIGNATURE_SECTION in key.sections:
            t = time.perf_counter()
            try:
                signature = _signature(weights, key, alignment, reference, stored=read.state_dict)
            except HfLotteryError as exc:
                report.errors["V2"] = str(exc)
            timings["v2_s"] = time.perf_counter() - t
        model = None
        if TRIGGERS_SECTION in key.sections or (eval_data is not None and KEYMASK_SECTION in key.sections):
            try:
                model = _suspect_network(weights, key, read, alignment)
            except HfLotteryError as exc:
                report.errors["V3"] = f"the suspect's weights do not build a {key.arch}: {exc}"
        if TRIGGERS_SECTION in key.sections and model is not None:
            t = time.perf_counter()
            triggers = _triggers(model, key, policy=policy, tests=tests, label2id=label2id, query_options=query,
                                 notes=notes)
            timings["v3_s"] = time.perf_counter() - t
        if eval_data is not None and KEYMASK_SECTION in key.sections and model is not None:
            report.keymask = _keymask(model, key, eval_data)
        elif KEYMASK_SECTION in key.sections:
            notes.append("V1 figures need eval_data (a labelled test split); " + V1_DISCLAIMER)
    t = time.perf_counter()
    anchor = earliest_anchor(key, token=token) if key.anchors else None
    timings["anchor_s"] = time.perf_counter() - t
    report.signature, report.triggers, report.tests = signature, triggers, tests
    report.anchor = anchor.to_dict() if anchor else None
    report.appearance = appearance.to_dict() if appearance else None
    report.verdict, report.reasons = decide(signature=signature, triggers=triggers, errors=report.errors,
                                            policy=policy, tests=tests, anchor=anchor, appearance=appearance,
                                            require_anchor=require_anchor)
    report.notes = notes
    timings["total_s"] = time.perf_counter() - t0 + appearance_s
    report.timings = {k: round(v, 4) for k, v in timings.items()}
    return report


def _rank(reports: list[VerificationReport]) -> VerificationReport:
    """The winning claim's report, with every claim ranked in ``report.dispute``.

    Claims whose evidence matches come first (owned before inconclusive), ordered by their
    verified anchor time (unanchored ones last); the winner is the first. When the
    earliest matching claim is not ``owned`` (e.g. anchored after the suspect appeared),
    no claim wins and the report says so.
    """
    def rank(r: VerificationReport) -> tuple[int, str]:
        anchored = r.anchor.get("time") if r.anchor and r.anchor.get("verified") else None
        matching = (r.signature is not None and r.signature.matches) or (
            r.triggers is not None and r.triggers.p_value <= r.policy["alpha"] / max(1, r.tests))
        return (0 if matching and anchored else 1 if matching else 2, anchored or "~")

    ordered = sorted(reports, key=rank)
    claims = [{"commitment": r.key["commitment"], "verdict": r.verdict, "evidence_matches": rank(r)[0] < 2,
               "anchor_time": r.anchor.get("time") if r.anchor and r.anchor.get("verified") else None,
               "anchor": r.anchor, "reason": r.reasons[0] if r.reasons else ""} for r in ordered]
    winner = ordered[0]
    winner.dispute = claims
    if rank(winner)[0] == 0 and sum(1 for c in claims if c["evidence_matches"]) > 1:
        others = [c for c in claims[1:] if c["evidence_matches"]]
        winner.reasons.append(f"{len(others)} other claim(s) also match; this key was anchored first "
                              f"({claims[0]['anchor_time']}, the next at {others[0]['anchor_time'] or 'no anchor'})")
    return winner


def quick_check(repo_id: str, *, key: KeyLike, revision: str | None = None, token: str | bool | None = None
                ) -> VerificationReport:
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
    key = as_key(key)
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
    key: KeyLike | Sequence[KeyLike],
    revision: str | None = None,
    token: str | bool | None = None,
    eval_data: Any = None,
    quick: bool = False,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    policy: VerdictPolicy | None = None,
    require_anchor: bool = True,
    progress: Callable[[str], None] | None = None,
) -> VerificationReport:
    """Pull a Hub repo (or read a local folder or file) and verify it against the owner's key(s): :func:`verify`.

    Args:
        repo_id_or_path (`str` or `os.PathLike`): ``owner/name`` on the Hub (or the server in
            ``HF_ENDPOINT``), or a local folder / ``.safetensors`` file.
        key (`OwnershipKey`, `str`, `os.PathLike` or a sequence of them): The owner's private
            key (or its path); several keys settle a dispute (see :func:`verify_model`).
        revision (`str`, *optional*): Branch, tag or commit to verify.
        token (`str` or `bool`, *optional*): Hub token.
        eval_data (`ImageData`, *optional*): A labelled test split for the Scheme V1 figures.
        quick (`bool`, *optional*, defaults to `False`): Only read the public claim from the
            weights header (range requests; no weights downloaded, no evidence).
        local_files_only (`bool`, *optional*, defaults to `False`): Verify from the Hub cache
            (also with ``HF_HUB_OFFLINE=1``; an unreachable server falls back to the cache too;
            anchors cannot be read then, so the verdict is at best ``inconclusive``).
        cache_dir (`str` or `os.PathLike`, *optional*): Hub cache folder.
        policy (`VerdictPolicy`, *optional*): Decision thresholds.
        require_anchor (`bool`, *optional*, defaults to `True`): See :func:`verify_model`.
        progress (`Callable[[str], None]`, *optional*): Receives one line per stage.

    Returns:
        The :class:`VerificationReport` (with the repo id and the resolved commit sha).

    Raises:
        HubError: The repo or revision does not exist, or the server is unreachable and the
            repo is not cached.
        PickleRefusedError: The repo holds only pickle weights.
        CorruptCheckpointError: The weights file is truncated or corrupt.
        CheckpointError: No weights; the path does not exist.
        KeyFileError: A key cannot be read.
    """
    return verify(repo_id_or_path, key=key, quick=quick, progress=progress, revision=revision, token=token,
                  eval_data=eval_data, local_files_only=local_files_only, cache_dir=cache_dir, policy=policy,
                  require_anchor=require_anchor)


verify_model = verify
"""The name of :func:`verify` in the design card (any suspect)."""
