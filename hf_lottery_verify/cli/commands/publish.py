"""Publishing and checking: ``push`` to the Hub, ``verify`` a suspect, ``serve`` a model on loopback."""

from __future__ import annotations

import json
import sys
from argparse import Namespace
from typing import Any

from .. import command
from .._parsing import write
from ..args import OutputArgs, PushArgs, ServeArgs, VerifyArgs


@command("push")
def _push_parser(sub: Any) -> None:
    p = sub.add_parser(
        "push", help="publish a saved ticket to the Hub with a model card and an ownership badge",
        description="Upload config, weights (plain timm layout), masks, a model card and an ownership badge in one "
                    "commit. With --signature the ticket is signed first and the private key written to --key-out; "
                    "with --key an existing key's public claim (a hash commitment) goes into the header and the "
                    "card. The key itself is never uploaded.",
        dataclass_types=[PushArgs, OutputArgs])
    p.add_argument("model_dir", help="a saved sparse model folder")
    p.add_argument("repo_id", help="owner/name on the Hub (HF_ENDPOINT selects the server)")
    p.set_defaults(handler=_push)


def _push(args: Namespace) -> int:
    from ...errors import KeyFileError
    from ...loading import load_model

    if args.signature and not args.key_out:
        raise KeyFileError("--signature needs --key-out: the private key is the proof of ownership.")
    if args.key and args.signature:
        raise KeyFileError("Pass --key (publish an existing key's claim) or --signature/--key-out (sign now), not both.")
    model = load_model(args.model_dir)
    info = model.push_to_hub(
        args.repo_id, signature=args.signature, key_path=args.key_out if args.signature else args.key,
        owner=args.owner, private=args.private or None, token=args.token, revision=args.revision,
        commit_message=args.message, eval_results={"accuracy": args.accuracy, "dataset": args.dataset_name})
    report = {"repo_id": args.repo_id, "commit": getattr(info, "oid", None),
              "url": str(getattr(info, "commit_url", "") or ""), "claim": model.ownership_claim,
              "density": model.density}
    if args.json:
        write(json.dumps(report, indent=2, default=str))
    else:
        write(f"pushed {args.model_dir} to {args.repo_id} at commit {report['commit']}\n"
              + (f"public claim: commitment {model.ownership_claim['key_commitment']}\n" if model.ownership_claim
                 else "no ownership claim (pass --signature or --key)\n")
              + (f"private key: {args.key_out} (keep it; never upload it)" if args.signature else ""))
    return 0


@command("verify")
def _verify_parser(sub: Any) -> None:
    p = sub.add_parser(
        "verify", help="verify a Hub repo, folder, file or endpoint against your private key",
        description="Read the suspect without trusting it, re-align its channels to the key's reference, decode the "
                    "keyed QR signature from its weights and query it on the secret trigger set. Exit status: 0 "
                    "owned, 1 not owned, 3 inconclusive, 2 error.",
        dataclass_types=[VerifyArgs, OutputArgs])
    p.add_argument("target", nargs="?", default=None, help="Hub repo id, local folder or .safetensors file")
    p.set_defaults(handler=_verify)


def _verify(args: Namespace) -> int:
    from ...errors import ConfigError
    from ...verify import verify_hub_model, verify_model

    if (args.target is None) == (args.endpoint is None):
        raise ConfigError("Give exactly one suspect: a TARGET (repo id, folder or file) or --endpoint URL.")
    if args.endpoint:
        report = verify_model(args.endpoint, args.key, timeout=args.timeout, retries=args.retries, budget=args.budget)
    else:
        report = verify_hub_model(args.target, key=args.key, revision=args.revision, token=args.token,
                                  quick=args.quick, local_files_only=args.local_files_only,
                                  priority=not args.no_priority)
    if args.badge:
        from ...atomic import write_text_atomic
        from ...cards import render_badge

        write_text_atomic(args.badge, render_badge(status=report.verdict, label="ownership"))
    write(report.to_json() if args.json else str(report))
    return report.exit_code


@command("serve")
def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="serve a model on 127.0.0.1 in the Inference API image-classification shape",
        description='POST image bytes (or JSON {"inputs": base64}) to the printed URL and get '
                    '[{"label": ..., "score": ...}]. For testing black-box verification; loopback only unless '
                    "--allow-remote.",
        dataclass_types=[ServeArgs])
    p.add_argument("model", help="model folder, file or Hub repo id")
    p.set_defaults(handler=_serve)


def _serve(args: Namespace) -> int:
    from ...serve import serve

    def ready(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    serve(args.model, host=args.host, port=args.port, top_k=args.top_k, allow_remote=args.allow_remote,
          on_ready=ready)
    return 0
