"""The verification report and the decision rule behind its verdict.

A :class:`VerificationReport` gathers the evidence of every scheme the owner's key holds
and one verdict:

* ``owned`` — evidence a claimant cannot manufacture after the fact, **and** a key anchored
  no later than the suspect's first known public appearance:

  - evidence: the QR signature decodes, with valid Reed–Solomon codewords and enough margin
    against chance, to exactly the key's text at positions derived from the key's secret
    (Scheme V2), or the suspect answers the trigger set regenerated from the key's secret
    far above chance (Scheme V3, exact binomial test at ``alpha`` divided by the number of
    tests performed: 1e-12 by default, so that grinding secrets takes about 10^12 tries);
  - anchor: the key's commitment was published in a Hub commit the verifier read back
    (:mod:`hf_lottery_verify.anchors`), dated by the server; when the suspect's first public
    appearance is known (its repo's history, or the repo its public claim names) the anchor
    must not be later than it;

* ``inconclusive`` — matching evidence without such an anchor, or a signal that is not
  proof: modules agree far above chance but do not decode, trigger agreement is
  significant only at the weaker ``inconclusive_alpha``, too few trigger queries were
  answered, or a scheme could not be evaluated on this suspect;
* ``not_owned`` — nothing of the above.

``require_anchor=False`` serves owners checking their own model before publishing: matching
evidence then gives ``owned`` and the first reason says that no anchor was required.
Scheme V1 (key masks) controls who can *use* a ticket; it is not evidence of ownership of a
copy (a thief can fine-tune the locked ticket back), so its figures are reported and never decide.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..anchors import AnchorCheck, Appearance
from ..atomic import json_safe
from ..signature import SignatureEvidence
from ..triggers import TriggerEvidence

__all__ = ["Verdict", "VerdictPolicy", "VerificationReport", "decide", "EXIT_CODES"]

Verdict = Literal["owned", "not_owned", "inconclusive"]
EXIT_CODES: dict[str, int] = {"owned": 0, "not_owned": 1, "inconclusive": 3}
"""Exit status of ``hf-lottery verify`` per verdict (2 is reserved for errors)."""


@dataclass(frozen=True)
class VerdictPolicy:
    """Thresholds of the decision rule (see docs/SECURITY.md for what each one costs a forger).

    Attributes:
        alpha: Significance a trigger agreement needs to be decisive (Scheme V3), divided by
            the number of statistical tests performed. 1e-12: a claimant grinding secrets
            (each one regenerates labels and images) needs about 10^12 tries.
        inconclusive_alpha: Weaker level below which a non-decisive p-value (V2 module
            agreement without a decode, V3 agreement above ``alpha``) makes the verdict
            ``inconclusive`` instead of ``not_owned``.
        min_answered: Share of trigger queries that must be answered before a negative V3
            result counts as ``not_owned`` (fewer answers: ``inconclusive``).
    """

    alpha: float = 1e-12
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
        signature: Scheme V2 evidence, when the key has a signature and it could be read.
        triggers: Scheme V3 evidence, when the key has a trigger set and it could be queried.
        keymask: Scheme V1 figures (informative only).
        errors: Per scheme, why it could not be evaluated.
        alignment: How the suspect's channels were matched to the key's reference.
        anchor: The key's earliest verified anchor (repo, commit, server time), or why none verified.
        appearance: When the suspect's weights first appeared in public, when known.
        require_anchor: Whether ``owned`` needed an anchor (``False``: an unanchored check).
        dispute: With several keys: every claim, ranked (matching evidence first, by anchor time).
        key: Public facts of the key used (architecture, schemes, commitment) — no secrets.
        policy: The thresholds used.
        tests: Number of statistical tests the V3 thresholds were corrected for (the trigger
            set in each of the 8 orientations of :data:`~hf_lottery_verify.symmetry.DIHEDRAL`).
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
    signature: SignatureEvidence | None = None
    triggers: TriggerEvidence | None = None
    keymask: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    alignment: dict[str, Any] | None = None
    anchor: dict[str, Any] | None = None
    appearance: dict[str, Any] | None = None
    require_anchor: bool = True
    dispute: list[dict[str, Any]] | None = None
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
        return json_safe(asdict(self))

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    def __str__(self) -> str:
        where = self.repo_id or self.source
        if self.commit_sha:
            where += f" @ {self.commit_sha[:12]}"
        lines = [f"verdict: {self.verdict.upper().replace('_', ' ')}  ({where})"]
        lines += [f"  - {r}" for r in self.reasons]
        if self.signature is not None:
            lines.append(f"V2: {signature_summary(self.signature)}")
        if self.triggers is not None:
            lines.append(f"V3: {trigger_summary(self.triggers)}")
        lines += [f"{scheme}: not evaluated ({why})" for scheme, why in self.errors.items()]
        if self.keymask:
            lines.append(f"V1: {self.keymask.get('summary', '')}")
        if self.alignment:
            lines.append(f"alignment: {self.alignment.get('summary', '')}")
        if self.anchor:
            a = self.anchor
            lines.append(f"anchor: {a['repo_id']} @ {a['commit'][:12]}, " + (
                f"server time {a['time']}" if a.get("verified") else f"not verified ({a.get('reason')})"))
        if self.appearance:
            lines.append(f"suspect first appeared: {self.appearance['time']} ({self.appearance['repo_id']}, "
                         f"{self.appearance['how']})")
        for rank, claim in enumerate(self.dispute or [], 1):
            lines.append(f"claim {rank}: {claim['commitment'][:23]} - {claim['verdict']}" +
                         (f", anchored {claim['anchor_time']}" if claim.get("anchor_time") else ", not anchored"))
        if self.claim is not None:
            owner = self.claim.get("owner") or "unnamed owner"
            match = {True: "matches this key", False: "does NOT match this key", None: "no commitment"}[
                self.claim_matches_key]
            lines.append(f"public claim: {owner}; commitment {match}")
        lines += [f"note: {note}" for note in self.notes]
        total = self.timings.get("total_s")
        if total is not None:
            lines.append(f"({total:.2f} s; files read: {len(self.files_read)})")
        return "\n".join(lines)


def signature_summary(ev: SignatureEvidence) -> str:
    """One line on the V2 evidence."""
    status = ("decodes to the key's text" if ev.matches else f"decodes to another text {ev.text!r}" if ev.text
              else f"does not decode ({ev.decode_reason})")
    return (f"QR signature {status}; bit agreement {ev.bit_agreement:.3f}, p={ev.p_value:.2g}"
            + (f", {ev.erasures} erasures" if ev.erasures else ""))


def trigger_summary(ev: TriggerEvidence) -> str:
    """One line on the V3 evidence."""
    return (f"trigger agreement {ev.matches}/{ev.n} ({ev.agreement:.0%}), p={ev.p_value:.2g}; {ev.answered} answered"
            + (f", {ev.failed} failed" if ev.failed else "")
            + (f"; images {ev.transform} (the suspect's kernels are turned)" if ev.transform != "identity" else ""))


def _evidence_verdict(signature: SignatureEvidence | None, triggers: TriggerEvidence | None, errors: dict[str, str],
                      policy: VerdictPolicy, tests: int) -> tuple[Verdict, list[str]]:
    owned: list[str] = []
    weak = [f"the {'QR signature could not be read' if s == 'V2' else 'trigger set could not be queried'}: {why}"
            for s, why in errors.items() if s in ("V2", "V3")]
    negative: list[str] = []
    if signature is not None:
        if signature.matches:
            owned.append(f"the QR signature decodes to the key's text {signature.text!r} (valid Reed–Solomon codewords, "
                         f"{signature.security_bits:.0f} bits of margin against chance)")
        elif signature.p_value <= policy.inconclusive_alpha:
            weak.append(f"signature modules agree far above chance (p={signature.p_value:.2g}) but do not decode to "
                        "the key's text")
        else:
            negative.append(f"no QR signature of this key (bit agreement {signature.bit_agreement:.3f}, "
                            f"p={signature.p_value:.2g})")
    if triggers is not None:
        level, t = policy.alpha / max(1, tests), triggers
        if t.p_value <= level:
            owned.append(f"the suspect gives the secret trigger labels {t.matches}/{t.n} times (p={t.p_value:.2g} <= "
                         f"{level:.2g})")
        elif t.p_value <= policy.inconclusive_alpha / max(1, tests):
            weak.append(f"trigger agreement {t.matches}/{t.n} is significant only at p={t.p_value:.2g} (owned needs "
                        f"{level:.2g})")
        elif t.answered < policy.min_answered * t.n:
            weak.append(f"only {t.answered} of {t.n} trigger queries were answered")
        else:
            negative.append(f"trigger agreement {t.matches}/{t.n} is consistent with chance (p={t.p_value:.2g})")
    if owned:
        return "owned", owned + weak
    if weak:
        return "inconclusive", weak + negative
    if not negative:
        return "inconclusive", ["the key holds no evidence scheme (V2 signature or V3 trigger set) to test"]
    return "not_owned", negative


def decide(*, signature: SignatureEvidence | None = None, triggers: TriggerEvidence | None = None,
           errors: dict[str, str] | None = None, policy: VerdictPolicy | None = None, tests: int = 1,
           anchor: AnchorCheck | None = None, appearance: Appearance | None = None, require_anchor: bool = True
           ) -> tuple[Verdict, list[str]]:
    """Apply the decision rule.

    Args:
        signature (`SignatureEvidence`, *optional*): Scheme V2 evidence.
        triggers (`TriggerEvidence`, *optional*): Scheme V3 evidence.
        errors (`dict[str, str]`, *optional*): Schemes that could not be evaluated, and why.
        policy (`VerdictPolicy`, *optional*): Thresholds.
        tests (`int`, *optional*, defaults to 1): Statistical tests performed on the trigger
            set (Bonferroni correction of the V3 threshold).
        anchor (`AnchorCheck`, *optional*): The key's earliest anchor as read back from the Hub.
        appearance (`Appearance`, *optional*): The suspect's first public appearance, when known.
        require_anchor (`bool`, *optional*, defaults to `True`): ``owned`` needs a verified
            anchor no later than ``appearance``.

    Returns:
        ``(verdict, reasons)``.
    """
    verdict, reasons = _evidence_verdict(signature, triggers, dict(errors or {}), policy or VerdictPolicy(), tests)
    if verdict != "owned":
        return verdict, reasons
    if not require_anchor:
        return "owned", ["unanchored check (no anchor required): the evidence matches, but only an anchored key "
                         "proves who came first", *reasons]
    if anchor is None or not anchor.verified or anchor.time is None:
        why = "the key has no anchor" if anchor is None else f"its anchor could not be verified: {anchor.reason}"
        return "inconclusive", [f"the evidence matches, but {why}; nobody can tell when the key was written. Publish "
                                "with push (or anchor it) before checking copies, or pass --unanchored to check your "
                                "own unpublished model", *reasons]
    where = f"{anchor.anchor.repo_id} @ {anchor.anchor.commit[:12]}"
    if appearance is not None and anchor.time > appearance.time:
        return "inconclusive", [f"anchored after the suspect appeared: the key was anchored at {anchor.time.isoformat()} "
                                f"({where}), the suspect's weights first appeared at {appearance.time.isoformat()} "
                                f"({appearance.repo_id}, {appearance.how}); a key written after seeing a model proves "
                                "nothing", *reasons]
    return "owned", [*reasons, f"the key was anchored at {anchor.time.isoformat()} ({where}, server time)"
                     + ("" if appearance is None else ", no later than the suspect's weights first appeared")]
