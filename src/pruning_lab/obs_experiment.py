"""The experiment of Chapter 3: does letting the other weights compensate (OBS) beat choosing well (OBD)?

Chapter 3 takes the model of Chapter 2 (:func:`pruning_lab.obd_experiment.train_digits`: a 64-16-10 tanh MLP on
scikit-learn's digits, trained by L-BFGS to a minimum of cross-entropy plus an L2 penalty), computes the exact
Hessian ``H`` of that training objective and its inverse once (:func:`prepare`), and prunes the trained
weights to a range of sparsities with four methods (:data:`METHODS`, :func:`prune_sweep`):

* ``"magnitude"``: zero the weights of least ``|w_i|`` (one global threshold);
* ``"obd"``: zero the weights of least ``1/2 H_ii w_i^2`` (Optimal Brain Damage, LeCun et al. 1990);
* ``"obs_no_update"``: zero the weights of least OBS saliency ``w_i^2 / (2 [H^-1]_ii)``, but do not move the
  others (isolates the effect of the better *choice*);
* ``"obs"``: sequential Optimal Brain Surgeon (Hassibi & Stork 1993): remove the weight of least saliency,
  move every remaining parameter by the OBS update, downdate ``H^-1``, repeat
  (:func:`pruning_lab.obs.sequential_obs`).

Only entries of the weight matrices are removed; biases are never removed, but OBS moves them too (they are
parameters with rows in ``H``). :func:`cost_scaling` times each method on random problems of growing size,
to compare with the ``O()`` costs. Deterministic and on one CPU thread, like Chapter 2's experiment.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from ._validate import check_choice, check_sparsity
from .digits import DigitsMLP
from .hessian import exact_gradient, exact_hessian
from .masks import mask_lowest, num_pruned
from .obd_experiment import single_thread
from .obs import best_set, sequential_obs

__all__ = ["METHODS", "METHOD_LABELS", "HessianSetup", "prepare", "zeroing_scores", "prune_sweep", "cost_scaling",
           "greedy_vs_best"]

#: The four pruning methods of Chapter 3, in the order the chapter plots them.
METHODS = ("magnitude", "obd", "obs_no_update", "obs")
#: Readable names for plots and tables.
METHOD_LABELS = {
    "magnitude": "magnitude",
    "obd": "OBD",
    "obs_no_update": "OBS choice, no update",
    "obs": "OBS with the update",
}

_F = TypeVar("_F", bound=Callable)


def _one_thread(fn: _F) -> _F:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class HessianSetup:
    """Everything Chapter 3 computes once at the trained parameters ``theta`` (``d`` parameters, of which
    ``n`` are weights, at positions ``index``).

    ``seconds`` holds the measured wall times of ``"hessian"`` (the exact Hessian with :mod:`torch.func`) and
    ``"inverse"`` (its Cholesky inverse).
    """

    theta: Tensor        # [d]
    grad: Tensor         # [d] gradient of the training objective at theta (about 0 at a minimum)
    hessian: Tensor      # [d, d] exact Hessian of the training objective
    hessian_inv: Tensor  # [d, d] its inverse
    index: Tensor        # [n] positions in theta of the weights (long)
    loss: float          # training objective at theta
    data_loss: float     # cross-entropy at theta
    accuracy: float      # training accuracy at theta
    grad_norm: float
    min_eig: float       # smallest eigenvalue of the Hessian (> 0: a strict minimum)
    seconds: dict

    @property
    def prunable(self) -> Tensor:
        """``[d]`` booleans: True at the weights (the candidates for removal), False at the biases."""
        p = torch.zeros(self.theta.numel(), dtype=torch.bool)
        p[self.index] = True
        return p


def _check_model_theta(model: DigitsMLP, theta) -> None:
    if not isinstance(model, DigitsMLP):
        raise ValueError(f"`model` must be a DigitsMLP; got {type(model).__name__}")
    if not isinstance(theta, Tensor) or theta.shape != (model.num_params,):
        shape = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        raise ValueError(f"`theta` must be a tensor of shape ({model.num_params},) for this model; got {shape}")


def _check_setup(model: DigitsMLP, setup) -> None:
    if not isinstance(setup, HessianSetup):
        raise ValueError(f"`setup` must be a HessianSetup (from prepare); got {type(setup).__name__}")
    _check_model_theta(model, setup.theta)


@_one_thread
def prepare(model: DigitsMLP, theta: Tensor) -> HessianSetup:
    """Exact gradient, Hessian and inverse Hessian of ``model.loss`` at ``theta``, with timings (Chapter 3).

    ``theta`` must be a strict minimum: if the Hessian is not positive definite (training stopped too early),
    OBS's inverse does not exist and a ``ValueError`` says so.
    """
    _check_model_theta(model, theta)
    theta = theta.detach().clone()
    t0 = time.perf_counter()
    H = exact_hessian(model.loss, theta)  # (d, d)
    t1 = time.perf_counter()
    L, info = torch.linalg.cholesky_ex(H)
    if info != 0:
        raise ValueError("`theta` is not a strict minimum of the training objective (its Hessian is not positive "
                         "definite), so H^-1 does not exist: train to convergence first")
    Hinv = torch.cholesky_inverse(L)  # (d, d)
    t2 = time.perf_counter()
    g = exact_gradient(model.loss, theta)
    with torch.no_grad():
        loss, data_loss = float(model.loss(theta)), float(model.data_loss(theta))
    return HessianSetup(
        theta=theta, grad=g, hessian=H, hessian_inv=0.5 * (Hinv + Hinv.T),
        index=torch.nonzero(model.is_weight).reshape(-1), loss=loss, data_loss=data_loss,
        accuracy=model.accuracy(theta), grad_norm=float(g.norm()),
        min_eig=float(torch.linalg.eigvalsh(H)[0]), seconds={"hessian": t1 - t0, "inverse": t2 - t1},
    )


def zeroing_scores(setup: HessianSetup, method: str) -> Tensor:
    """``[n]`` scores of the weights for a method that only zeroes (Chapter 3): ``"magnitude"`` ``|w_i|``,
    ``"obd"`` ``1/2 H_ii w_i^2``, ``"obs_no_update"`` ``w_i^2 / (2 [H^-1]_ii)``. The lowest are removed."""
    if not isinstance(setup, HessianSetup):
        raise ValueError(f"`setup` must be a HessianSetup (from prepare); got {type(setup).__name__}")
    check_choice(method, "method", {"magnitude", "obd", "obs_no_update"})
    w = setup.theta[setup.index]
    if method == "magnitude":
        return w.abs()
    if method == "obd":
        return 0.5 * setup.hessian.diagonal()[setup.index] * w.square()
    return w.square() / (2 * setup.hessian_inv.diagonal()[setup.index])


@_one_thread
def prune_sweep(model: DigitsMLP, setup: HessianSetup, sparsities, methods=METHODS) -> dict[str, dict]:
    """Prune the trained weights to each sparsity with each method, without retraining (Chapter 3).

    ``sparsities``: fractions of the ``n`` weights removed (``int(n * s)`` weights; biases are kept). Returns
    ``{method: {...}}`` with ``[S]`` tensors ``"loss"`` (training objective), ``"data_loss"``
    (cross-entropy), ``"accuracy"``, ``"predicted"`` (the quadratic model's loss increase
    ``g.dw + 1/2 dw^T H dw`` of the step ``dw`` from ``theta`` to the pruned parameters), ``"theta"``
    (``[S, d]`` the pruned parameters), and ``"seconds"``: the wall time to choose the weights (and, for
    ``"obs"``, to compute every update and downdate) for all sparsities, excluding the Hessian and its
    inverse (``setup.seconds``) and the evaluation.
    """
    _check_setup(model, setup)
    try:
        values = [check_sparsity(float(s), "sparsities") for s in sparsities]
    except TypeError as exc:
        raise ValueError(f"`sparsities` must be a list of numbers in [0, 1); got {sparsities!r}") from exc
    if not values or values != sorted(values):
        raise ValueError(f"`sparsities` must be a non-empty increasing list; got {values!r}")
    methods = tuple(methods)
    for m in methods:
        check_choice(m, "methods", set(METHODS))
    n = setup.index.numel()
    counts = [num_pruned(n, s) for s in values]
    out: dict[str, dict] = {}
    for m in methods:
        t0 = time.perf_counter()
        if m == "obs":
            res = sequential_obs(setup.theta, setup.hessian_inv, counts[-1], prunable=setup.prunable,
                                 snapshots=counts) if counts[-1] > 0 else None
            thetas = [res.snapshots[c] if res is not None else setup.theta.clone() for c in counts]
        else:
            scores = zeroing_scores(setup, m)
            thetas = []
            for s in values:
                prune = torch.zeros_like(setup.theta, dtype=torch.bool)
                prune[setup.index] = ~mask_lowest(scores, s)
                thetas.append(setup.theta.masked_fill(prune, 0.0))
        seconds = time.perf_counter() - t0
        theta_s = torch.stack(thetas)  # (S, d)
        with torch.no_grad():
            loss = torch.func.vmap(model.loss)(theta_s)
            data_loss = torch.func.vmap(model.data_loss)(theta_s)
        dw = theta_s - setup.theta  # (S, d)
        predicted = dw @ setup.grad + 0.5 * ((dw @ setup.hessian) * dw).sum(dim=1)
        out[m] = {"loss": loss, "data_loss": data_loss,
                  "accuracy": torch.tensor([model.accuracy(t) for t in thetas], dtype=torch.float64),
                  "predicted": predicted, "theta": theta_s, "seconds": seconds}
    return out


@_one_thread
def cost_scaling(sizes, sparsity: float = 0.5, *, seed: int = 0) -> dict[str, Tensor]:
    """Measured seconds of each method on random problems with ``d`` weights, for each ``d`` in ``sizes``
    (Chapter 3).

    For each size: a random positive-definite ``H`` (``[d, d]``) and weights ``w``. Times, to remove
    ``int(d * sparsity)`` weights: ``"magnitude"`` (sort ``|w|``), ``"obd"`` (read ``diag H``, sort),
    ``"inverse"`` (Cholesky inverse of ``H``, ``O(d^3)``), ``"obs_no_update"`` (inverse + saliencies + sort) and
    ``"obs"`` (inverse + sequential OBS, ``O(d^3) + O(k d^2)``). Building ``H`` itself is not timed (it is
    model-specific). Steps faster than 0.05 s are timed best-of-5. Returns ``{"size": [len(sizes)],
    method: [len(sizes)] seconds}``.
    """
    try:
        ds = [int(d) for d in sizes]
    except TypeError as exc:
        raise ValueError(f"`sizes` must be a list of integers >= 2; got {sizes!r}") from exc
    if not ds or any(d < 2 for d in ds):
        raise ValueError(f"`sizes` must be a non-empty list of integers >= 2; got {sizes!r}")
    check_sparsity(sparsity)
    keys = ("magnitude", "obd", "inverse", "obs_no_update", "obs")
    out = {key: [] for key in keys}
    for i, d in enumerate(ds):
        g = torch.Generator().manual_seed(seed + i)
        A = torch.randn(d, d, generator=g, dtype=torch.float64)
        H = A @ A.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
        w = torch.randn(d, generator=g, dtype=torch.float64)
        k = max(1, num_pruned(d, sparsity))

        def timed(fn) -> float:
            best = float("inf")
            for _ in range(5):  # fast steps are timed best-of-5; slow ones (> 0.05 s) once
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
                if best > 0.05:
                    break
            return best

        def inverse() -> Tensor:
            return torch.cholesky_inverse(torch.linalg.cholesky(H))

        out["magnitude"].append(timed(lambda: mask_lowest(w.abs(), sparsity)))
        out["obd"].append(timed(lambda: mask_lowest(0.5 * H.diagonal() * w.square(), sparsity)))
        out["inverse"].append(timed(inverse))
        out["obs_no_update"].append(timed(lambda: mask_lowest(w.square() / (2 * inverse().diagonal()), sparsity)))
        out["obs"].append(timed(lambda: sequential_obs(w, inverse(), k)))
    result = {key: torch.tensor(v, dtype=torch.float64) for key, v in out.items()}
    result["size"] = torch.tensor(ds)
    return result


@_one_thread
def greedy_vs_best(num_problems: int = 200, d: int = 8, k: int = 4, *, seed: int = 0) -> dict[str, Tensor]:
    """How often is greedy sequential OBS beaten by the best set? (Chapter 3)

    For ``num_problems`` random quadratic problems (weights ``w ~ N(0, I)`` and ``H = A A^T / d + 0.1 I`` with a
    Gaussian ``A``, seeds ``seed, seed + 1, ...``), removes ``k`` of ``d`` weights greedily
    (:func:`pruning_lab.obs.sequential_obs`) and by exhaustive search (:func:`pruning_lab.obs.best_set`).
    Returns ``[num_problems]`` tensors ``"greedy"`` and ``"best"`` (the two exact costs) and ``"same_set"``
    (booleans: greedy found the best set).
    """
    for name, v, lo in (("num_problems", num_problems, 1), ("d", d, 2), ("k", k, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"`{name}` must be an integer >= {lo}; got {v!r}")
    if k >= d:
        raise ValueError(f"`k` must be smaller than d={d}; got {k}")
    greedy, best, same = [], [], []
    for i in range(num_problems):
        g = torch.Generator().manual_seed(seed + i)
        A = torch.randn(d, d, generator=g, dtype=torch.float64)
        H = A @ A.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
        w = torch.randn(d, generator=g, dtype=torch.float64)
        P = torch.linalg.inv(H)
        P = 0.5 * (P + P.T)
        res = sequential_obs(w, P, k)
        S, cost = best_set(w, P, k)
        greedy.append(res.total_cost)
        best.append(cost)
        same.append(tuple(sorted(res.removed)) == S)
    return {"greedy": torch.tensor(greedy, dtype=torch.float64), "best": torch.tensor(best, dtype=torch.float64),
            "same_set": torch.tensor(same)}
