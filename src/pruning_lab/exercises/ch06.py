"""Checkers for Chapter 6 (the lottery ticket hypothesis: iterative magnitude pruning, reset and rewind).

Expected outputs come from :mod:`pruning_lab.lottery`, the implementation the chapter teaches. The mask
exercise passes the *trained* weight of a layer whose pruned entries are not zero (as in
``torch.nn.utils.prune``'s ``weight_orig``), so that an answer that ranks every weight, pruned or not, revives
weights and fails.
"""
from __future__ import annotations

import math

import torch

from .. import lottery as ref
from ._core import Case, Checker, register, seeded_generator as _gen, as_float as _as_float

# The checkers' worked example: one 2x5 layer after an earlier round pruned three of its ten weights.
INIT_EX = torch.tensor([[0.31, -0.22, 0.64, -0.05, 0.27], [-0.49, 0.12, 0.18, 0.55, -0.36]])  # theta_0
W_EX = torch.tensor([[0.42, -0.07, 0.91, -0.33, 0.15], [-0.58, 0.26, -0.04, 0.77, -0.19]])  # trained
MASK_EX = torch.tensor([[True, True, True, False, True], [True, True, False, True, False]])
PAPER_RATE, TARGET = 0.2, 0.03  # the prediction: rounds of 20% until at most 3% of the weights remain


def _mask(shape, n_pruned: int, g: torch.Generator) -> torch.Tensor:
    """A boolean mask of ``shape`` with ``n_pruned`` False entries at random positions."""
    flat = torch.ones(math.prod(shape), dtype=torch.bool)
    flat[torch.randperm(flat.numel(), generator=g)[:n_pruned]] = False
    return flat.reshape(shape)


def _same(got, other: torch.Tensor) -> bool:
    return (isinstance(got, torch.Tensor) and got.shape == other.shape and got.dtype == other.dtype
            and torch.allclose(got, other, rtol=1e-6, atol=1e-12))


# ----------------------------------------------------------------------------- 1. the per-round rate
def _rate_cases() -> list[Case]:
    names = ("final_remaining", "rounds")
    cases = [
        Case("the paper's schedule: 0.8**16 remain after 16 rounds", (0.8**16, 16),
             expected=ref.per_round_rate(0.8**16, 16), arg_names=names),
        Case("reach 2.8% in 16 rounds", (0.028, 16), expected=ref.per_round_rate(0.028, 16), arg_names=names),
        Case("reach 10% in 10 rounds", (0.1, 10), expected=ref.per_round_rate(0.1, 10), arg_names=names),
    ]
    g = _gen(1)
    for _ in range(3):
        f = round(float(torch.empty(1).uniform_(0.005, 0.5, generator=g)), 4)
        r = int(torch.randint(2, 31, (1,), generator=g))
        cases.append(Case(f"reach {100 * f:.4g}% in {r} rounds (seed 1)", (f, r), expected=ref.per_round_rate(f, r),
                          arg_names=names))
    cases.append(Case("one round: prune 1 - f at once", (0.25, 1), expected=ref.per_round_rate(0.25, 1),
                      arg_names=names))
    return cases


def _rate_hint(case: Case, got) -> str | None:
    f, r = case.args
    got = _as_float(got)
    if got is None:
        return None
    close = lambda v: math.isclose(got, v, rel_tol=1e-6, abs_tol=1e-12)  # noqa: E731
    if close(f ** (1 / r)):
        return ("that is the fraction KEPT per round, 1 - p = final_remaining**(1/rounds); the exercise asks for "
                "the fraction pruned, p = 1 - final_remaining**(1/rounds).")
    if close((1 - f) / r):
        return ("that prunes the same number, (1 - final)/rounds of the ORIGINAL weights, every round. IMP prunes "
                "a fraction of the REMAINING weights, so the kept fractions multiply: (1 - p)**rounds = final.")
    if close(1 - f**r):
        return "solve (1 - p)**rounds = final for p: take the rounds-th root of final (** (1/rounds)), not its power."
    if close(1 - f ** (1 / (r + 1))) or (r > 1 and close(1 - f ** (1 / (r - 1)))):
        return ("off by one in the number of rounds: after `rounds` rounds the kept fraction is (1 - p)**rounds "
                "(the dense network before the first round is not a round).")
    return None


