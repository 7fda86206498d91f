"""Grader cases of Chapter 6: the solution of every checker and plausible wrong answers (with words the failure
message must contain). Collected by tests/test_graders.py."""
import math

import torch


# ---------------------------------------------------------------------------- Chapter 6 solutions
def prune_layer(weight, mask, rate, *, count=round, of_all=False, score=torch.abs, alive_only=True, absorb=False):
    """The solution (with switches that produce the mutants below)."""
    k = count(rate * (mask.numel() if of_all else int(mask.sum())))  # a fraction of the REMAINING weights
    s = score(weight * mask if absorb else weight).reshape(-1)
    if alive_only:
        s = torch.where(mask.reshape(-1), s, torch.full_like(s, math.inf))  # pruned weights stay pruned
    new = mask.reshape(-1).clone() if alive_only or absorb else torch.ones(mask.numel(), dtype=torch.bool)
    new[torch.argsort(s, stable=True)[:k]] = False  # a flat copy: the caller's mask is untouched
    return new.reshape(mask.shape)


SOLUTIONS = {
    "ch06.per_round_rate": lambda final_remaining, rounds: 1 - final_remaining ** (1 / rounds),
    "ch06.rounds_needed": math.ceil(math.log(0.03) / math.log(0.8)),
    "ch06.imp_mask_update": prune_layer,
    "ch06.reset": lambda trained, init, mask: init * mask,
    "ch06.rewind": lambda checkpoints, iteration, mask: checkpoints[iteration] * mask,
}


# ---------------------------------------------------------------------------- wrong answers
def _prune_in_place(weight, mask, rate):
    s = torch.where(mask, weight.abs(), torch.full_like(weight, math.inf)).reshape(-1)
    mask.view(-1)[torch.argsort(s, stable=True)[: round(rate * int(mask.sum()))]] = False
    return mask


def _rewind_in_place(checkpoints, iteration, mask):
    return checkpoints[iteration].mul_(mask)


def _previous_key(checkpoints, iteration, mask):
    return checkpoints[max(k for k in checkpoints if k < iteration)] * mask


MUTANTS = {
    "ch06.per_round_rate": [
        (lambda f, r: f ** (1 / r), "fraction KEPT"),
        (lambda f, r: (1 - f) / r, "REMAINING"),
        (lambda f, r: 1 - f**r, "rounds-th root"),
        (lambda f, r: 1 - f ** (1 / (r + 1)), "off by one"),
        (lambda f, r: 1 - f ** (1 / (r - 1)), "off by one"),
        (lambda f, r: f"{1 - f ** (1 / r):.3f}", "expected a number"),
    ],
    "ch06.rounds_needed": [
        (15, "still above 3%"),
        (5, "linear thinking"),
        (17, "one round too many"),
        (15.71, "round it UP"),
        (0.8**16, "expected an integer"),
        (lambda: 16, "function"),
    ],
    "ch06.imp_mask_update": [
        (lambda w, m, r: prune_layer(w, m, r, of_all=True), "REMAINING weights"),
        (lambda w, m, r: prune_layer(w, m, r, of_all=True, alive_only=False), "came back to life"),
        (lambda w, m, r: prune_layer(w, m, r, alive_only=False), "came back to life"),
        (lambda w, m, r: prune_layer(w, m, r, score=lambda x: x), "not the signed weight"),
        (lambda w, m, r: prune_layer(w, m, r, score=lambda x: -x.abs()), "LARGEST"),
        (lambda w, m, r: prune_layer(w, m, r).float(), "boolean mask"),
        (lambda w, m, r: prune_layer(w, m, r).int(), "wrong dtype"),
        (_prune_in_place, "modified its input `mask`"),
        (lambda w, m, r: prune_layer(w, m, r, count=int), "not int()/floor"),
        (lambda w, m, r: prune_layer(w, m, r, alive_only=False, absorb=True) & m, "already-pruned"),
        (lambda w, m, r: ~prune_layer(w, m, r), "KEPT"),
    ],
    "ch06.reset": [
        (lambda trained, init, mask: trained * mask, "no reset"),
        (lambda trained, init, mask: init.clone(), "mask was dropped"),
        (lambda trained, init, mask: init * ~mask, "inverted"),
        (lambda trained, init, mask: torch.where(mask, init, trained), "exactly 0"),
        (lambda trained, init, mask: trained.clone(), "neither reset"),
        (lambda trained, init, mask: (init * mask).float(), "dtype of `init`"),
        (lambda trained, init, mask: init.mul_(mask), "modified its input `init`"),
    ],
    "ch06.rewind": [
        (lambda checkpoints, iteration, mask: checkpoints[0] * mask, "the reset, not a rewind"),
        (lambda checkpoints, iteration, mask: checkpoints[max(checkpoints)] * mask, "no rewind at all"),
        (lambda checkpoints, iteration, mask: checkpoints[iteration].clone(), "mask was not applied"),
        (_previous_key, "checkpoints[50] * mask, iteration 50, not 100"),
        (lambda checkpoints, iteration, mask: list(checkpoints.values())[iteration] * mask, "IndexError"),
        (lambda checkpoints, iteration, mask: checkpoints[iteration] * ~mask, "inverted"),
        (_rewind_in_place, "modified its input `checkpoints`"),
    ],
}
