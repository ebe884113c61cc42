"""Fingerprints by conferrable adversarial examples (Lukas, Zhang, Kerschbaum, ICLR 2021), compactly.

A *conferrable* adversarial example is an input, crafted on the published (source) model,
that the source labels with a wrong class *and* that models derived from the source
(surrogates: distilled, pruned, fine-tuned copies) label the same way, while models trained
independently for the same task (references) do not. The owner needs no retraining of the
published model: it trains a few surrogates (distilled from its own model on its own data)
and a few references (trained on its own data with the true labels), then optimises small
perturbations of its own images against that ensemble (the paper's CEM loss):

    E(x') = mean_S softmax(S(x')) ⊙ (1 − mean_R softmax(R(x')))           (per class)
    L(x') = −log max_c E_c(x')  −  H(M(x₀), M(x'))  +  H(M(x'), mean_S softmax(S(x')))

minimised by signed-gradient steps inside an L∞ ball of radius ``epsilon`` (each step drops
every ensemble member with probability ``1 − keep_prob``, as the paper does, so the result
does not over-fit to one member). Candidates are then scored with *hard* labels of every
ensemble member,

    conferrability(x') = frac(S agrees with M) · (1 − frac(R agrees with M)),

and the ``n`` best with ``M(x') ≠ y`` become the fingerprint: images (quantised to uint8, so
an endpoint receives exactly them) and the source's labels. Verification needs only the
suspect's labels on those images; the statistic is the agreement with the source's labels
(the paper's CAEAcc).

Everything here is a pure function of its inputs and seed; the fingerprint is a
:class:`~hf_lottery_verify.triggers.TriggerSet` (``source="cae"``), so the library's
white-box and black-box query paths (``predict_labels``, ``blackbox.query_labels``) and its
digest/commitment apply unchanged. Meant to move into the package as ``triggers/cae.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hf_lottery_verify.stats import binomial_tail, binomial_threshold
from hf_lottery_verify.triggers import TriggerSet

__all__ = ["conferrability", "craft_conferrable", "make_cae_fingerprint", "FingerprintEvidence",
           "fingerprint_evidence", "clopper_pearson_upper", "hard_labels"]

LUKAS_THRESHOLD = 0.75  # Lukas et al.'s decision rule: a suspect is a surrogate when CAEAcc >= 0.75


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return getattr(out, "logits", out).float()


@torch.no_grad()
def hard_labels(model: torch.nn.Module, images: torch.Tensor, *, mean: Sequence[float], std: Sequence[float],
                batch_size: int = 1000) -> torch.Tensor:
    """Arg-max labels of ``model`` on uint8 (or ``[0, 1]`` float) images."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    model.eval()
    return torch.cat([_logits(model, (x[i:i + batch_size] - m) / s).argmax(1) for i in range(0, len(x), batch_size)])


