"""The experiments of Chapter 2: how well do magnitude, OBD and the Taylor expansion predict the damage?

Chapter 2 trains :class:`~pruning_lab.digits.DigitsMLP` (a 64-16-10 MLP on scikit-learn's digits), computes
the exact gradient and Hessian of its training objective, and compares three predictions of the loss change
of zeroing each weight with the measured change:

* magnitude ``|w_i|`` (a ranking, not a loss change),
* Optimal Brain Damage ``1/2 H_ii w_i^2`` (LeCun et al. 1990),
* the second-order Taylor prediction with the gradient term ``-g_i w_i + 1/2 H_ii w_i^2``.

It then shows the three ways magnitude fails: correlated weights (:func:`coupled_pairs`,
:func:`set_growth`), scale differences between layers (:func:`prune_mask`, :func:`sparsity_sweep`,
:func:`relu_rescale`) and a non-zero gradient early in training (:func:`analyse_point` at an unconverged
checkpoint).

Everything is a pure function of its inputs (tensors in, new tensors out) and deterministic. Only the
weights of the weight matrices are ranked and pruned; biases are always kept, as is usual.

The computations run on ONE CPU thread (see :func:`single_thread`): the model is so small that threads
only add synchronisation, a second thread made L-BFGS training ten times slower on a busy two-core
machine, and one thread makes every result bitwise independent of the machine's core count.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validate import check_choice, check_sparsity
from .book import Table, figure_slider, png_bytes  # display helpers, re-exported for the chapter
from .digits import DigitsMLP
from .hessian import exact_gradient, exact_hessian, set_delta, zeroing_deltas
from .masks import mask_lowest
from .saliency import magnitude_saliency, obd_saliency, quadratic_delta, taylor_saliency

__all__ = [
    "CRITERIA",
    "single_thread",
    "PointAnalysis",
    "train_digits",
    "analyse_point",
    "spearman",
    "rank_correlations",
    "layer_stats",
    "prune_mask",
    "sparsity_sweep",
    "coupled_pairs",
    "set_growth",
    "relu_rescale",
    "rescaling_demo",
    "weight_name",
    "image_loss_changes",
    "trained_numbers",
    "rescaling_numbers",
    "early_numbers",
    "seed_numbers",
    "compare_seeds",
    "mean_range",
    "Table",
    "png_bytes",
    "figure_slider",
]

#: The pruning criteria of Chapter 2's sweeps: a global magnitude threshold, magnitude ranked within each
#: layer (every layer loses the same fraction), and a global OBD threshold.
CRITERIA = ("magnitude", "magnitude_per_layer", "obd")


# ------------------------------------------------------------------------------------------------ helpers
_F = TypeVar("_F", bound=Callable)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the enclosed torch code on one intra-op thread, then restore the previous setting (Chapter 2)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _one_thread(fn: _F) -> _F:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _check_theta(model: DigitsMLP, theta: Tensor) -> None:
    if not isinstance(model, DigitsMLP):
        raise ValueError(f"`model` must be a DigitsMLP; got {type(model).__name__}")
    if not isinstance(theta, Tensor) or theta.shape != (model.num_params,):
        shape = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        raise ValueError(f"`theta` must be a tensor of shape ({model.num_params},) for this model; got {shape}")


def _check_point(model: DigitsMLP, point) -> None:
    if not isinstance(point, PointAnalysis):
        raise ValueError(f"`point` must be a PointAnalysis (from analyse_point); got {type(point).__name__}")
    _check_theta(model, point.theta)


def _check_sparsities(sparsities) -> list[float]:
    try:
        values = [float(s) for s in sparsities]
    except TypeError as exc:
        raise ValueError(f"`sparsities` must be a list of numbers in [0, 1); got {sparsities!r}") from exc
    if not values:
        raise ValueError("`sparsities` must contain at least one value; got an empty list")
    for s in values:
        check_sparsity(s, "sparsities")
    return values


def _ranks(x: Tensor) -> Tensor:
    """Average ranks 0..n-1 of a 1-D tensor (ties share the mean of their ranks), as float64."""
    x = x.detach().to(torch.float64)
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    # rank k goes to the k-th smallest value; equal values share the mean of their ranks
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    group_sum = torch.zeros(counts.numel(), dtype=torch.float64).index_add_(
        0, inverse, torch.arange(x.numel(), dtype=torch.float64))
    mean_rank = group_sum / counts  # (groups,)
    ranks[order] = mean_rank[inverse]
    return ranks


def _set_deltas(loss_fn, theta: Tensor, prunes: Tensor, chunk_size: int = 64) -> Tensor:
    """Measured ``L(theta with set k zeroed) - L(theta)`` for each row ``k`` of ``prunes`` (``[k, d]`` bools).

    The same quantity as :func:`pruning_lab.hessian.set_delta`, evaluated for many sets in one batched call.
    """
    with torch.no_grad():
        base = loss_fn(theta)
        thetas = theta.unsqueeze(0).masked_fill(prunes, 0.0)  # (k, d)
        losses = torch.func.vmap(loss_fn, chunk_size=chunk_size)(thetas)  # (k,)
    return losses - base


# ------------------------------------------------------------------------------------------------ training
@_one_thread
def train_digits(seed: int = 0, *, max_iter: int = 2000, activation: str = "tanh") -> tuple[DigitsMLP, Tensor]:
    """The model of Chapter 2 and its trained parameters: ``(model, theta)``.

    A 64-16-10 :class:`~pruning_lab.digits.DigitsMLP` initialised with ``seed`` and trained by full-batch
    L-BFGS for at most ``max_iter`` iterations (2000 reaches a minimum, gradient norm ~1e-9; 5 gives an early,
    unconverged checkpoint). Deterministic.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer; got {seed!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"`max_iter` must be a positive integer; got {max_iter!r}")
    check_choice(activation, "activation", {"tanh", "relu"})
    model = DigitsMLP(activation=activation)
    return model, model.train(model.init(seed), max_iter=max_iter)


