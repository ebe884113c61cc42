"""Publishing and checking: ``push`` to the Hub, ``verify`` a suspect, ``serve`` a model on loopback."""

from __future__ import annotations

import sys
from argparse import Namespace

from .. import command
from .._parsing import emit, write
from ..args import AnchorArgs, OutputArgs, PushArgs, ServeArgs, VerifyArgs


@command(
    "push", help="publish a saved ticket to the Hub with a model card and an ownership badge",
    description="Upload config, weights (plain timm layout), masks, a model card and an ownership badge in one "
                "commit. With --signature the ticket is signed first and the private key written to --key-out; "
                "with --key an existing key's public claim (a hash commitment) goes into the header and the "
                "card. The key itself is never uploaded.",
    dataclass_types=[PushArgs, OutputArgs],
    arguments=[("model_dir", dict(help="a saved sparse model folder")),
               ("repo_id", dict(help="owner/name on the Hub (HF_ENDPOINT selects the server)"))])
def _push(args: Namespace) -> int:
    from ...errors import KeyFileError
    from ...loading import load_model

    if args.signature and not args.key_out:
        raise KeyFileError("--signature needs --key-out: the private key is the proof of ownership.")
    if args.key and args.signature:
        raise KeyFileError("Pass --key (publish an existing key's claim) or --signature/--key-out (sign now), not both.")
    model = load_model(args.model_dir)
    pub = model.push_to_hub(
        args.repo_id, signature=args.signature, key=args.key_out if args.signature else args.key, owner=args.owner,
        private=args.private or None, token=args.token, revision=args.revision, commit_message=args.message,
        eval_results={"accuracy": args.accuracy, "dataset": args.dataset_name, "split": args.split})
    anchor = pub.key.anchors[-1] if pub.key is not None and pub.key.anchors else None
    report = {"repo_id": args.repo_id, "commit": pub.commit, "url": pub.url, "claim": pub.claim,
              "density": model.density, "anchor": anchor.to_dict() if anchor else None}
    emit(args, report, lambda: (
        f"pushed {args.model_dir} to {args.repo_id} at commit {pub.commit}\n"
        + (f"public claim: commitment {pub.claim['key_commitment']}\n" if pub.claim
           else "no ownership claim (pass --signature or --key)\n")
        + (f"anchored: {anchor.repo_id} @ {anchor.commit[:12]}, server date {anchor.date}; the key file "
           "records it\n" if anchor else "")
        + (f"private key: {args.key_out} (keep it; never upload it)" if args.signature else "")))
    return 0


@command(
    "verify", help="verify a Hub repo, folder, file or endpoint against your private key",
    description="Read the suspect without trusting it, re-align its channels to the key's reference, decode the "
                "keyed QR signature from its weights, query it on the trigger set regenerated from the key, and "
                "check the key's anchor against the suspect's first public appearance. Exit status: 0 owned, "
                "1 not owned, 3 inconclusive, 2 error.",
    dataclass_types=[VerifyArgs, OutputArgs],
    arguments=[("target", dict(nargs="?", default=None, help="Hub repo id, local folder or .safetensors file"))])
def _verify(args: Namespace) -> int:
    from ...errors import ConfigError
    from ...verify import verify_hub_model, verify_model

    if (args.target is None) == (args.endpoint is None):
        raise ConfigError("Give exactly one suspect: a TARGET (repo id, folder or file) or --endpoint URL.")
    if args.endpoint:
        report = verify_model(args.endpoint, key=args.key, timeout=args.timeout, retries=args.retries,
                              budget=args.budget, require_anchor=not args.unanchored, token=args.token)
    else:
        report = verify_hub_model(args.target, key=args.key, revision=args.revision, token=args.token,
                                  quick=args.quick, local_files_only=args.local_files_only,
                                  require_anchor=not args.unanchored)
    if args.badge:
        from ...atomic import write_text_atomic
        from ...cards import render_badge

        write_text_atomic(args.badge, render_badge(status=report.verdict, label="ownership"))
    write(report.to_json() if args.json else str(report))
    return report.exit_code


@command(
    "anchor", help="date your key's commitment in a Hub commit (for models published elsewhere)",
    description="Commit the key's public claim (its commitment, nothing secret) to a Hub repo of yours; the "
                "Hub dates the commit, and the key file records where. push does this by itself; use anchor "
                "when the model is published somewhere else (give --model to record its reference first).",
    dataclass_types=[AnchorArgs, OutputArgs])
def _anchor(args: Namespace) -> int:
    from ...alignment import with_reference
    from ...anchors import anchor_key
    from ...loading import load_model
    from ...ownership_key import REFERENCE_SECTION, OwnershipKey

    key = OwnershipKey.load(args.key)
    if args.model is not None and REFERENCE_SECTION not in key.sections:
        key = with_reference(key, load_model(args.model))
        key.save(args.key, extend=True)
    key = anchor_key(key, args.repo, owner=args.owner, private=args.private, token=args.token)
    key.save(args.key, extend=True)
    anchor = key.anchors[-1]
    emit(args, anchor.to_dict(), lambda: f"anchored {anchor.commitment} in {anchor.repo_id} @ {anchor.commit[:12]} "
         f"(server date {anchor.date}); {args.key} records it")
    return 0


@command(
    "dispute", help="several claimants' keys against one suspect: who anchored matching evidence first",
    description="Check every key against one reading of the suspect and rank the claims whose evidence matches "
                "by the time their key was anchored (a Hub commit dated by the server). Exit status as verify, "
                "for the winning claim.",
    dataclass_types=[OutputArgs],
    arguments=[("target", dict(help="Hub repo id, local folder or .safetensors file")),
               ("--key", dict(action="append", required=True, help="a claimant's key (repeat for each claimant)")),
               ("--revision", dict(default=None, help="Hub branch, tag or commit")),
               ("--token", dict(default=None, help="Hub token"))])
def _dispute(args: Namespace) -> int:
    from ...verify import verify_hub_model

    report = verify_hub_model(args.target, key=list(args.key), revision=args.revision, token=args.token)
    lines = [f"{'winner' if report.owned and i == 0 else 'claim'} {i + 1}: {c['commitment'][:23]}  {c['verdict']}"
             + (f", anchored {c['anchor_time']} ({c['anchor']['repo_id']} @ {c['anchor']['commit'][:12]})"
                if c["anchor_time"] else ", no verified anchor") + f"\n    {c['reason']}"
             for i, c in enumerate(report.dispute or [])]
    emit(args, {"winner": report.key["commitment"] if report.owned else None, "verdict": report.verdict,
                "claims": report.dispute},
         lambda: "\n".join(lines) + ("" if report.owned else "\nno claim owns this suspect"))
    return report.exit_code


@command(
    "serve", help="serve a model on 127.0.0.1 in the Inference API image-classification shape",
    description='POST image bytes (or JSON {"inputs": base64}) to the printed URL and get '
                '[{"label": ..., "score": ...}]. For testing black-box verification; loopback only unless '
                "--allow-remote.",
    dataclass_types=[ServeArgs],
    arguments=[("model", dict(help="model folder, file or Hub repo id"))])
def _serve(args: Namespace) -> int:
    from ...serve import serve

    def ready(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    limits = {k: getattr(args, k) for k in ("workers", "request_timeout", "max_pixels", "max_body_bytes")
              if getattr(args, k) is not None}  # unset: serve's defaults
    serve(args.model, host=args.host, port=args.port, top_k=args.top_k, allow_remote=args.allow_remote,
          on_ready=ready, **limits)
    return 0
