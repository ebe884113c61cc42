# Verify that a model on the Hub (or in a folder) is yours: verify_hub_model with your private key.
#
# Shows the verifier's side: the repo is downloaded (safetensors only; pickle-only repos are refused), the
# suspect's channels are re-aligned to the key's reference (permutations, BN-compensated rescaling and dummy
# channels are undone), the QR signature is read from the recovered mask (Scheme V2), the trigger set is
# queried (Scheme V3), and one VerificationReport says owned / not_owned / inconclusive with the evidence.
# Nothing the suspect says about itself (its stored masks, header claims, config) counts as evidence.
# `owned` also needs the key's anchor: the Hub commit that published its commitment, read back from the Hub and
# no later than the suspect's first appearance; --unanchored checks your own model before publishing.
#
#     python examples/verify_hub_model.py suspect-user/some-model --key keys/r20.json
#     python examples/verify_hub_model.py ./downloaded-folder --key keys/r20.json --json
#     HF_HUB_OFFLINE=1 python examples/verify_hub_model.py you/r20 --key k.json   # from the cache only
#     python examples/verify_hub_model.py ./my-unpublished-ticket --key k.json --unanchored
#
# Exit status: 0 owned, 1 not owned, 3 inconclusive, 2 a usage error.
from __future__ import annotations

import sys

from transformers import HfArgumentParser

from hf_lottery_verify.cli import flat
from hf_lottery_verify.cli.args import OutputArgs, VerifyArgs


def main() -> int:
    white_box = flat(VerifyArgs, exclude=("endpoint", "timeout", "retries", "budget", "badge"))  # see hf-lottery verify
    parser = HfArgumentParser([white_box, OutputArgs], description="Verify a Hub model against your key.")
    parser.add_argument("source", help="Hub repo id (owner/name), a local folder or a .safetensors file")
    opts, output, rest = parser.parse_args_into_dataclasses()
    from hf_lottery_verify.errors import HfLotteryError
    from hf_lottery_verify.verify import EXIT_CODES, verify_hub_model

    try:
        report = verify_hub_model(rest.source, key=opts.key, revision=opts.revision, token=opts.token,
                                  quick=opts.quick, local_files_only=opts.local_files_only,
                                  require_anchor=not opts.unanchored)
    except (HfLotteryError, FileNotFoundError) as exc:
        print(f"verify_hub_model.py: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(report.to_json() if output.json else report)
    return EXIT_CODES[report.verdict]


if __name__ == "__main__":
    sys.exit(main())