# ------------------------------------------------------------------------------------------------ one point
@dataclass(frozen=True)
class PointAnalysis:
    """What Chapter 2 measures at one parameter vector ``theta`` of a :class:`DigitsMLP`.

    Per-parameter fields have length ``d`` (all parameters); per-weight fields have length ``n``, one entry
    per weight-matrix entry (biases excluded), in the order of ``index``.
    """

    theta: Tensor      # [d] the parameters
    grad: Tensor       # [d] gradient of the training objective at theta
    hessian: Tensor    # [d, d] exact Hessian of the training objective at theta
    index: Tensor      # [n] position in theta of each weight (long)
    layer: Tensor      # [n] layer (0, 1, ...) of each weight (long)
    magnitude: Tensor  # [n] |w_i|
    obd: Tensor        # [n] 1/2 H_ii w_i^2 (OBD's formula; H_ii may be < 0 away from a minimum)
    taylor: Tensor     # [n] -g_i w_i + 1/2 H_ii w_i^2 (the full second-order prediction for one weight)
    actual: Tensor     # [n] measured L(theta with w_i = 0) - L(theta)
    loss: float        # training objective L(theta) = cross-entropy + lam/2 ||theta||^2
    data_loss: float   # mean cross-entropy alone
    accuracy: float    # training accuracy
    grad_norm: float   # ||grad L(theta)||_2

    @property
    def weight(self) -> Tensor:
        """``[n]`` the weights themselves (``theta[index]``)."""
        return self.theta[self.index]

    @property
    def hessian_diag(self) -> Tensor:
        """``[n]`` the Hessian diagonal ``H_ii`` of each weight."""
        return self.hessian.diagonal()[self.index]


@_one_thread
def analyse_point(model: DigitsMLP, theta: Tensor) -> PointAnalysis:
    """Gradient, exact Hessian, the three predictions and the measured loss change of zeroing each weight
    (Chapter 2). Costs about one Hessian (a few seconds for the 1,210 parameters of the 64-16-10 MLP).

    The loss is the model's training objective ``model.loss`` (cross-entropy plus the L2 penalty), the
    function whose minimum ``model.train`` finds. OBD's formula is evaluated even where ``H_ii < 0``
    (possible away from a minimum), so ``obd`` can then be negative.
    """
    _check_theta(model, theta)
    theta = theta.detach().clone()
    g = exact_gradient(model.loss, theta)       # (d,)
    H = exact_hessian(model.loss, theta)        # (d, d)
    index = torch.nonzero(model.is_weight).reshape(-1)  # (n,)
    w, gw, hw = theta[index], g[index], H.diagonal()[index]
    obd = obd_saliency(w, hw) if bool((hw >= 0).all()) else taylor_saliency(w, torch.zeros_like(w), hw)
    with torch.no_grad():
        loss, data_loss = float(model.loss(theta)), float(model.data_loss(theta))
    return PointAnalysis(
        theta=theta, grad=g, hessian=H, index=index, layer=model.layer_of[index].clone(),
        magnitude=magnitude_saliency(w), obd=obd, taylor=taylor_saliency(w, gw, hw),
        actual=zeroing_deltas(model.loss, theta, index),
        loss=loss, data_loss=data_loss, accuracy=model.accuracy(theta), grad_norm=float(g.norm()),
    )