def conferrability(source: torch.Tensor, surrogates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-input conferrability from hard labels.

    Args:
        source: ``N`` labels of the source model.
        surrogates: ``S×N`` labels of the surrogate models.
        references: ``R×N`` labels of the reference models.

    Returns:
        ``N`` scores in ``[0, 1]``: share of surrogates agreeing with the source times the
        share of references disagreeing.
    """
    return (surrogates == source).float().mean(0) * (1 - (references == source).float().mean(0))


def _cem_loss(source: torch.nn.Module, surrogates: Sequence[torch.nn.Module], references: Sequence[torch.nn.Module],
              x: torch.Tensor, p0: torch.Tensor) -> torch.Tensor:
    pm = F.softmax(_logits(source, x), 1)
    ps = torch.stack([F.softmax(_logits(m, x), 1) for m in surrogates]).mean(0)
    pr = torch.stack([F.softmax(_logits(m, x), 1) for m in references]).mean(0)
    ensemble = ps * (1 - pr)
    confer = -torch.log(ensemble.max(1).values.clamp_min(1e-12))
    away = -(p0 * torch.log(pm.clamp(1e-7, 1 - 1e-7))).sum(1)
    agree = -(pm.detach() * torch.log(ps.clamp_min(1e-12))).sum(1)
    return (confer - away + agree).sum()


def craft_conferrable(source: torch.nn.Module, surrogates: Sequence[torch.nn.Module],
                      references: Sequence[torch.nn.Module], images: torch.Tensor, *, mean: Sequence[float],
                      std: Sequence[float], epsilon: float, steps: int = 50, step_size: float | None = None,
                      keep_prob: float = 0.7, seed: int, batch_size: int = 250,
                      log=None) -> torch.Tensor:  # noqa: ANN001
    """Optimise conferrable perturbations of ``images`` (the CEM loss above).

    Args:
        source: The owner's published model.
        surrogates: Models derived from it (distilled on the owner's data).
        references: Models trained independently (true labels, the owner's data).
        images: uint8 ``N×C×H×W`` starting points (normally ones the source classifies right).
        mean, std: The models' input normalisation (fractions of 255).
        epsilon: L∞ radius in ``[0, 1]`` pixel units.
        steps: Signed-gradient steps.
        step_size: Step length (default ``epsilon / 10``, at least one grey level).
        keep_prob: Probability that an ensemble member takes part in a step.
        seed: Seed of the random start and of the member dropout.
        batch_size: Candidates per optimisation batch.
        log: Optional ``callable(str)`` for progress lines.

    Returns:
        uint8 images of the same shape, each within ``epsilon`` (after rounding) of its start.
    """
    gen = torch.Generator().manual_seed(seed)
    alpha = step_size if step_size is not None else max(epsilon / 10, 1 / 255)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    models = [source, *surrogates, *references]
    for model in models:
        model.eval()
        model.requires_grad_(False)
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x0 = images[start:start + batch_size].float() / 255
            with torch.no_grad():
                p0 = F.softmax(_logits(source, (x0 - m) / s), 1)
            x = (x0 + (torch.rand(x0.shape, generator=gen) * 2 - 1) * epsilon / 2).clamp(0, 1)
            for step in range(steps):
                keep_s = [mod for mod in surrogates if float(torch.rand((), generator=gen)) < keep_prob] or [
                    surrogates[int(torch.randint(len(surrogates), (), generator=gen))]]
                keep_r = [mod for mod in references if float(torch.rand((), generator=gen)) < keep_prob] or [
                    references[int(torch.randint(len(references), (), generator=gen))]]
                x.requires_grad_(True)
                loss = _cem_loss(source, keep_s, keep_r, (x - m) / s, p0)
                (grad,) = torch.autograd.grad(loss, [x])
                with torch.no_grad():
                    x = torch.minimum(torch.maximum(x - alpha * grad.sign(), x0 - epsilon), x0 + epsilon).clamp(0, 1)
                if log is not None and (step + 1) % 10 == 0:
                    log(f"      candidates {start}..{start + len(x0)}: step {step + 1}/{steps}, loss/img "
                        f"{float(loss) / len(x0):.3f}")
            out.append(torch.round(x.detach() * 255).to(torch.uint8))
    finally:
        for model in models:
            model.requires_grad_(True)
    return torch.cat(out)


def make_cae_fingerprint(source: torch.nn.Module, surrogates: Sequence[torch.nn.Module],
                         references: Sequence[torch.nn.Module], images: torch.Tensor, labels: torch.Tensor, *,
                         mean: Sequence[float], std: Sequence[float], num_classes: int, n: int = 100,
                         candidates: int = 500, epsilon: float = 0.1, steps: int = 50, min_score: float = 0.75,
                         seed: int, log=None) -> tuple[TriggerSet, dict]:  # noqa: ANN001
    """The owner's fingerprint: the ``n`` most conferrable adversarial examples of its own images.

    Args:
        source, surrogates, references: As in :func:`craft_conferrable`.
        images, labels: The owner's labelled images (uint8) to start from.
        mean, std: Input normalisation.
        num_classes: Classes of the source model.
        n: Fingerprint size.
        candidates: Starting images drawn (seeded) among those the source classifies right.
        epsilon, steps: Perturbation radius and optimisation steps.
        min_score: Lowest conferrability (on the generation ensemble, hard labels) kept.
        seed: Seed of the draw and of the optimisation.
        log: Optional progress callable.

    Returns:
        ``(fingerprint, stats)``: a :class:`TriggerSet` whose labels are the source's labels
        (``source="cae"``, ``seed=seed``), and the generation statistics (yield, scores).
    """
    correct = torch.nonzero(hard_labels(source, images, mean=mean, std=std) == labels).reshape(-1)
    pick = correct[torch.randperm(len(correct), generator=torch.Generator().manual_seed(seed))[:candidates]]
    adv = craft_conferrable(source, surrogates, references, images[pick], mean=mean, std=std, epsilon=epsilon,
                            steps=steps, seed=seed, log=log)
    src = hard_labels(source, adv, mean=mean, std=std)
    sur = torch.stack([hard_labels(mod, adv, mean=mean, std=std) for mod in surrogates])
    ref = torch.stack([hard_labels(mod, adv, mean=mean, std=std) for mod in references])
    score = conferrability(src, sur, ref)
    score[src == labels[pick]] = -1.0  # must be adversarial to the source itself
    order = torch.argsort(score, descending=True, stable=True)
    chosen = order[score[order] >= min_score][:n]
    stats = {"candidates": len(pick), "adversarial": int((src != labels[pick]).sum()),
             "eligible": int((score >= min_score).sum()), "chosen": len(chosen), "epsilon": epsilon,
             "steps": steps, "min_score": min_score,
             "score_of_chosen": [round(float(v), 4) for v in score[chosen]],
             "linf_of_chosen": float((adv[chosen].float() - images[pick][chosen].float()).abs().amax() / 255)
             if len(chosen) else None}
    return TriggerSet(adv[chosen], src[chosen], num_classes, source="cae", seed=seed), stats


def clopper_pearson_upper(k: int, n: int, confidence: float) -> float:
    """One-sided upper confidence bound on a binomial rate (exact, by bisection on the tail)."""
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):  # P(X <= k | p) is decreasing in p: find p where it equals 1 - confidence
        mid = (lo + hi) / 2
        if 1 - binomial_tail(k + 1, n, mid) > 1 - confidence:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass
class FingerprintEvidence:
    """What a suspect's labels on the fingerprint show.

    Attributes:
        n: Fingerprint size.
        matches: Inputs on which the suspect gives the source's label.
        agreement: ``matches / n`` (the paper's CAEAcc).
        threshold: Agreement the fixed rule needs (Lukas et al.: 0.75).
        null_rate: Agreement rate assumed for independent models (upper bound from the owner's
            validation references), for the exact test; ``None`` when not given.
        p_value: ``P(X >= matches)`` for ``X ~ Binomial(n, null_rate)``.
        needed: Matches the exact test needs at ``alpha``.
        positive_rule: ``agreement >= threshold``.
        positive_test: ``p_value <= alpha``.
    """

    n: int
    matches: int
    agreement: float
    threshold: float
    null_rate: float | None
    p_value: float | None
    needed: int | None
    positive_rule: bool
    positive_test: bool | None


def fingerprint_evidence(predicted: torch.Tensor, fingerprint: TriggerSet, *, threshold: float = LUKAS_THRESHOLD,
                         null_rate: float | None = None, alpha: float = 1e-6) -> FingerprintEvidence:
    """Compare a suspect's labels with the fingerprint's (source) labels.

    Args:
        predicted: ``N`` labels (``-1`` for unanswered queries: they count as misses).
        fingerprint: The owner's fingerprint.
        threshold: Agreement of the fixed decision rule.
        null_rate: Per-input agreement of an independent model to test against (see
            :func:`clopper_pearson_upper`); ``None`` skips the exact test.
        alpha: Level of the exact test.

    Returns:
        The :class:`FingerprintEvidence`.
    """
    pred = torch.as_tensor(predicted).reshape(-1).to(torch.int64)
    n = len(fingerprint)
    matches = int((pred == fingerprint.labels).sum())
    p = needed = test = None
    if null_rate is not None:
        p = binomial_tail(matches, n, null_rate)
        needed = binomial_threshold(n, null_rate, alpha)
        test = p <= alpha
    agreement = matches / n if n else math.nan
    return FingerprintEvidence(n=n, matches=matches, agreement=agreement, threshold=threshold, null_rate=null_rate,
                               p_value=p, needed=needed, positive_rule=agreement >= threshold, positive_test=test)
