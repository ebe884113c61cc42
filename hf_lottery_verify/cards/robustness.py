"""What a card says about robustness: the measured attack matrix (``bench/attack_matrix.py``), summarised
by :func:`summarize_attack_matrix` into ``model_cards/robustness.json``, which the card copies, so that
no sentence of a card claims more, or less, than was measured."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .templates import _read_asset

__all__ = ["ROBUSTNESS_NAME", "summarize_attack_matrix", "measured_robustness"]

ROBUSTNESS_NAME = "robustness.json"


def summarize_attack_matrix(matrix: Mapping[str, Any]) -> dict[str, Any]:
    """The card's summary of an attack matrix: its setting, and per attack and variant the strengths
    tested, the verdicts and the largest accuracy drop.

    Args:
        matrix (`Mapping[str, Any]`): What ``bench/attack_matrix.py`` writes (``meta`` and ``rows``).

    Returns:
        `dict`: ``setting`` (architecture, dataset, density, accuracy, schemes, machine, date, seed, command),
        ``rows``, ``successful`` (attacks that removed the evidence within 5 accuracy points) and ``attacks``.
    """
    meta, rows, attacks = matrix["meta"], matrix["rows"], {}
    for row in rows:
        entry = attacks.setdefault((row["attack"], row["variant"]), {
            "attack": row["attack"], "variant": row["variant"], "parameter": row["strength_param"], "strengths": [],
            "verdicts": {}, "max_drop": None})
        if row.get("strength") is not None:
            entry["strengths"].append(row["strength"])
        verdict = row.get("verdict", "error")  # a row whose attack failed has no verdict
        if row.get("thief_verdict"):  # fake3: the thief's own key is checked too
            verdict += f" (thief: {row['thief_verdict']})"
        entry["verdicts"][verdict] = entry["verdicts"].get(verdict, 0) + 1
        if row.get("accuracy_drop") is not None:
            entry["max_drop"] = max(entry["max_drop"] or -100.0, row["accuracy_drop"])
    setting = {k: meta[k] for k in ("arch", "dataset", "machine", "date", "seed", "command")}
    setting.update(density=round(meta["density"], 4), accuracy=meta["baseline_accuracy"],
                   schemes=["V2", *([] if meta.get("no_triggers") else ["V3"])])
    return {"setting": setting, "rows": len(rows), "successful": sum(bool(r["success"]) for r in rows),
            "attacks": list(attacks.values())}


def measured_robustness() -> dict[str, Any]:
    """The shipped summary (``model_cards/robustness.json``) the card renders."""
    return json.loads(_read_asset(ROBUSTNESS_NAME))
