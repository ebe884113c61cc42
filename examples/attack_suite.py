# Attack your own published ticket with every registered attack and check that verification survives.
#
# Shows the attack registry (hf_lottery_verify.attacks): removal attacks (pruning, fine-tuning, prune +
# fine-tune, add-on weights), function-preserving structural attacks (channel permutation, BN-compensated
# rescaling, dummy channels, densification), ambiguity/forgery attacks (fake1-3) and the key-less
# locate-and-rewrite search. Each attack runs at every strength of its registry sweep; each attacked copy
# is verified with your key, and its test accuracy is measured when a dataset is given. An attack
# "succeeds" when the verdict is no longer 'owned' at an accuracy cost of at most 5 points. The key must be
# anchored (published with push_model, or `hf-lottery anchor`) for `owned`; --unanchored attacks your own
# ticket before publishing it.
#
#     python examples/attack_suite.py runs/fmnist/published --key keys/r20.json --dataset fashion_mnist \
#         --test_limit 2000 --attacks prune permute rescale finetune --json_out attacks.json
#     accelerate launch examples/attack_suite.py signed/ --key k.json --dataset cifar10   # fine-tuning on a GPU
# (bench/attack_matrix.py is the full benchmark behind docs/RESULTS.md.)
from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_lottery_verify.cli.args import DataArgs


@dataclass
class SuiteArgs:
    """What to attack and how."""

    key: str = field(metadata={"help": "your private ownership key"})
    attacks: list[str] = field(default_factory=list, metadata={"help": "attack names (default: every registered)"})
    max_epochs: int = field(default=1, metadata={"help": "skip fine-tuning settings longer than this"})
    seed: int = field(default=0, metadata={"help": "seed of every attack"})
    json_out: str | None = field(default=None, metadata={"help": "write every row as JSON here"})
    unanchored: bool = field(default=False, metadata={"help": "verify without an anchored key (your own ticket "
                                                               "before publishing)"})


def main() -> None:
    parser = HfArgumentParser([SuiteArgs, DataArgs], description="Run the attack registry against your ticket.")
    parser.add_argument("model_dir", help="the published (signed) model folder")
    suite, data_args, rest = parser.parse_args_into_dataclasses()

    import hf_lottery_verify as hlv
    from hf_lottery_verify.attacks import forge_signature, get_attack, list_attacks, run_attack
    from hf_lottery_verify.data import load_image_dataset
    from hf_lottery_verify.training import evaluate

    model = hlv.load_model(rest.model_dir).eval()
    key = hlv.OwnershipKey.load(suite.key)
    data = load_image_dataset(data_args.dataset, data_dir=data_args.data_dir, seed=suite.seed,
                              train_limit=data_args.train_limit, test_limit=data_args.test_limit)

    def accuracy(m):  # noqa: ANN001, ANN202
        return evaluate(m, data.test)["accuracy"]

    base = accuracy(model)
    rows = []
    print(f"{'attack':<16}{'variant':<18}{'strength':>9}  {'accuracy':>8}  verdict")
    for name in suite.attacks or list_attacks():
        spec = get_attack(name)
        for variant, params in spec.settings():
            if params.get("epochs", 0) > suite.max_epochs:
                continue
            if name == "fake3":
                attacked, _ = forge_signature(model, seed=suite.seed, **params)
            else:
                attacked = run_attack(name, model, data=data if spec.accepts_data else None, seed=suite.seed, **params)
            report = hlv.verify_model(attacked, key=key, require_anchor=not suite.unanchored)
            acc = accuracy(attacked)
            strength = params.get(spec.strength) if spec.strength else None
            rows.append({"attack": name, "variant": variant, "strength": strength, "accuracy": acc,
                         "accuracy_drop": base - acc, "verdict": report.verdict,
                         "succeeded": report.verdict != "owned" and base - acc <= 5.0})
            print(f"{name:<16}{variant:<18}{'' if strength is None else strength!s:>9}  {acc:8.2f}  {report.verdict}"
                  + ("   <- evidence removed within 5 points" if rows[-1]["succeeded"] else ""))
    print(f"baseline {base:.2f}%; {sum(r['succeeded'] for r in rows)} successful attack settings of {len(rows)}")
    if suite.json_out:
        with open(suite.json_out, "w") as f:
            json.dump({"baseline_accuracy": base, "rows": rows}, f, indent=2, default=str)


if __name__ == "__main__":
    main()
