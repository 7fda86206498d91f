"""Recovering the accuracy lost to 2:4 pruning by training with the mask fixed (Chapter 7).

NVIDIA's recipe for 2:4 sparsity (Mishra et al. 2021) is: train dense, prune to 2:4 by magnitude, then fine-tune
with the mask fixed. Here the recipe runs on Chapter 2's digits MLP (:class:`pruning_lab.digits.DigitsMLP`),
trained by full-batch L-BFGS on a training split and evaluated on a held-out test split. Fine-tuning with a fixed
mask is L-BFGS on the subspace of kept weights: the gradient is masked, so every step, being a combination of
masked gradients, leaves the pruned weights at exactly zero.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .digits import DigitsMLP, load_digits_data
from .nm import check_nm_args, nm_mask

__all__ = ["split_digits", "nm_theta_mask", "finetune_masked", "recovery_experiment"]


def split_digits(n_test: int = 500, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(X_train, y_train, X_test, y_test)``: the standardised digits split once by a seeded permutation."""
    X, y = load_digits_data()
    if not 0 < n_test < len(y):
        raise ValueError(f"`n_test` must be in (0, {len(y)}); got {n_test!r}")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], y[tr], X[te], y[te]


def nm_theta_mask(model: DigitsMLP, theta: Tensor, n: int, m: int) -> Tensor:
    """``[d]`` keep-mask over ``theta``: every weight matrix N:M by magnitude along its input dimension (groups
    of M consecutive inputs of one output unit), biases kept (Chapter 7)."""
    keep = torch.ones_like(theta, dtype=torch.bool)
    for w, shape, _ in model.slices:
        check_nm_args(n, m, shape[1])
        keep[w] = nm_mask(theta[w].reshape(shape).abs(), n, m).reshape(-1)
    return keep


def finetune_masked(model: DigitsMLP, theta: Tensor, keep: Tensor, *, max_iter: int = 500) -> Tensor:
    """Full-batch L-BFGS from ``theta * keep`` with the gradient masked: the pruned entries stay exactly 0
    (Chapter 7). Returns a new ``theta``; the inputs are not modified."""
    if keep.shape != theta.shape or keep.dtype != torch.bool:
        raise ValueError(f"`keep` must be a boolean tensor of theta's shape {tuple(theta.shape)}")
    t = (theta.detach() * keep).requires_grad_(True)
    opt = torch.optim.LBFGS([t], lr=1.0, max_iter=max_iter, history_size=50, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=0.0)

    def closure() -> Tensor:
        opt.zero_grad()
        value = model.loss(t)
        value.backward()
        t.grad.mul_(keep)  # the step stays in the subspace of kept weights
        return value

    opt.step(closure)
    out = t.detach()
    assert bool((out[~keep] == 0).all()), "a pruned weight moved"
    return out


def _test_accuracy(model: DigitsMLP, theta: Tensor, X: Tensor, y: Tensor) -> float:
    return (model.logits(theta, X).argmax(1) == y).double().mean().item()


def recovery_experiment(seeds=(0, 1, 2, 3, 4), n: int = 2, m: int = 4, *, sizes=(64, 16, 10),
                        train_iter: int = 2000, finetune_iter: int = 500) -> dict[str, Tensor]:
    """Dense vs one-shot N:M vs N:M + fine-tuning with the mask, for each seed (Chapter 7).

    Each seed initialises and trains the MLP to its minimum on the training split, prunes every weight matrix
    to N:M by magnitude, and fine-tunes with the mask. Returns ``[len(seeds)]`` tensors: test accuracy and
    training objective for ``dense``, ``one_shot`` and ``finetuned`` (keys ``"<arm>_acc"``, ``"<arm>_loss"``).
    """
    X_tr, y_tr, X_te, y_te = split_digits()
    model = DigitsMLP(sizes=tuple(sizes), X=X_tr, y=y_tr)
    out: dict[str, list[float]] = {f"{a}_{k}": [] for a in ("dense", "one_shot", "finetuned") for k in ("acc", "loss")}
    for seed in seeds:
        theta = model.train(model.init(seed), max_iter=train_iter)
        keep = nm_theta_mask(model, theta, n, m)
        arms = {"dense": theta, "one_shot": theta * keep,
                "finetuned": finetune_masked(model, theta, keep, max_iter=finetune_iter)}
        for a, t in arms.items():
            out[f"{a}_acc"].append(_test_accuracy(model, t, X_te, y_te))
            out[f"{a}_loss"].append(model.loss(t).item())
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}
