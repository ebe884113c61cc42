"""The verification report and the decision rule behind its verdict.

A :class:`VerificationReport` gathers the evidence of every scheme the owner's key holds
and one verdict:

* ``owned`` — evidence a forger cannot manufacture after the fact: the QR signature
  decodes, with valid Reed–Solomon codewords, to exactly the key's text (Scheme V2), or
  the suspect answers the secret trigger set far above chance (Scheme V3, exact binomial
  test at ``alpha`` divided by the number of statistical tests performed);
* ``inconclusive`` — a signal that is not proof: modules agree with the signature far
  above chance but do not decode, trigger agreement is significant only at the weaker
  ``inconclusive_alpha``, too few trigger queries were answered, or a scheme could not be
  evaluated on this suspect;
* ``not_owned`` — nothing of the above.

Agreement statistics alone never make ``owned``: a key written *after* seeing someone
else's model can always choose modules that already agree. Scheme V1 (key masks)
controls who can *use* a ticket; it is not evidence of ownership of a copy (a thief can
fine-tune the locked ticket back), so its figures are reported and never decide.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Verdict", "VerdictPolicy", "VerificationReport", "decide", "EXIT_CODES"]

Verdict = Literal["owned", "not_owned", "inconclusive"]
EXIT_CODES: dict[str, int] = {"owned": 0, "not_owned": 1, "inconclusive": 3}
"""Exit status of ``hf-lottery verify`` per verdict (2 is reserved for errors)."""


@dataclass(frozen=True)
class VerdictPolicy:
    """Thresholds of the decision rule (defaults give no false ``owned`` on null models).

    Attributes:
        alpha: Family-wise significance for trigger agreement (Scheme V3); it is divided by
            the number of statistical tests performed (schemes × alignments), Bonferroni.
        inconclusive_alpha: Weaker level below which a non-decisive p-value (V2 module
            agreement without a decode, V3 agreement above ``alpha``) makes the verdict
            ``inconclusive`` instead of ``not_owned``.
        min_answered: Share of trigger queries that must be answered before a negative V3
            result counts as ``not_owned`` (fewer answers: ``inconclusive``).
    """

    alpha: float = 1e-6
    inconclusive_alpha: float = 1e-3
    min_answered: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= self.inconclusive_alpha < 1:
            raise ValueError(f"Need 0 < alpha <= inconclusive_alpha < 1, got {self.alpha}, {self.inconclusive_alpha}.")
        if not 0 <= self.min_answered <= 1:
            raise ValueError(f"min_answered must lie in [0, 1], got {self.min_answered}.")


@dataclass
class VerificationReport:
    """Everything a verification found, with one verdict.

    Attributes:
        verdict: ``owned``, ``not_owned`` or ``inconclusive``.
        reasons: Why, in plain sentences (first the decisive one).
        source: The suspect as given.
        kind: ``hub``, ``folder``, ``file``, ``model``, ``state_dict``, ``endpoint`` or ``callable``.
        repo_id: Hub repo, for Hub suspects.
        revision: Revision asked for.
        commit_sha: Commit actually read.
        files_read: Files whose bytes were read.
        layout: The suspect's checkpoint layout (informative).
        claim: The public claim the suspect carries (untrusted; never evidence).
        claim_matches_key: The claim's commitment equals the key's (``None`` without a claim).
        priority: When the key's commitment was first published in this repo, and other
            commitments seen (Hub suspects with history).
        evidence: Per scheme (``V1``, ``V2``, ``V3``): the figures and whether it decided.
        alignment: How the suspect's channels were matched to the key's reference.
        key: Public facts of the key used (architecture, schemes, commitment) — no secrets.
        policy: The thresholds used.
        tests: Number of statistical tests the V3 threshold was corrected for.
        notes: What was ignored or could not be done on the way.
        timings: Seconds per stage.
        quick: Only the header claim was read (no weights, no evidence).
        library: The verifying library's version.
    """

    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    source: str = ""
    kind: str = ""
    repo_id: str | None = None
    revision: str | None = None
    commit_sha: str | None = None
    files_read: list[str] = field(default_factory=list)
    layout: str | None = None
    claim: dict[str, Any] | None = None
    claim_matches_key: bool | None = None
    priority: dict[str, Any] | None = None
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)
    alignment: dict[str, Any] | None = None
    key: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    tests: int = 1
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    quick: bool = False
    library: str = ""

    @property
    def owned(self) -> bool:
        """``verdict == "owned"``."""
        return self.verdict == "owned"

    @property
    def exit_code(self) -> int:
        """0 owned, 1 not owned, 3 inconclusive (the CLI's exit status)."""
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (infinite or NaN numbers become strings)."""
        return _json_safe(asdict(self))

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    def __str__(self) -> str:
        where = self.repo_id or self.source
        if self.commit_sha:
            where += f" @ {self.commit_sha[:12]}"
        lines = [f"verdict: {self.verdict.upper().replace('_', ' ')}  ({where})"]
        lines += [f"  - {r}" for r in self.reasons]
        for scheme in ("V2", "V3", "V1"):
            ev = self.evidence.get(scheme)
            if ev:
                lines.append(f"{scheme}: {ev.get('summary', '')}".rstrip())
        if self.alignment:
            lines.append(f"alignment: {self.alignment.get('summary', '')}")
        if self.claim is not None:
            owner = self.claim.get("owner") or "unnamed owner"
            match = {True: "matches this key", False: "does NOT match this key", None: "no commitment"}[
                self.claim_matches_key]
            lines.append(f"public claim: {owner}, {self.claim.get('created', '?')}; commitment {match}")
        if self.priority and self.priority.get("first_commit"):
            lines.append(f"priority: this key's commitment first published in commit "
                         f"{self.priority['first_commit'][:12]} on {self.priority.get('first_date')}")
        for note in self.notes:
            lines.append(f"note: {note}")
        total = self.timings.get("total_s")
        if total is not None:
            lines.append(f"({total:.2f} s; files read: {len(self.files_read)})")
        return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def decide(evidence: dict[str, dict[str, Any]], *, policy: VerdictPolicy, tests: int = 1
           ) -> tuple[Verdict, list[str]]:
    """Apply the decision rule to per-scheme evidence.

    Args:
        evidence (`dict`): ``{"V2": {...}, "V3": {...}, "V1": {...}}`` as built by
            :func:`hf_lottery_verify.verify.verify_model` (keys used: V2 ``matches``,
            ``text``, ``p_value``, ``error``; V3 ``p_value``, ``matches``, ``n``,
            ``answered``, ``error``).
        policy (`VerdictPolicy`): Thresholds.
        tests (`int`, *optional*, defaults to 1): Statistical tests performed, for the
            Bonferroni correction of the V3 threshold.

    Returns:
        ``(verdict, reasons)``.
    """
    owned: list[str] = []
    weak: list[str] = []
    negative: list[str] = []
    v2 = evidence.get("V2")
    if v2:
        if v2.get("error"):
            weak.append(f"the QR signature could not be read: {v2['error']}")
        elif v2.get("matches"):
            owned.append(f"the QR signature decodes to the key's text {v2.get('text')!r} (valid Reed–Solomon "
                         "codewords)")
        elif v2.get("p_value", 1.0) <= policy.inconclusive_alpha:
            weak.append(f"signature modules agree far above chance (p={v2['p_value']:.2g}) but do not decode to "
                        "the key's text")
        else:
            negative.append(f"no QR signature of this key (bit agreement {v2.get('bit_agreement', 0):.3f}, "
                            f"p={v2.get('p_value', 1.0):.2g})")
    v3 = evidence.get("V3")
    if v3:
        level = policy.alpha / max(1, tests)
        if v3.get("error"):
            weak.append(f"the trigger set could not be queried: {v3['error']}")
        elif v3.get("p_value", 1.0) <= level:
            owned.append(f"the suspect gives the secret trigger labels {v3['matches']}/{v3['n']} times "
                         f"(p={v3['p_value']:.2g} <= {level:.2g})")
        elif v3.get("p_value", 1.0) <= policy.inconclusive_alpha:
            weak.append(f"trigger agreement {v3['matches']}/{v3['n']} is significant only at p={v3['p_value']:.2g}")
        elif v3.get("answered", v3.get("n", 0)) < policy.min_answered * v3.get("n", 0):
            weak.append(f"only {v3.get('answered')} of {v3.get('n')} trigger queries were answered")
        else:
            negative.append(f"trigger agreement {v3['matches']}/{v3['n']} is consistent with chance "
                            f"(p={v3['p_value']:.2g})")
    if owned:
        return "owned", owned + weak
    if weak:
        return "inconclusive", weak + negative
    if not negative:
        return "inconclusive", ["the key holds no evidence scheme (V2 signature or V3 trigger set) to test"]
    return "not_owned", negative