# ------------------------------------------------------------------------------------------------ statistics
def spearman(x, y) -> float:
    """Spearman's rank correlation of two 1-D sequences of equal length (ties get average ranks) (Chapter 2).

    It is the Pearson correlation of the ranks: 1 when ``y`` is an increasing function of ``x``, whatever
    the scale. Chapter 2 uses it because magnitude is a ranking, not a prediction in units of loss.
    """
    xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if xt.dim() != 1 or yt.dim() != 1 or xt.numel() != yt.numel():
        raise ValueError(f"`x` and `y` must be 1-D of equal length; got shapes {tuple(xt.shape)} and {tuple(yt.shape)}")
    if xt.numel() < 2:
        raise ValueError(f"`x` must have at least 2 entries; got {xt.numel()}")
    if not (torch.isfinite(xt).all() and torch.isfinite(yt).all()):
        raise ValueError("`x` and `y` must be finite")
    rx, ry = _ranks(xt), _ranks(yt)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.norm() * ry.norm()).item()
    if denom == 0:
        raise ValueError("`x` or `y` is constant: the rank correlation is undefined")
    return float((rx @ ry).item() / denom)


def rank_correlations(point: PointAnalysis, where: Tensor | None = None) -> dict[str, float]:
    """Spearman correlation of each prediction with the measured loss change of zeroing each weight
    (Chapter 2): keys ``"magnitude"``, ``"obd"``, ``"taylor"``.

    ``where`` (optional ``[n]`` booleans) restricts the comparison to some weights, e.g. to leave out
    weights whose measured change is pure rounding noise.
    """
    if not isinstance(point, PointAnalysis):
        raise ValueError(f"`point` must be a PointAnalysis; got {type(point).__name__}")
    n = point.index.numel()
    if where is None:
        where = torch.ones(n, dtype=torch.bool)
    where = torch.as_tensor(where)
    if where.dtype != torch.bool or where.shape != (n,):
        raise ValueError(f"`where` must be a boolean mask of shape ({n},); got {where.dtype} {tuple(where.shape)}")
    return {name: spearman(getattr(point, name)[where], point.actual[where]) for name in ("magnitude", "obd", "taylor")}


def layer_stats(point: PointAnalysis) -> dict[str, Tensor]:
    """Per-layer means that explain why a global magnitude threshold is unfair (Chapter 2).

    Returns ``[num_layers]`` tensors: ``count`` (weights), ``mean_abs_w``, ``mean_h`` (mean ``H_ii``),
    ``mean_obd`` (mean ``1/2 H_ii w_i^2``).
    """
    if not isinstance(point, PointAnalysis):
        raise ValueError(f"`point` must be a PointAnalysis; got {type(point).__name__}")
    n_layers = int(point.layer.max()) + 1
    out = {k: torch.zeros(n_layers, dtype=torch.float64) for k in ("count", "mean_abs_w", "mean_h", "mean_obd")}
    for k in range(n_layers):
        sel = point.layer == k
        out["count"][k] = sel.sum()
        out["mean_abs_w"][k] = point.magnitude[sel].mean()
        out["mean_h"][k] = point.hessian_diag[sel].mean()
        out["mean_obd"][k] = point.obd[sel].mean()
    return out


# ------------------------------------------------------------------------------------------------ pruning
def prune_mask(point: PointAnalysis, sparsity: float, criterion: str) -> Tensor:
    """``[d]`` booleans, True for each parameter that ``criterion`` removes at ``sparsity`` (Chapter 2).

    ``sparsity`` is the fraction of *weights* removed (biases are never pruned). ``criterion`` is one of
    :data:`CRITERIA`: ``"magnitude"`` and ``"obd"`` rank all weights of all layers together (one global
    threshold); ``"magnitude_per_layer"`` removes the same fraction from every layer. Ties go to the lower
    index (see :func:`pruning_lab.masks.mask_lowest`).
    """
    if not isinstance(point, PointAnalysis):
        raise ValueError(f"`point` must be a PointAnalysis; got {type(point).__name__}")
    check_sparsity(sparsity)
    check_choice(criterion, "criterion", set(CRITERIA))
    pruned_w = torch.zeros(point.index.numel(), dtype=torch.bool)  # (n,)
    if criterion == "magnitude_per_layer":
        for k in torch.unique(point.layer).tolist():
            sel = torch.nonzero(point.layer == k).reshape(-1)
            pruned_w[sel] = ~mask_lowest(point.magnitude[sel], sparsity)
    else:
        scores = point.magnitude if criterion == "magnitude" else point.obd
        pruned_w = ~mask_lowest(scores, sparsity)
    prune = torch.zeros(point.theta.numel(), dtype=torch.bool)
    prune[point.index] = pruned_w
    return prune


