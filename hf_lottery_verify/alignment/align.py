"""Matching a suspect's channels to the owner's reference, space by space in forward order.

For each channel space (:mod:`hf_lottery_verify.spaces`) the producers whose input space
is already aligned are read in the reference's coordinates (input columns gathered through
that space's mapping, duplicates folded, input scales undone) and every (reference channel,
suspect channel) pair is scored (:mod:`.scores`); batch norm fingerprints break ties.

* **Fast paths.** A suspect whose every masked weight has exactly the reference's non-zero
  pattern is the reference up to rescaling: every space is the identity, nothing is
  compared. Otherwise each space checks the identity on the diagonal first and accepts it
  without the full comparison when it is clearly right.
* **Assignment.** Otherwise an optimal assignment (``scipy.optimize.linear_sum_assignment``,
  rectangular for a widened suspect) decides, preferring the identity when it scores as
  well. A zero-padding shortcut's injected channels follow their source space.
* **Ambiguous channels** (dead ones, without kept weights, or ones with a rival as good)
  are left out of the evidence of later spaces until they are decided again with every
  producer and every consumer, as soon as the consumers' spaces are aligned.
* **Extra channels** are folded or dropped (:mod:`.extras`); **scales** are estimated at
  the end (:mod:`.scales`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import torch
from scipy.optimize import linear_sum_assignment

from ..errors import HfLotteryError
from ..liveness import liveness, without_dead
from ..spaces import ChannelSpace
from ..symmetry import inverse, transform_kernels
from .evidence import (
    RANDOM_PAIRS,
    consumer_evidence,
    evidence_weight,
    fingerprints,
    has_evidence,
    pattern_similarity,
    producer_evidence,
)
from .extras import resolve_extras
from .layout import orientations, restore_blocks, unmatched_blocks
from .reference import Reference
from .result import Alignment, SpaceAlignment, is_rescaled
from .scales import finalize_scales, space_scale
from .scores import (
    Evidence,
    at_mapping,
    fingerprint_scores,
    forced_rows,
    matrix_scores,
    mean,
    off_mean,
    pair_scores,
    rivals,
    weighted,
    without_copies,
)
from .state import AlignerState

__all__ = ["align_suspect"]

logger = logging.getLogger(__name__)

FAST_ACCEPT = 0.9
"""The identity is accepted without a full comparison when every channel scores at least this."""
AMBIGUITY = 0.02
"""A match is ambiguous when another suspect channel scores within this of it."""
FINGERPRINT_WEIGHT = 0.05
"""Weight of the batch norm fingerprints in the assignment score (a tie-breaker)."""
HOPELESS = 0.5
"""Below this running confidence the suspect is taken for an unrelated model: undecided channels are not refined."""
RETRY_BELOW = 0.5
"""An alignment less confident than this is tried again with the suspect's kernels in the next orientation."""
UNMATCHED = 0.25
"""A block whose internal spaces all match with less confidence than this is reported as matching nothing."""