register(Checker(
    name="ch06.per_round_rate", chapter=6, kind="function",
    summary="fraction p of the REMAINING weights pruned per round so that (1 - p)**rounds = final_remaining",
    make_cases=_rate_cases, hint=_rate_hint,
))


# ----------------------------------------------------------------------------- 2. prediction: rounds needed
def _rounds_cases() -> list[Case]:
    return [Case(f"prune {PAPER_RATE:.0%} of the remaining weights per round until at most {TARGET:.0%} remain",
                 expected=ref.rounds_for(TARGET, PAPER_RATE))]


def _rounds_hint(case: Case, got) -> str | None:
    k = case.expected
    got = _as_float(got)
    if got is None:
        return None
    kept = lambda n: f"{1 - PAPER_RATE:g}**{n} = {(1 - PAPER_RATE) ** n:.1%}"  # noqa: E731
    exact = math.log(TARGET) / math.log(1 - PAPER_RATE)
    if not got.is_integer() and math.isclose(got, exact, rel_tol=1e-2):
        return (f"ln {TARGET:g} / ln {1 - PAPER_RATE:g} = {exact:.2f} is not a whole number of rounds: round it UP "
                f"(after {math.floor(exact)} rounds {kept(math.floor(exact))} still remain).")
    if got == k - 1:
        return f"after {k - 1} rounds {kept(k - 1)} remain, still above {TARGET:.0%}: one more round is needed."
    if got == k + 1:
        return f"after {k} rounds {kept(k)} remain, already at most {TARGET:.0%}: one round too many."
    if got in (math.floor((1 - TARGET) / PAPER_RATE), math.ceil((1 - TARGET) / PAPER_RATE)):
        return (f"that is linear thinking, {PAPER_RATE:.0%} of the ORIGINAL weights per round. Each round prunes "
                f"{PAPER_RATE:.0%} of the REMAINING weights, so after k rounds {1 - PAPER_RATE:g}**k of them remain.")
    return None


register(Checker(
    name="ch06.rounds_needed", chapter=6, kind="value",
    summary=f"rounds of pruning {PAPER_RATE:.0%} of the remaining weights until at most {TARGET:.0%} remain",
    make_cases=_rounds_cases, hint=_rounds_hint,
))


# ----------------------------------------------------------------------------- 3. one IMP round on one layer
def _prune_cases() -> list[Case]:
    names = ("weight", "mask", "rate")

    def case(label, w, m, rate):
        return Case(label, (w, m, rate), expected=ref.prune_round({"w": w}, {"w": m}, rate)["w"], arg_names=names)

    cases = [
        case("worked example: 7 of 10 weights left, 20% (round(1.4) = 1)", W_EX, MASK_EX, 0.2),
        case("worked example at 50% (round(3.5) = 4)", W_EX, MASK_EX, 0.5),
    ]
    g = _gen(2)
    cases.append(case("first round: nothing pruned yet, 5x8 float32, 20%", torch.randn(5, 8, generator=g),
                      torch.ones(5, 8, dtype=torch.bool), 0.2))
    for label, shape, n_pruned, rate, dtype, seed in [
        ("6x10 float64, 43 left, 20% (round(8.6) = 9)", (6, 10), 17, 0.2, torch.float64, 3),
        ("8x16 float32, 82 left, 20%", (8, 16), 46, 0.2, torch.float32, 4),
        ("6x10 float64, 36 left, 50%", (6, 10), 24, 0.5, torch.float64, 5),
        ("conv 4x3x3x3 float32, 88 left, 20% (round(17.6) = 18)", (4, 3, 3, 3), 20, 0.2, torch.float32, 6),
    ]:
        g = _gen(seed)
        w = torch.randn(shape, generator=g, dtype=dtype)  # trained values everywhere, pruned entries included
        cases.append(case(f"random {label} (seed {seed})", w, _mask(shape, n_pruned, g), rate))
    return cases