@_one_thread
def sparsity_sweep(model: DigitsMLP, point: PointAnalysis, sparsities,
                   criteria=CRITERIA) -> dict[str, dict[str, Tensor]]:
    """Prune the trained model at each sparsity with each criterion, no retraining (Chapter 2).

    Returns ``{criterion: {"data_loss": [S], "accuracy": [S], "layer_fraction": [S, num_layers]}}`` where
    ``layer_fraction[s, k]`` is the fraction of layer ``k``'s weights removed at ``sparsities[s]``.
    """
    _check_point(model, point)
    values = _check_sparsities(sparsities)
    criteria = tuple(criteria)
    for c in criteria:
        check_choice(c, "criteria", set(CRITERIA))
    n_layers = int(point.layer.max()) + 1
    per_layer = torch.stack([(point.layer == k).sum() for k in range(n_layers)]).to(torch.float64)
    out: dict[str, dict[str, Tensor]] = {}
    for c in criteria:
        ce, acc, frac = [], [], []
        for s in values:
            prune = prune_mask(point, s, c)
            theta = point.theta.masked_fill(prune, 0.0)
            with torch.no_grad():
                ce.append(float(model.data_loss(theta)))
            acc.append(model.accuracy(theta))
            pruned_layer = model.layer_of[point.index][prune[point.index]]
            frac.append(torch.bincount(pruned_layer, minlength=n_layers).to(torch.float64) / per_layer)
        out[c] = {"data_loss": torch.tensor(ce, dtype=torch.float64),
                  "accuracy": torch.tensor(acc, dtype=torch.float64),
                  "layer_fraction": torch.stack(frac)}
    return out


# ------------------------------------------------------------------------------------------------ sets of weights
@_one_thread
def coupled_pairs(model: DigitsMLP, point: PointAnalysis, k: int = 10) -> dict[str, Tensor]:
    """The ``k`` most strongly coupled pairs of weights and the cost of removing each pair (Chapter 2).

    The coupling of weights ``i`` and ``j`` is the curvature correlation
    ``rho_ij = H_ij / sqrt(H_ii H_jj)`` (pairs ranked by ``|rho_ij|``; weights with ``H_ii <= 0`` are
    skipped). For each pair the result holds, as ``[k]`` tensors unless noted:
    ``pair`` ``[k, 2]`` (positions in ``theta``), ``rho``, ``obd_sum`` (``s_i + s_j``), ``quadratic``
    (``g.dw + 1/2 dw^T H dw``, with the cross term ``H_ij w_i w_j``) and ``actual`` (measured).
    """
    _check_point(model, point)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive integer; got {k!r}")
    idx = point.index
    Hw = point.hessian[idx][:, idx]  # (n, n) Hessian restricted to the weights
    h = Hw.diagonal()
    ok = h > 0
    scale = torch.where(ok, h, torch.ones_like(h)).sqrt()
    rho = Hw / scale[:, None] / scale[None, :]  # (n, n)
    valid = torch.triu(ok[:, None] & ok[None, :], diagonal=1)
    score = torch.where(valid, rho.abs(), torch.full_like(rho, -1.0))
    k = min(k, int(valid.sum()))
    top = torch.topk(score.reshape(-1), k).indices  # (k,) ties: topk order, deterministic on CPU
    a, b = top // rho.shape[1], top % rho.shape[1]
    pairs = torch.stack([idx[a], idx[b]], dim=1)  # (k, 2) positions in theta
    obd_sum, quad = [], []
    both = torch.ones(2, dtype=torch.bool)
    for (i, j), ai, bi in zip(pairs.tolist(), a.tolist(), b.tolist()):
        obd_sum.append(float(point.obd[ai] + point.obd[bi]))
        # the quadratic form only involves the pruned coordinates: evaluate it on the 2x2 block
        sub = [i, j]
        quad.append(float(quadratic_delta(point.theta[sub], point.grad[sub], point.hessian[sub][:, sub], both)))
    prunes = torch.zeros(k, point.theta.numel(), dtype=torch.bool)  # (k, d)
    prunes[torch.arange(k), pairs[:, 0]] = True
    prunes[torch.arange(k), pairs[:, 1]] = True
    actual = _set_deltas(model.loss, point.theta, prunes).tolist()
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return {"pair": pairs, "rho": rho[a, b].clone(), "obd_sum": f64(obd_sum), "quadratic": f64(quad),
            "actual": f64(actual)}