class _Aligner(AlignerState):
    """The alignment algorithm over :class:`~.state.AlignerState`: scores, assignment, refinement, assembly."""

    def scores(self, space: ChannelSpace, evidence: list[Evidence], r_idx: torch.Tensor, s_idx: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Assignment scores (fingerprints and a preference for the suspect's own order included), reported scores and evidence."""
        full = r_idx.numel() == space.size and s_idx.numel() == self.sus[space.name].size
        sub = evidence if full else [ev.subset(r_idx, s_idx) for ev in evidence]
        assign, report, weight = matrix_scores(sub, r_idx.numel(), s_idx.numel())
        fp = fingerprints(self, space)
        if fp is not None:
            spread = fp[0].std(dim=0) if fp[0].shape[0] > 1 else torch.zeros(fp[0].shape[1])
            total = assign + FINGERPRINT_WEIGHT * fingerprint_scores(fp[0][r_idx], fp[1][s_idx], spread=spread)
        else:
            total = assign.clone()
        total += 1e-6 * (r_idx[:, None] == s_idx[None, :])  # among equals, keep the suspect's own order
        return total, report, weight

    # ------------------------------------------------------------------ solving

    def solve(self, space: ChannelSpace) -> None:
        n_ref, n_sus = space.size, self.sus[space.name].size
        if space.fixed:
            self.done[space.name] = SpaceAlignment(space.name, space.kind, n_ref, n_sus, torch.arange(n_ref),
                                                   torch.ones(n_ref, dtype=torch.float64))
            return
        evidence = producer_evidence(self, space)
        st = SpaceAlignment(space.name, space.kind, n_ref, n_sus, torch.arange(n_ref),
                            torch.ones(n_ref, dtype=torch.float64), method="diagonal")
        rows = torch.arange(n_ref)
        forced = self._forced(space)
        identity_ok = n_sus == n_ref and (space.injection is None or self.done[space.injection.source].trivial)
        accepted = False
        if identity_ok:
            assign, report, weight = pair_scores(evidence, rows, rows)
            has = weight > 0
            if bool((assign[has] >= FAST_ACCEPT).all()):
                accepted = True
                self.pairs[space.name] = (report, weight)
                undecided = rows[~has]
        if not accepted:
            st.method = "assignment"
            total, report, weight = self.scores(space, evidence, rows, torch.arange(n_sus))
            st.mapping = self._assign(total, space, forced)
            if identity_ok and float(total.diagonal().sum()) >= float(at_mapping(total, st.mapping).sum()) - 1e-6 * n_ref:
                st.mapping = rows.clone()
            st.identity = torch.equal(st.mapping, rows)
            valid = st.mapping >= 0
            st.random_similarity = off_mean(report, weight, rows[valid], st.mapping[valid])
            self.pairs[space.name] = (at_mapping(report, st.mapping), at_mapping(weight, st.mapping))
            if not bool(valid.all()):
                st.notes.append(f"the suspect has {n_sus} channels, fewer than the reference's {n_ref}: "
                                f"{int((~valid).sum())} reference channels have no counterpart")
        else:
            st.random_similarity = self._random_similarity(evidence, n_ref)
        self.done[space.name] = st
        resolve_extras(self, space, st)
        if not accepted:  # copies folded into a channel are no rivals of it
            undecided = rivals(without_copies(total, st), st.mapping, rows, ambiguity=AMBIGUITY) | (at_mapping(weight, st.mapping) <= 0)
            undecided = rows[undecided & ~forced_rows(space, forced, n_ref)]
        if undecided.numel():
            self.pending[space.name] = undecided
        st.scale = space_scale(self, space)

    def _forced(self, space: ChannelSpace) -> dict[int, int]:
        inj = space.injection
        if inj is None:
            return {}
        src = self.done[inj.source]
        return {inj.offset + i: inj.offset + int(s) for i, s in enumerate(src.mapping.tolist()) if s >= 0}

    def _assign(self, total: torch.Tensor, space: ChannelSpace, forced: dict[int, int],
                free_r: list[int] | None = None, free_s: list[int] | None = None,
                mapping: torch.Tensor | None = None) -> torch.Tensor:
        """Optimal assignment of ``free_r`` to ``free_s`` (a zero-padded stream's injected channels are ``forced``)."""
        n_ref, n_sus = space.size, self.sus[space.name].size
        mapping = torch.full((n_ref,), -1, dtype=torch.long) if mapping is None else mapping.clone()
        free_r = list(range(n_ref)) if free_r is None else free_r
        free_s = list(range(n_sus)) if free_s is None else free_s
        inj = space.injection
        if inj is not None:
            for r, s in forced.items():
                mapping[r] = s
            ref_end, sus_end = inj.offset + self.by_name[inj.source].size, inj.offset + self.sus[inj.source].size
            keep_r = [i for i, r in enumerate(free_r) if not inj.offset <= r < ref_end]
            keep_s = [j for j, s in enumerate(free_s) if not inj.offset <= s < sus_end]
        else:
            keep_r, keep_s = list(range(len(free_r))), list(range(len(free_s)))
        if keep_r and keep_s:
            sub = total[keep_r][:, keep_s].double().numpy()
            r_i, c_i = linear_sum_assignment(sub, maximize=True)
            for a, b in zip(r_i.tolist(), c_i.tolist(), strict=True):
                mapping[free_r[keep_r[a]]] = free_s[keep_s[b]]
        return mapping

    def _random_similarity(self, evidence: list[Evidence], n: int, n_sus: int | None = None) -> float:
        n_sus = n if n_sus is None else n_sus
        if n < 2 or n_sus < 2:
            return 0.0
        rows = torch.arange(0, n, max(1, n // RANDOM_PAIRS))
        cols = (rows + n_sus // 2 + 1) % n_sus
        cols = torch.where(cols == rows, (cols + 1) % n_sus, cols)
        _, report, weight = pair_scores(evidence, rows, cols)
        return mean(report, weight)

    def final_similarities(self) -> None:
        """Similarity of the chosen and of random pairs, from every producer and consumer (nothing left out)."""
        self.pending.clear()
        for space in self.spaces:
            st = self.done[space.name]
            if space.fixed:
                continue
            evidence = producer_evidence(self, space) + consumer_evidence(self, space)
            valid = st.mapping >= 0
            rows = torch.arange(st.size)
            sim, ev = torch.zeros(st.size), torch.zeros(st.size)
            if bool(valid.any()):
                _, report, weight = pair_scores(evidence, rows[valid], st.mapping[valid])
                sim[valid], ev[valid] = report.float(), weight.float()
            self.pairs[space.name] = (sim, ev)
            st.random_similarity = self._random_similarity(evidence, st.size, st.suspect_size)

    # ------------------------------------------------------------------ refining undecided channels

    def ready(self, space: ChannelSpace) -> bool:
        """Every producer's input space and every consumer's output space is aligned."""
        inputs = [self.dims[c][1] for c in space.producer_convs]
        outputs = [self.dims[c][0] for c in space.consumers if self.dims[c][0] is not None]
        return all(n in self.done for n in [*inputs, *outputs])

    def refine(self, space: ChannelSpace, undecided: torch.Tensor) -> None:
        """Decide ``undecided`` reference channels again with every producer and consumer (others stay)."""
        st = self.done[space.name]
        self.pending.pop(space.name, None)
        taken = set(st.mapping[st.mapping >= 0].tolist()) - set(st.mapping[undecided].tolist())
        taken |= {e for e, (r, _) in st.folded.items() if r not in set(undecided.tolist())}
        free_s = [s for s in range(st.suspect_size) if s not in taken]
        free_r = undecided.tolist()
        if not free_s or not free_r:
            return
        evidence = producer_evidence(self, space) + consumer_evidence(self, space)
        r_idx, s_idx = torch.tensor(free_r), torch.tensor(free_s)
        total, report, weight = self.scores(space, evidence, r_idx, s_idx)
        before = st.mapping.clone()
        mapping = self._assign(total, space, self._forced(space), free_r, free_s, st.mapping)
        local = {s: j for j, s in enumerate(free_s)}
        if all(r in local for r in free_r):  # prefer the identity among equals
            same = torch.tensor([local[r] for r in free_r])
            chosen = torch.tensor([local.get(int(mapping[r]), -1) for r in free_r])
            ok = chosen >= 0
            if float(total[torch.arange(len(free_r)), same].sum()) >= float(
                    total[torch.arange(len(free_r))[ok], chosen[ok]].sum()) - 1e-6 * len(free_r):
                mapping[r_idx] = r_idx
        st.mapping = mapping
        cols = torch.tensor([local.get(int(mapping[r]), -1) for r in free_r])
        ok = cols >= 0
        sim, ev = self.pairs[space.name]
        sim, ev = sim.clone(), ev.clone()
        sim[r_idx[ok]], ev[r_idx[ok]] = report[ok, cols[ok]], weight[ok, cols[ok]]
        self.pairs[space.name] = (sim, ev)
        local_map = torch.where(ok, cols, torch.full_like(cols, -1))
        still = rivals(total, local_map, torch.arange(len(free_r)), ambiguity=AMBIGUITY) | ~ok | (
            weight[torch.arange(len(free_r)), cols.clamp(min=0)] <= 0)
        st.ambiguous = int(still.sum())
        self.unsure[space.name] = r_idx[still]
        st.method = "refined" if st.method != "diagonal" or not torch.equal(before, mapping) else st.method
        st.identity = torch.equal(mapping, torch.arange(st.size))
        if not torch.equal(before, mapping):
            self.changed.add(space.name)
            resolve_extras(self, space, st)
            for dep in self.dependents.get(space.name, []):  # zero-padded streams follow their source
                dst = self.done.get(dep.name)
                if dst is not None:
                    for r, s in self._forced(dep).items():
                        dst.mapping[r] = s
                    dst.identity = torch.equal(dst.mapping, torch.arange(dst.size))
                    self.changed.add(dep.name)

    def refine_ready(self, *, final: bool = False) -> None:
        for name in list(self.pending):
            space = self.by_name[name]
            if final or self.ready(space):
                self.refine(space, self.pending[name])

    def refine_unsure(self, *, rounds: int = 2) -> None:
        """Decide the channels still unsure once more, now that no evidence is left out anywhere."""
        for _ in range(rounds):
            before = len(self.changed)
            for space in self.spaces:
                unsure = self.unsure.pop(space.name, None)
                if unsure is not None and unsure.numel():
                    self.refine(space, unsure)
            if len(self.changed) == before:
                break

    # ------------------------------------------------------------------ the whole model

    def exact_identity(self) -> bool:
        """Whether every masked weight has exactly the reference's non-zero pattern (and the stem its rows)."""
        if any(self.sus[s.name].size != s.size for s in self.spaces):
            return False
        for name, mask in self.ref.masks.items():
            if not torch.equal(self.sd[name] != 0, mask):
                return False
        for space in self.spaces:
            for conv in space.producer_convs:
                if conv in self.ref.tensors:
                    s, r = self.sd[conv].double().flatten(1), self.ref.tensors[conv].double().flatten(1)
                    cos = (s * r).sum(1) / (s.norm(dim=1) * r.norm(dim=1)).clamp(min=1e-300)
                    if bool((cos[r.norm(dim=1) > 0] < 0.999).any()):
                        return False
        return True

    def weights(self, name: str, evidence: torch.Tensor) -> torch.Tensor:
        """Per reference channel: its kept weights where the comparison had evidence, else 0."""
        if name not in self._weights:
            self._weights[name] = evidence_weight(self.ref, self.by_name[name])
        return torch.where(evidence > 0, self._weights[name], torch.zeros_like(self._weights[name]))

    def running_confidence(self) -> float:
        """Evidence-weighted confidence of the spaces solved so far (1 before any has evidence)."""
        total = weight = 0.0
        for st in self.done.values():
            if st.method == "fixed" or st.name not in self.pairs:
                continue
            sim, ev = self.pairs[st.name]
            w = self.weights(st.name, ev)
            n = float(w.sum())
            span = 1.0 - st.random_similarity
            conf = min(1.0, max(0.0, (weighted(sim, w) - st.random_similarity) / span)) if span > 1e-9 else 0.0
            total, weight = total + n * conf, weight + n
        return total / weight if weight else 1.0

    def run(self) -> Alignment:
        t0 = time.perf_counter()
        self.exact = self.exact_identity()
        if self.exact:
            for space in self.spaces:
                n = space.size
                self.done[space.name] = SpaceAlignment(space.name, space.kind, n, n, torch.arange(n),
                                                       torch.ones(n, dtype=torch.float64),
                                                       method="fixed" if space.fixed else "exact")
                if not space.fixed:
                    self.done[space.name].random_similarity = pattern_similarity(self.ref, space)
                    self.pairs[space.name] = (torch.ones(n), has_evidence(self.ref, space).float())
            self.changed = {s.name for s in self.spaces}
        else:
            hopeless = False
            for space in self.spaces:
                self.solve(space)
                hopeless = hopeless or self.running_confidence() < HOPELESS
                if not hopeless:
                    self.refine_ready()
            if hopeless:  # an unrelated model: everything is ambiguous, refining would not change the verdict
                self.notes.append(f"the suspect matches poorly (confidence below {HOPELESS} after the forward pass); "
                                  "its undecided channels were not refined")
                self.pending.clear()
            else:
                self.refine_ready(final=True)
                self.refine_unsure()
        for space in self.spaces:  # extra channels again, now with every producer's input aligned
            if self.done[space.name].extra:
                resolve_extras(self, space, self.done[space.name])
        if not self.exact:
            self.final_similarities()
        row_scales = finalize_scales(self, self.changed)
        return self.result(row_scales, t0)

    def result(self, row_scales: dict[str, torch.Tensor], t0: float) -> Alignment:
        movable = [s for s in self.done.values() if s.method != "fixed"]
        for st in movable:
            sim, ev = self.pairs.get(st.name, (torch.zeros(st.size), torch.zeros(st.size)))
            w = self.weights(st.name, ev)
            st.similarity = weighted(sim, w)
            st.evidence = int((w > 0).sum())
            st.weight = float(w.sum())
        weight = sum(s.weight for s in movable)
        confidence = sum(s.weight * s.confidence for s in movable) / weight if weight else 0.0
        if not weight:
            self.notes.append("no channel of the reference has any kept weight to compare: nothing to align on")
        # Scales read off low-precision weights carry their rounding.
        tolerance = max([1e-3] + [32 * torch.finfo(t.dtype).eps for t in self.sd.values() if t.is_floating_point()])
        rescaled = any(is_rescaled(s.scale, tolerance=tolerance) for s in movable) or any(
            is_rescaled(a[torch.isfinite(a)], tolerance=tolerance) for a in row_scales.values())
        return Alignment(
            arch=self.ref.arch, model_args=self.ref.model_args, state_dict=self.assemble(), spaces=dict(self.done),
            row_scales=row_scales, inputs={c: self.dims[c][1] for c in row_scales}, confidence=float(confidence),
            permuted=any(s.reordered for s in movable), rescaled=rescaled,
            widened=any(s.suspect_size > s.size for s in movable),
            notes=self.notes + [f"{s.name}: {n}" for s in movable for n in s.notes],
            seconds=time.perf_counter() - t0)

    def assemble(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, shape in self.ref.shapes.items():
            t = self.sd.get(name)
            if t is None:  # an optional buffer the suspect did not save
                out[name] = torch.zeros(shape, dtype=torch.long)
                continue
            d0, d1 = self.dims.get(name, (None, None))
            if d0 is not None:
                t = self.rows(t, d0, fill=1.0 if name.endswith("running_var") else 0.0)
            if d1 is not None:
                t = self.cols(t, d1, undo=False)
            out[name] = t
        return out


# --------------------------------------------------------------------------- helpers


def align_suspect(state_dict: Mapping[str, torch.Tensor], reference: Reference, *, live_only: bool = True
                  ) -> Alignment:
    """Match a suspect's channels to the owner's reference and bring its tensors into the reference's coordinates.

    The suspect is never trusted: only its tensors are read (use
    :func:`~hf_lottery_verify.suspect.read_suspect` for files and repos). Function-preserving
    structural edits — permuted channels, batch-norm- or ReLU-compensated rescaling,
    duplicated or dummy channels, kernels flipped or rotated all alike, deleted blocks — are
    undone in the returned state dict (rescaling only in the estimated scales: the state dict
    computes what the suspect computes). With ``live_only``, weights that cannot influence the
    suspect's output (:mod:`hf_lottery_verify.liveness`) are zeroed first and the reference's
    are left out (:attr:`Reference.live_only`), so a thief's writes there change nothing.
    The kernel orientation is tried by how well the stem matches, and the next one whenever
    the alignment's confidence stays below :data:`RETRY_BELOW`.

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): The suspect's tensors under timm's names
            (``timm_model.``/``module.`` prefixes are stripped); its shapes may be wider than
            the reference's.
        reference (`Reference`): The owner's reference (:func:`make_reference`,
            :func:`reference_from_key`).
        live_only (`bool`, *optional*, defaults to `True`): Compare only weights that can
            influence the output (`False` keeps every weight: restoring a locked ticket needs them).

    Returns:
        The :class:`Alignment`: the aligned state dict (loadable into the reference's
        architecture), per-space mappings, similarities and extra channels, scales, and an
        overall ``confidence`` (≈1 for a structurally edited copy, low for an unrelated model).

    Raises:
        KeyMismatchError: The suspect is not of the reference's architecture (missing or
            unexpected tensors, another depth, shapes that no widening explains).

    Example:
        >>> alignment = align_suspect(read_suspect("thief/model").state_dict, reference)  # doctest: +SKIP
        >>> alignment.confidence > 0.9, alignment.permuted                                # doctest: +SKIP
        (True, True)
    """
    from ..storage import canonicalize_state_dict

    t0 = time.perf_counter()
    tensors = {k: v.detach().cpu() for k, v in canonicalize_state_dict(state_dict).items()}
    tensors, missing = restore_blocks(reference, tensors)
    gone = dict.fromkeys(missing, "missing")
    if live_only:
        reference = reference.live_only
        try:
            dead = liveness(tensors, arch=reference.arch, model_args=reference.model_args)
        except (HfLotteryError, KeyError):  # not the architecture: the aligner says how
            dead = None
        if dead is not None:
            tensors = without_dead(tensors, dead)
            gone.update({b: "function-free" for b in dead.gone_blocks if b not in gone})
    result = None
    for transform in orientations(tensors, reference):
        tried = _Aligner(transform_kernels(tensors, inverse(transform)), reference).run()
        tried.transform = transform
        if result is None or tried.confidence > result.confidence:
            result = tried
        if result.confidence >= RETRY_BELOW:
            break
    assert result is not None
    gone.update({b: "matches nothing" for b in unmatched_blocks(result, below=UNMATCHED) if b not in gone})
    result.gone_blocks = {b: gone[b] for b in sorted(gone, key=_block_order)}
    result.seconds = time.perf_counter() - t0
    logger.info("Aligned suspect: %s", result.summary)
    return result


def _block_order(block: str) -> tuple[int, ...]:
    return tuple(int(p) for p in block.replace("layer", "").split("."))