def _prune_by(scores: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """``mask`` with its ``k`` lowest ``scores`` among the True entries set to False (ties: lower index)."""
    flat = mask.reshape(-1).clone()
    s = torch.where(flat, scores.reshape(-1).double(), torch.tensor(math.inf, dtype=torch.float64))
    flat[torch.argsort(s, stable=True)[:k]] = False
    return flat.reshape(mask.shape)


def _prune_hint(case: Case, got) -> str | None:
    w, m, rate = case.args
    if not isinstance(got, torch.Tensor) or got.shape != w.shape:
        return None
    if got.dtype != torch.bool:
        return ("return a boolean mask (True = kept): new_mask = mask.clone(), then set entries to False; "
                "a float or int 0/1 tensor is not torch.bool.")
    if torch.equal(got, ~case.expected):
        return "True must mean KEPT: you returned the pruned positions (invert the mask)."
    if (got & ~m).any():
        return ("pruned weights came back to life: a weight pruned in an earlier round stays pruned. At the pruned "
                "positions `weight` is not zero (like weight_orig in torch.nn.utils.prune), so rank only the "
                "surviving weights, those where mask is True.")
    n_alive, n_new = int(m.sum()), int((m & ~got).sum())
    k = round(rate * n_alive)
    if n_new != k:
        if n_new == round(rate * m.numel()) or n_new == int(rate * m.numel()):
            return (f"you pruned {n_new} = {rate:g} * numel; a round prunes a fraction of the REMAINING weights: "
                    f"round(rate * n_alive) = round({rate:g} * {n_alive}) = {k}, with n_alive = mask.sum().")
        if n_new == max(k - (m.numel() - n_alive), 0):
            return ("the already-pruned weights were counted among the k smallest (their zeros in weight * mask "
                    f"come first), so only {n_new} new weights were pruned instead of {k}: rank only where mask "
                    "is True.")
        if n_new in (math.floor(rate * n_alive), math.ceil(rate * n_alive)):
            return (f"{rate:g} * {n_alive} = {rate * n_alive:g}: the count is round(rate * n_alive) = {k} "
                    "(Python's round, as torch.nn.utils.prune), not int()/floor or ceil.")
        return f"you pruned {n_new} of the {n_alive} surviving weights; one round prunes round(rate * n_alive) = {k}."
    if torch.equal(got, _prune_by(w, m, k)):
        return "rank by the magnitude |w|, not the signed weight: a large negative weight is an important one."
    if torch.equal(got, _prune_by(-w.abs(), m, k)):
        return "you pruned the LARGEST magnitudes: magnitude pruning removes the smallest |w| and keeps the largest."
    return f"the right number ({k}), not the right weights: prune the {k} smallest |w| among those where mask is True."


register(Checker(
    name="ch06.imp_mask_update", chapter=6, kind="function",
    summary="one IMP round on one layer: prune round(rate * n_alive) of the smallest surviving |w|; new bool mask",
    make_cases=_prune_cases, hint=_prune_hint,
))


# ----------------------------------------------------------------------------- 4. the lottery-ticket reset
def _trained_from(init: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Stand-in for training: new values everywhere, correlated with the initialisation."""
    return init + 0.5 * torch.randn(init.shape, generator=g, dtype=init.dtype)


def _reset_cases() -> list[Case]:
    names = ("trained", "init", "mask")
    cases = [Case("worked example: the 2x5 layer, 3 weights pruned", (W_EX, INIT_EX, MASK_EX),
                  expected=ref.reset({"w": INIT_EX}, {"w": MASK_EX})["w"], arg_names=names)]
    for label, shape, n_pruned, dtype, seed in [
        ("6x10 float64, 60% pruned", (6, 10), 36, torch.float64, 7),
        ("8x16 float32, 80% pruned", (8, 16), 102, torch.float32, 8),
        ("conv 4x3x3x3 float32, 50% pruned", (4, 3, 3, 3), 54, torch.float32, 9),
    ]:
        g = _gen(seed)
        init = ref.glorot_normal(shape, g, dtype)
        trained, m = _trained_from(init, g), _mask(shape, n_pruned, g)
        cases.append(Case(f"random {label} (seed {seed})", (trained, init, m),
                          expected=ref.reset({"w": init}, {"w": m})["w"], arg_names=names))
    return cases


def _reset_hint(case: Case, got) -> str | None:
    trained, init, m = case.args
    if _same(got, trained * m):
        return ("that is the trained weights with the mask applied: no reset. Continuing from there is iterative "
                "pruning with fine-tuning, not a lottery ticket; the survivors go back to their INITIAL values.")
    if _same(got, init):
        return "the mask was dropped: that is the dense network at initialisation again; pruned entries must be 0."
    if _same(got, trained):
        return "these are the trained dense weights: neither reset to init nor masked."
    if _same(got, init * ~m) or _same(got, trained * ~m):
        return "the mask is inverted: True = kept, so the entries where mask is False become 0."
    if _same(got, torch.where(m, init, trained)):
        return "the survivors are right, but pruned entries must be exactly 0, not their trained values."
    if isinstance(got, torch.Tensor) and got.shape == init.shape and got.dtype != init.dtype:
        return "keep the dtype of `init`: init * mask with a boolean mask does (a .float() turns float64 into float32)."
    return None


register(Checker(
    name="ch06.reset", chapter=6, kind="function",
    summary="the lottery-ticket reset of one layer: init * mask (survivors at theta_0, pruned entries 0)",
    make_cases=_reset_cases, hint=_reset_hint,
))


# ----------------------------------------------------------------------------- 5. rewinding to iteration k
class _Checkpoints(dict):
    """Iteration -> weight of one layer, with a short repr for the grader's messages."""

    def __repr__(self) -> str:
        items = ", ".join(f"{k}: tensor{list(v.shape)}" for k, v in self.items())
        return "{" + items + "}"


def _checkpoints(init: torch.Tensor, iterations: tuple[int, ...], g: torch.Generator) -> _Checkpoints:
    """A dense run's checkpoints: theta_0 = ``init`` at 0, then a random walk away from it."""
    out, w, last = _Checkpoints(), init, 0
    for it in iterations:
        w = w + 0.05 * math.sqrt(it - last) * torch.randn(init.shape, generator=g, dtype=init.dtype)
        out[it], last = w, it
    return out


def _rewind_cases() -> list[Case]:
    names = ("checkpoints", "iteration", "mask")

    def case(label, ckpts, it, m):
        expected = ref.rewind({k: {"w": v} for k, v in ckpts.items()}, it, {"w": m})["w"]
        return Case(label, (ckpts, it, m), expected=expected, arg_names=names)

    g = _gen(10)
    ex = _checkpoints(INIT_EX, (0, 50, 100, 200, 1000), g)
    ex[1000] = W_EX  # the trained weights of the worked example
    cases = [case("worked example: checkpoints at 0, 50, 100, 200, 1000; rewind to 100", ex, 100, MASK_EX),
             case("worked example: rewind to 50", ex, 50, MASK_EX)]
    for label, shape, its, it, dtype, seed in [
        ("6x10 float64, saved at 0, 100, 500, 2000; rewind to 500", (6, 10), (0, 100, 500, 2000), 500,
         torch.float64, 11),
        ("conv 4x3x3x3 float32, saved at 0, 50, 100, 200, 1000; rewind to 200", (4, 3, 3, 3), (0, 50, 100, 200, 1000),
         200, torch.float32, 12),
        ("8x16 float32, rewind to 0 (that is the reset)", (8, 16), (0, 50, 100, 200, 1000), 0, torch.float32, 13),
    ]:
        g = _gen(seed)
        ckpts = _checkpoints(ref.glorot_normal(shape, g, dtype), its, g)
        cases.append(case(f"random {label} (seed {seed})", ckpts, it, _mask(shape, shape[0] * 3, g)))
    return cases


def _rewind_hint(case: Case, got) -> str | None:
    ckpts, it, m = case.args
    first, last = min(ckpts), max(ckpts)
    for k, w in ckpts.items():
        if k == it:
            continue
        if _same(got, w * m):
            if k == first:
                return (f"that is checkpoints[{first}] * mask, theta_0: the reset, not a rewind. Rewinding takes the "
                        f"survivors' values at iteration {it} of the dense run.")
            if k == last:
                return (f"that is checkpoints[{last}] * mask, the trained weights: no rewind at all. Look up the "
                        f"checkpoint of iteration {it}.")
            return (f"that is checkpoints[{k}] * mask, iteration {k}, not {it}: look the checkpoint up by its key, "
                    "checkpoints[iteration] (the keys are iterations, not positions).")
    if _same(got, ckpts[it]):
        return "the mask was not applied: the pruned entries must be exactly 0 (mask * checkpoints[iteration])."
    if _same(got, ckpts[it] * ~m):
        return "the mask is inverted: True = kept, so the entries where mask is False become 0."
    return None


register(Checker(
    name="ch06.rewind", chapter=6, kind="function",
    summary="rewinding one layer: mask * checkpoints[iteration], the survivors at iteration k of the dense run",
    make_cases=_rewind_cases, hint=_rewind_hint,
))