@_one_thread
def set_growth(model: DigitsMLP, point: PointAnalysis, sparsities, criterion: str = "obd") -> dict[str, Tensor]:
    """Predicted and measured cost of removing ever larger sets of weights at once (Chapter 2).

    At each sparsity the set is the one chosen by ``criterion`` (see :func:`prune_mask`). Returns ``[S]``
    tensors: ``obd_sum`` (sum of the single-weight OBD saliencies, no cross terms), ``quadratic``
    (``g.dw + 1/2 dw^T H dw``, all cross terms) and ``actual`` (measured loss change of the objective).
    """
    _check_point(model, point)
    values = _check_sparsities(sparsities)
    check_choice(criterion, "criterion", set(CRITERIA))
    obd_full = torch.zeros(point.theta.numel(), dtype=torch.float64)
    obd_full[point.index] = point.obd.to(torch.float64)
    obd_sum, quad, actual = [], [], []
    for s in values:
        prune = prune_mask(point, s, criterion)
        obd_sum.append(float(obd_full[prune].sum()))
        quad.append(float(quadratic_delta(point.theta, point.grad, point.hessian, prune)))
        actual.append(float(set_delta(model.loss, point.theta, prune)))
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return {"obd_sum": f64(obd_sum), "quadratic": f64(quad), "actual": f64(actual)}


