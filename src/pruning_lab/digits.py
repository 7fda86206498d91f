"""A small MLP on scikit-learn's bundled digits, trained to convergence (Chapters 2, 3 and 6).

The data set (1,797 8x8 images of handwritten digits, Alpaydin & Kaynak 1998) ships with scikit-learn, so
everything here runs offline. The model is a multilayer perceptron written as a function of one flat
parameter vector ``theta``, laid out layer by layer as ``[W1 (row-major, [h1, d_in]), b1, W2, b2, ...]``
so that :mod:`pruning_lab.hessian` can compute its exact Hessian.

The training objective is the mean cross-entropy plus an L2 penalty ``(lam / 2) ||theta||^2``. The penalty
makes the minimum exist (the digits are separable, so without it the weights would grow for ever) and
lets full-batch L-BFGS drive the gradient to ~1e-9: a genuine minimum, where OBD's assumption ``g = 0`` holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validate import check_choice

__all__ = ["load_digits_data", "DigitsMLP"]


def load_digits_data(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """``(X, y)``: X is ``[1797, 64]`` standardised pixels (zero mean, unit variance per pixel where the
    pixel varies), y is ``[1797]`` labels 0..9 (Chapter 2)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    X = torch.as_tensor(data.data, dtype=dtype)
    std = X.std(dim=0)
    X = (X - X.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))
    y = torch.as_tensor(data.target, dtype=torch.long)
    return X, y


@dataclass
class DigitsMLP:
    """An MLP ``sizes[0] -> sizes[1] -> ... -> 10`` on the digits, as a function of a flat ``theta``.

    ``activation`` is ``"tanh"`` or ``"relu"``; ``lam`` the L2 penalty. Chapter 2 trains it to a minimum
    and compares the loss change of zeroing each weight with its predicted change.
    """

    sizes: tuple[int, ...] = (64, 16, 10)
    activation: str = "tanh"
    lam: float = 1e-3
    dtype: torch.dtype = torch.float64
    X: Tensor = field(default=None, repr=False)
    y: Tensor = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_choice(self.activation, "activation", {"tanh", "relu"})
        if len(self.sizes) < 2 or any((not isinstance(s, int)) or s < 1 for s in self.sizes):
            raise ValueError(f"`sizes` must be >= 2 positive integers; got {self.sizes!r}")
        if not self.lam >= 0:
            raise ValueError(f"`lam` must be >= 0; got {self.lam!r}")
        if self.X is None:
            self.X, self.y = load_digits_data(self.dtype)
        if self.X.shape[1] != self.sizes[0]:
            raise ValueError(f"`sizes[0]` must equal the input width {self.X.shape[1]}; got {self.sizes[0]}")

    # ----- layout of theta -------------------------------------------------------------------------
    @cached_property
    def slices(self) -> list[tuple[slice, tuple[int, int], slice]]:
        """For each layer: (slice of W in theta, W's shape [out, in], slice of b in theta)."""
        out, start = [], 0
        for d_in, d_out in zip(self.sizes[:-1], self.sizes[1:]):
            w = slice(start, start + d_out * d_in)
            b = slice(w.stop, w.stop + d_out)
            out.append((w, (d_out, d_in), b))
            start = b.stop
        return out

    @property
    def num_params(self) -> int:
        return self.slices[-1][2].stop

    @cached_property
    def is_weight(self) -> Tensor:
        """``[d]`` booleans: True for entries of weight matrices, False for biases."""
        m = torch.zeros(self.num_params, dtype=torch.bool)
        for w, _, _ in self.slices:
            m[w] = True
        return m

    @cached_property
    def layer_of(self) -> Tensor:
        """``[d]`` integers: the layer (0, 1, ...) that each entry of ``theta`` belongs to."""
        L = torch.empty(self.num_params, dtype=torch.long)
        for i, (w, _, b) in enumerate(self.slices):
            L[w.start : b.stop] = i
        return L

    # ----- the model ---------------------------------------------------------------------------------
    def init(self, seed: int = 0) -> Tensor:
        """Glorot-uniform weights and zero biases from a seeded generator; returns ``theta`` ``[d]``."""
        g = torch.Generator().manual_seed(seed)
        theta = torch.zeros(self.num_params, dtype=self.dtype)
        for w, (d_out, d_in), _ in self.slices:
            a = (6.0 / (d_in + d_out)) ** 0.5
            theta[w] = (torch.rand(d_out * d_in, generator=g, dtype=self.dtype) * 2 - 1) * a
        return theta

    def logits(self, theta: Tensor, X: Tensor | None = None) -> Tensor:
        """``[n, 10]`` logits of the MLP with parameters ``theta`` on inputs ``X`` (default: all digits)."""
        h = self.X if X is None else X
        act = torch.tanh if self.activation == "tanh" else F.relu
        for i, (w, shape, b) in enumerate(self.slices):
            h = h @ theta[w].reshape(shape).T + theta[b]  # (n, d_out)
            if i < len(self.slices) - 1:
                h = act(h)
        return h

    def data_loss(self, theta: Tensor) -> Tensor:
        """Mean cross-entropy over the 1,797 digits (no penalty)."""
        return F.cross_entropy(self.logits(theta), self.y)

    def loss(self, theta: Tensor) -> Tensor:
        """The training objective ``L(theta) = CE(theta) + lam/2 ||theta||^2`` (a 0-d tensor)."""
        return self.data_loss(theta) + 0.5 * self.lam * theta.square().sum()

    def accuracy(self, theta: Tensor) -> float:
        return (self.logits(theta).argmax(dim=1) == self.y).double().mean().item()

    def train(self, theta0: Tensor, *, max_iter: int = 2000, tol: float = 1e-10) -> Tensor:
        """Full-batch L-BFGS (strong Wolfe) from ``theta0``; returns a new ``theta``. Deterministic.

        ``max_iter`` counts L-BFGS iterations: a small value gives an early, unconverged checkpoint.
        """
        theta = theta0.detach().clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [theta], lr=1.0, max_iter=max_iter, history_size=50, line_search_fn="strong_wolfe",
            tolerance_grad=tol, tolerance_change=0.0,
        )

        def closure() -> Tensor:
            opt.zero_grad()
            value = self.loss(theta)
            value.backward()
            return value

        opt.step(closure)
        return theta.detach()
