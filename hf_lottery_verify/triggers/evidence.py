"""Trigger evidence: a suspect's answers on the set (:func:`predict_labels` for in-memory models) to an exact p-value.

:func:`trigger_evidence` turns a suspect's answers (``-1`` where it gave none) into an exact
binomial p-value over *all* trigger images, so unanswered queries can only lower the evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..data import normalize
from ..stats import binomial_threshold, trigger_p_value
from .sets import TriggerSet

__all__ = ["DEFAULT_ALPHA", "TriggerEvidence", "predict_labels", "trigger_evidence"]

DEFAULT_ALPHA = 1e-12
"""Default significance level of the trigger test: what `owned` needs (100 images, 10 classes: 37 matches)."""


@dataclass
class TriggerEvidence:
    """What a suspect's answers on the trigger set say.

    Attributes:
        n: Trigger images in the set.
        queried: Images sent to the suspect.
        answered: Usable answers (predictions other than ``-1``).
        matches: Answers equal to the trigger label.
        agreement: ``matches / n`` (unanswered images count as misses).
        p_value: ``P(X >= matches)`` for ``X ~ Binomial(n, 1 / num_classes)``: the chance that
            an unrelated model does at least as well.
        num_classes: Classes the trigger labels were drawn from.
        alpha: Significance level.
        threshold: Matches needed at ``alpha`` (``n + 1`` when no outcome suffices).
        positive: ``p_value <= alpha`` (which needs at least ``threshold`` answers).
        failed: Queries that failed (transport or malformed answers).
        reason: Why the evidence is not positive, when it is not.
        transform: The orientation of the images these answers are for (one of
            :data:`~hf_lottery_verify.symmetry.DIHEDRAL`; verification asks all and keeps the best).
    """

    n: int
    queried: int
    answered: int
    matches: int
    agreement: float
    p_value: float
    num_classes: int
    alpha: float
    threshold: int
    positive: bool
    failed: int = 0
    reason: str | None = None
    transform: str = "identity"

    @property
    def inconclusive(self) -> bool:
        """Not positive, and too few answers to ever reach ``threshold`` (a dead or refusing suspect)."""
        return not self.positive and self.answered < self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields plus ``inconclusive``."""
        d = asdict(self)
        d["inconclusive"] = self.inconclusive
        return d


def trigger_evidence(
    predicted: torch.Tensor | Sequence[int],
    triggers: TriggerSet,
    *,
    alpha: float = DEFAULT_ALPHA,
    queried: int | None = None,
    failed: int = 0,
) -> TriggerEvidence:
    """Compare a suspect's answers with the trigger labels: agreement and exact p-value.

    Args:
        predicted (`torch.Tensor`): ``int64`` tensor of ``N`` predicted labels, ``-1`` where
            the suspect gave no usable answer. Missing answers count as misses: the p-value
            is over all ``N`` images, so they can only lower the evidence.
        triggers (`TriggerSet`): The owner's trigger set.
        alpha (`float`, *optional*, defaults to 1e-12): Significance level (what `owned` needs).
        queried (`int`, *optional*): Images actually sent (defaults to ``N``).
        failed (`int`, *optional*, defaults to 0): Queries that failed.

    Returns:
        The :class:`TriggerEvidence`.

    Raises:
        ValueError: ``predicted`` does not hold one integer per trigger image, or ``alpha``
            is outside ``(0, 1]``.

    Example:
        >>> from hf_lottery_verify.triggers import make_trigger_set
        >>> t = make_trigger_set(100, num_classes=10, seed=0)
        >>> pred = t.labels.clone(); pred[:40] = -1           # 40 unanswered, 60 right
        >>> ev = trigger_evidence(pred, t)
        >>> ev.matches, ev.agreement, ev.positive
        (60, 0.6, True)
    """
    pred = torch.as_tensor(predicted).detach().cpu()
    n = len(triggers)
    if pred.dim() != 1 or len(pred) != n:
        raise ValueError(f"predicted must hold one label per trigger image ({n}), got shape {tuple(pred.shape)}.")
    if pred.is_floating_point():
        raise ValueError("predicted must hold integer labels (-1 for missing answers).")
    pred = pred.to(torch.int64)
    answered = int((pred != -1).sum())
    matches = int((pred == triggers.labels).sum())
    p = trigger_p_value(matches, n, triggers.num_classes)
    threshold = binomial_threshold(n, 1.0 / triggers.num_classes, alpha)
    positive = p <= alpha and answered >= threshold
    reason = None
    if not positive:
        if answered < threshold:
            reason = (f"only {answered} of {n} trigger images were answered; {threshold} matches are needed at "
                      f"alpha={alpha:g}, so the test could not be positive")
        else:
            reason = (f"{matches} of {n} trigger labels matched ({threshold} needed at alpha={alpha:g}); "
                      f"p={p:.3g} is consistent with chance (1/{triggers.num_classes})")
        if failed:
            reason += f"; {failed} queries failed"
    return TriggerEvidence(n=n, queried=n if queried is None else int(queried), answered=answered, matches=matches,
                           agreement=matches / n, p_value=p, num_classes=triggers.num_classes, alpha=float(alpha),
                           threshold=threshold, positive=positive, failed=int(failed), reason=reason)


@torch.no_grad()
def predict_labels(
    model: nn.Module,
    triggers: TriggerSet,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int | None = None,
    channels: int | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """White-box query: the labels an in-memory model gives the trigger images.

    The set is first converted to ``channels`` (default: the model's ``config.in_chans``,
    else the set's) and ``image_size`` (default: the set's), then normalised with
    ``mean``/``std`` — the constants of the data the model was trained on. For endpoints
    and untrusted callables use :func:`hf_lottery_verify.blackbox.query_labels`.

    Args:
        model (`nn.Module`): A model returning logits or an output with ``.logits``.
        triggers (`TriggerSet`): The trigger set.
        mean (`Sequence[float]`): Per-channel normalisation mean (fraction of 255).
        std (`Sequence[float]`): Per-channel normalisation standard deviation.
        image_size (`int`, *optional*): Side the model expects.
        channels (`int`, *optional*): Channels the model expects.
        batch_size (`int`, *optional*, defaults to 256): Images per forward pass.

    Returns:
        ``int64`` CPU tensor of ``N`` labels (arg-max of the logits).
    """
    channels = channels or getattr(getattr(model, "config", None), "in_chans", None) or triggers.channels
    adapted = triggers.resized(image_size=image_size or triggers.image_size, channels=int(channels))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(adapted), batch_size):
            x = normalize(adapted.images[start: start + batch_size].to(device), tuple(mean), tuple(std))
            result = model(x)
            out.append(getattr(result, "logits", result).float().argmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).to(torch.int64)