# ------------------------------------------------------------------------------------------------ rescaling
def relu_rescale(model: DigitsMLP, theta: Tensor, alpha: float) -> Tensor:
    """Function-preserving rescaling of a one-hidden-layer ReLU MLP (Chapter 2); returns a new ``theta``.

    Layer-1 weights and biases are multiplied by ``alpha > 0`` and layer-2 weights by ``1 / alpha``. Since
    ``relu(alpha z) = alpha relu(z)``, the network computes exactly the same logits, yet every layer-1
    weight looks ``alpha`` times larger and every layer-2 weight ``alpha`` times smaller to magnitude pruning.
    """
    _check_theta(model, theta)
    if model.activation != "relu" or len(model.sizes) != 3:
        raise ValueError(f"`model` must be a one-hidden-layer ReLU DigitsMLP; got activation={model.activation!r}, "
                         f"sizes={model.sizes!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0 or alpha == float("inf"):
        raise ValueError(f"`alpha` must be a finite number > 0; got {alpha!r}")
    (w1, _, b1), (w2, _, _) = model.slices
    out = theta.detach().clone()
    out[w1] = out[w1] * alpha
    out[b1] = out[b1] * alpha
    out[w2] = out[w2] / alpha
    return out


@_one_thread
def rescaling_demo(alpha: float = 3.0, sparsity: float = 0.5, *, seed: int = 0,
                   max_iter: int = 300) -> dict[str, object]:
    """Magnitude pruning is not invariant to a rescaling that leaves the network's function unchanged;
    OBD is (Chapter 2).

    Trains a 64-16-10 ReLU MLP (``max_iter`` L-BFGS iterations; convergence is not needed here), rescales it
    with :func:`relu_rescale` and prunes both parameter vectors at ``sparsity`` with a global magnitude
    threshold and with global OBD. OBD uses the Hessian of the *data loss* (the cross-entropy), which the
    rescaling leaves unchanged as a function; the L2 penalty of the training objective is not invariant, so
    it is left out here.

    Returns ``max_logit_diff`` (largest change of any logit), ``mag_overlap`` / ``obd_overlap`` (fraction of
    the removed weights that both parameter vectors remove), ``obd_max_rel_diff`` (largest relative change
    of an OBD saliency), and for ``"original"`` and ``"rescaled"`` a dict with ``data_loss``, and for each of
    ``"magnitude"`` and ``"obd"``: ``layer_fraction`` (a list: fraction of each layer's weights removed) and
    ``accuracy`` after pruning.
    """
    check_sparsity(sparsity)
    if sparsity == 0:
        raise ValueError("`sparsity` must be > 0 for the demo to remove any weight; got 0")
    model, theta = train_digits(seed, max_iter=max_iter, activation="relu")
    rescaled = relu_rescale(model, theta, alpha)
    index = torch.nonzero(model.is_weight).reshape(-1)  # (n,)
    layer = model.layer_of[index]                        # (n,)

    def obd_of(t: Tensor) -> Tensor:
        h = exact_hessian(model.data_loss, t).diagonal()[index]
        return taylor_saliency(t[index], torch.zeros_like(h), h)  # 1/2 H_ii w_i^2 (H_ii of any sign)

    def summary(t: Tensor, pruned: dict[str, Tensor]) -> dict[str, object]:
        out: dict[str, object] = {"data_loss": float(model.data_loss(t))}
        for name, p in pruned.items():
            full = torch.zeros(t.numel(), dtype=torch.bool)
            full[index] = p
            out[name] = {
                "layer_fraction": [float(p[layer == k].double().mean()) for k in range(len(model.slices))],
                "accuracy": model.accuracy(t.masked_fill(full, 0.0)),
            }
        return out

    saliencies = {
        "original": {"magnitude": theta[index].abs(), "obd": obd_of(theta)},
        "rescaled": {"magnitude": rescaled[index].abs(), "obd": obd_of(rescaled)},
    }
    pruned = {key: {name: ~mask_lowest(s, sparsity) for name, s in d.items()} for key, d in saliencies.items()}
    n_pruned = int(pruned["original"]["magnitude"].sum())
    o1, o2 = saliencies["original"]["obd"], saliencies["rescaled"]["obd"]
    big = o1.abs() > 1e-12 * o1.abs().max()
    with torch.no_grad():
        result: dict[str, object] = {
            "max_logit_diff": float((model.logits(theta) - model.logits(rescaled)).abs().max()),
            "mag_overlap": float((pruned["original"]["magnitude"] & pruned["rescaled"]["magnitude"]).sum()) / n_pruned,
            "obd_overlap": float((pruned["original"]["obd"] & pruned["rescaled"]["obd"]).sum()) / n_pruned,
            "obd_max_rel_diff": float(((o1 - o2).abs()[big] / o1.abs()[big]).max()),
            "original": summary(theta, pruned["original"]),
            "rescaled": summary(rescaled, pruned["rescaled"]),
        }
    return result


# ------------------------------------------------------------------------------------------------ seeds
def image_loss_changes(model: DigitsMLP, theta: Tensor, prune: Tensor) -> Tensor:
    """``[N]`` change of each training image's cross-entropy when the parameters where ``prune`` is True are
    zeroed (Chapter 2). Their mean is the change of ``model.data_loss``; a few large entries mean that a few
    images, pushed across the decision boundary, carry the loss increase."""
    _check_theta(model, theta)
    prune = torch.as_tensor(prune)
    if prune.dtype != torch.bool or prune.shape != theta.shape:
        raise ValueError(f"`prune` must be a boolean mask of shape {tuple(theta.shape)}; got {prune.dtype} "
                         f"{tuple(prune.shape)}")
    with torch.no_grad():
        before = F.cross_entropy(model.logits(theta), model.y, reduction="none")  # (N,)
        after = F.cross_entropy(model.logits(theta.masked_fill(prune, 0.0)), model.y, reduction="none")
    return after - before


def _key(s: float) -> str:
    return f"{s:g}"


@_one_thread
def trained_numbers(model: DigitsMLP, point: PointAnalysis, *, growth_sparsities, sweep_sparsities,
                    where: Tensor | None = None, pairs_k: int = 300, top_images: int = 2) -> dict[str, float]:
    """Every number that Chapter 2 compares at a trained minimum, for one network (Chapter 2).

    Keys (``s`` written with ``:g``, e.g. ``"0.7"``): ``"spearman magnitude" / "obd" / "taylor"``
    (:func:`rank_correlations` over ``where``), ``"h ratio"`` (layer-1 mean ``H_ii`` / layer-2 mean),
    ``"pairs error sum"`` and ``"pairs error quadratic"`` (median relative errors of OBD's sum and of the
    quadratic prediction over the ``pairs_k`` most coupled pairs), for each ``s`` of ``growth_sparsities``
    (sets chosen by OBD, :func:`set_growth`): ``"growth ratio s"`` (actual / quadratic), ``"growth sum over
    quadratic s"``, ``"growth top images share s"`` (the share of the cross-entropy increase carried by the
    ``top_images`` images whose cross-entropy rises most, :func:`image_loss_changes`) and ``"growth ratio
    without top images s"`` (actual minus their contribution, over quadratic); and for each criterion
    ``c`` and each ``s`` of ``sweep_sparsities`` (:func:`sparsity_sweep`): ``"c accuracy s"``,
    ``"c layer 1 removed s"``, ``"c layer 2 removed s"``.
    """
    _check_point(model, point)
    growth_values, sweep_values = _check_sparsities(growth_sparsities), _check_sparsities(sweep_sparsities)
    if isinstance(top_images, bool) or not isinstance(top_images, int) or top_images < 1:
        raise ValueError(f"`top_images` must be a positive integer; got {top_images!r}")
    out = {f"spearman {k}": v for k, v in rank_correlations(point, where).items()}
    stats = layer_stats(point)
    out["h ratio"] = float(stats["mean_h"][0] / stats["mean_h"][1])
    pairs = coupled_pairs(model, point, k=pairs_k)
    out["pairs error sum"] = float((pairs["obd_sum"] / pairs["actual"] - 1).abs().median())
    out["pairs error quadratic"] = float((pairs["quadratic"] / pairs["actual"] - 1).abs().median())
    growth = set_growth(model, point, growth_values, criterion="obd")
    n_images = model.y.numel()
    for s, q, o, a in zip(growth_values, growth["quadratic"].tolist(), growth["obd_sum"].tolist(),
                          growth["actual"].tolist()):
        changes = image_loss_changes(model, point.theta, prune_mask(point, s, "obd"))  # (N,)
        top = float(torch.topk(changes, min(top_images, n_images)).values.sum())
        out[f"growth ratio {_key(s)}"] = a / q
        out[f"growth sum over quadratic {_key(s)}"] = o / q
        out[f"growth top images share {_key(s)}"] = top / float(changes.sum())
        out[f"growth ratio without top images {_key(s)}"] = (a - top / n_images) / q
    for c, res in sparsity_sweep(model, point, sweep_values).items():
        for i, s in enumerate(sweep_values):
            out[f"{c} accuracy {_key(s)}"] = float(res["accuracy"][i])
            for k in range(res["layer_fraction"].shape[1]):
                out[f"{c} layer {k + 1} removed {_key(s)}"] = float(res["layer_fraction"][i, k])
    return out


def rescaling_numbers(demo: dict) -> dict[str, float]:
    """The numbers Chapter 2 compares in :func:`rescaling_demo`'s result (Chapter 2): ``"rescale magnitude
    accuracy original" / "rescaled"``, ``"rescale magnitude layer 2 original" / "rescaled"`` (fraction of the
    output layer removed), ``"rescale magnitude overlap"`` and ``"rescale obd accuracy"``."""
    if not isinstance(demo, dict) or not {"original", "rescaled", "mag_overlap"} <= set(demo):
        raise ValueError("`demo` must be the result of rescaling_demo")
    out = {"rescale magnitude overlap": float(demo["mag_overlap"]),
           "rescale obd accuracy": float(demo["original"]["obd"]["accuracy"])}
    for version in ("original", "rescaled"):
        out[f"rescale magnitude accuracy {version}"] = float(demo[version]["magnitude"]["accuracy"])
        out[f"rescale magnitude layer 2 {version}"] = float(demo[version]["magnitude"]["layer_fraction"][1])
    return out


def early_numbers(early: PointAnalysis) -> dict[str, float]:
    """The numbers Chapter 2 compares at an early, unconverged checkpoint (Chapter 2): ``"early spearman
    magnitude" / "obd" / "taylor"`` (over all weights) and ``"early helpful fraction"`` (the fraction of
    weights whose removal lowers the loss)."""
    if not isinstance(early, PointAnalysis):
        raise ValueError(f"`early` must be a PointAnalysis; got {type(early).__name__}")
    out = {f"early spearman {k}": v for k, v in rank_correlations(early).items()}
    out["early helpful fraction"] = float((early.actual < 0).double().mean())
    return out


def seed_numbers(seed: int, *, growth_sparsities, sweep_sparsities, where: Tensor | None = None,
                 pairs_k: int = 300, max_iter: int = 2000, early_iter: int = 5, rescale_iter: int = 300,
                 alpha: float = 3.0, rescale_sparsity: float = 0.5) -> dict[str, float]:
    """Chapter 2's experiments repeated from another random initialisation ``seed`` (Chapter 2): train to the
    minimum and analyse (:func:`trained_numbers`), the early checkpoint after ``early_iter`` iterations
    (:func:`early_numbers`), and the rescaling demo (:func:`rescaling_numbers`). About 30 s on one thread."""
    model, theta = train_digits(seed, max_iter=max_iter)
    out = trained_numbers(model, analyse_point(model, theta), growth_sparsities=growth_sparsities,
                          sweep_sparsities=sweep_sparsities, where=where, pairs_k=pairs_k)
    out.update(early_numbers(analyse_point(*train_digits(seed, max_iter=early_iter))))
    out.update(rescaling_numbers(rescaling_demo(alpha, rescale_sparsity, seed=seed, max_iter=rescale_iter)))
    return out


def _floats(values, name: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except TypeError as exc:
        raise ValueError(f"`{name}` must be a sequence of numbers, one per seed; got {values!r}") from exc
    if not out or not all(torch.isfinite(torch.tensor(out))):
        raise ValueError(f"`{name}` must hold at least one finite number; got {values!r}")
    return out


def compare_seeds(a, b, rounding: float = 0.0) -> dict[str, object]:
    """Is quantity ``a`` lower than ``b``, higher, or not measurably different? (Chapters 2 and 3)

    ``a`` and ``b`` hold one value per training seed, in the same order (paired: both measured on the same
    network). With the differences ``d_s = b_s - a_s``, their mean ``m`` and their spread
    ``max_s |d_s - m|``, the verdict is ``"lower"`` (a < b) or ``"higher"`` when ``|m|`` exceeds both the
    spread and the rounding margin ``rounding * (|mean a| + |mean b|)``, else ``"no measurable difference"``.
    A resolved verdict therefore has the same sign on every seed.

    Returns ``mean_a``, ``mean_b``, ``diff`` (m), ``spread``, ``verdict`` and ``tol``: the relative tolerance
    ``max(spread / (|mean a| + |mean b|), rounding)`` (below 1) under which :meth:`Measured.order` on
    ``[mean_a, mean_b]`` holds exactly when the verdict is ``"lower"`` and :meth:`Measured.same` exactly when
    it is ``"no measurable difference"``.
    """
    a, b = _floats(a, "a"), _floats(b, "b")
    if len(a) != len(b):
        raise ValueError(f"`a` and `b` must have one value per seed each; got {len(a)} and {len(b)}")
    if not 0 <= rounding < 1:
        raise ValueError(f"`rounding` must be in [0, 1); got {rounding!r}")
    d = [y - x for x, y in zip(a, b)]
    m = sum(d) / len(d)
    spread = max(abs(x - m) for x in d)
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    scale = abs(mean_a) + abs(mean_b)
    tol = min(max(spread / scale if scale > 0 else 0.0, rounding), 0.999)
    resolved = abs(m) > max(spread, rounding * scale)
    verdict = ("lower" if m > 0 else "higher") if resolved else "no measurable difference"
    return {"mean_a": mean_a, "mean_b": mean_b, "diff": m, "spread": spread, "verdict": verdict,
            "tol": max(tol, 1e-12)}


def mean_range(values, fmt: str = ".3g") -> str:
    """``"mean (lowest–highest)"`` of one value per seed, each formatted with ``fmt`` (Chapters 2 and 3):
    how the book quotes a number next to its spread over training seeds."""
    v = _floats(values, "values")
    return f"{format(sum(v) / len(v), fmt)} ({format(min(v), fmt)}–{format(max(v), fmt)})"


# ------------------------------------------------------------------------------------------------ presentation
def weight_name(model: DigitsMLP, position: int) -> str:
    """A readable name for ``theta[position]`` of a one-hidden-layer :class:`DigitsMLP` (Chapter 2).

    First-layer weights read ``"unit 10 ← pixel (0, 2)"`` (hidden unit, then the pixel's (row, column) in
    the 8x8 image); second-layer weights ``"class 3 ← unit 5"``; biases ``"bias of unit 4"`` /
    ``"bias of class 7"``.
    """
    if not isinstance(model, DigitsMLP) or len(model.sizes) != 3 or model.sizes[0] != 64:
        raise ValueError("`model` must be a one-hidden-layer DigitsMLP on the 8x8 digits (sizes (64, h, 10))")
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < model.num_params:
        raise ValueError(f"`position` must be an integer in [0, {model.num_params}); got {position!r}")
    (w1, (h, d_in), b1), (w2, (c, _), b2) = model.slices
    if position < w1.stop:
        unit, pixel = divmod(position - w1.start, d_in)
        return f"unit {unit} ← pixel ({pixel // 8}, {pixel % 8})"
    if position < b1.stop:
        return f"bias of unit {position - b1.start}"
    if position < w2.stop:
        cls, unit = divmod(position - w2.start, h)
        return f"class {cls} ← unit {unit}"
    return f"bias of class {position - b2.start}"
