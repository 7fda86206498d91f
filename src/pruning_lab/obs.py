"""Optimal Brain Surgeon: remove weights and let the others compensate (Chapter 3; Hassibi & Stork 1993).

At a minimum ``w`` of a loss whose Hessian is ``H`` (``[d, d]``, positive definite), the loss change of a step
``dw`` is, to second order, ``1/2 dw^T H dw`` (:func:`step_cost`). Removing weight ``q`` means the step must
satisfy ``dw_q = -w_q``; Optimal Brain Surgeon chooses the OTHER entries of ``dw`` to make the loss change as
small as possible. A Lagrange multiplier gives, with ``P = H^-1`` (``hessian_inv`` below):

    dw  = -(w_q / P_qq) P[:, q]               (:func:`obs_update`: every weight moves, w_q lands on 0)
    dL_q = w_q^2 / (2 P_qq)                   (:func:`obs_saliency`: the predicted loss increase)

Removing a SET ``S`` of weights at once (``P_SS``: the rows and columns of ``P`` in ``S``):

    dw  = -P[:, S] (P_SS)^-1 w_S              (:func:`obs_set_update`)
    dL_S = 1/2 w_S^T (P_SS)^-1 w_S            (:func:`obs_set_cost`)

Removing weights one at a time (sequential OBS) needs, after each removal, the inverse Hessian of the
remaining weights; it is obtained from ``P`` by a rank-one *downdate* (:func:`inverse_downdate`):
``P <- P - P[:, q] P[q, :] / P_qq``. :func:`sequential_obs` removes weights in a given order or greedily
(least saliency first); :func:`set_costs` and :func:`best_set` search all subsets exhaustively, which shows
that the greedy choice is not always the best set.

Everything works on flat vectors (``weight``: ``[d]``) and returns new tensors; inputs are never modified.
Indices are 0-based (``q = 0`` is the first weight).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._validate import as_tensor

__all__ = [
    "step_cost",
    "obs_saliency",
    "obs_update",
    "inverse_downdate",
    "obs_set_cost",
    "obs_set_update",
    "OBSResult",
    "sequential_obs",
    "set_costs",
    "best_set",
]

MAX_SUBSETS = 200_000  # exhaustive search is for small teaching problems only


# ------------------------------------------------------------------------------------------------ checks
def _weight(weight, name: str = "weight") -> Tensor:
    w = as_tensor(weight, name)
    if w.dim() != 1:
        raise ValueError(f"`{name}` must be a flat vector [d]; got shape {tuple(w.shape)}")
    return w


def _square(matrix, name: str, d: int | None, dtype: torch.dtype | None = None) -> Tensor:
    P = as_tensor(matrix, name, dtype=dtype)
    if P.dim() != 2 or P.shape[0] != P.shape[1] or (d is not None and P.shape[0] != d):
        want = f"({d}, {d}) to match `weight`" if d is not None else "[d, d] (square)"
        raise ValueError(f"`{name}` must have shape {want}; got {tuple(P.shape)}")
    return P


def _hessian_inv(hessian_inv, d: int | None, dtype: torch.dtype) -> Tensor:
    """``hessian_inv`` as a checked ``[d, d]`` tensor with a diagonal >= 0.

    The inverse of a positive-definite H has a positive diagonal; a zero ``[H^-1]_qq`` marks a coordinate
    already removed by :func:`inverse_downdate`.
    """
    P = _square(hessian_inv, "hessian_inv", d, dtype)
    diag = P.diagonal()
    if (diag < 0).any():
        q = int(torch.nonzero(diag < 0)[0, 0])
        raise ValueError(
            "`hessian_inv` must be the inverse of a positive-definite Hessian, so every diagonal entry "
            f"[H^-1]_qq must be > 0 (or 0 for a coordinate already removed); got {diag[q].item():.3g} at q={q}"
        )
    return P


def _pivot(P: Tensor, q: int) -> Tensor:
    if not P[q, q] > 0:
        raise ValueError(f"`hessian_inv` must have a positive diagonal entry at q={q} (0 means that weight was "
                         f"already removed by a downdate); got {P[q, q].item():.3g}")
    return P[q, q]


def _index(q, d: int) -> int:
    if isinstance(q, Tensor) and q.numel() == 1 and not q.is_floating_point() and q.dtype != torch.bool:
        q = int(q)
    if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q < d:
        raise ValueError(f"`q` must be an integer index in [0, {d}) (0-based); got {q!r}")
    return q


def _prune_mask(prune, d: int) -> Tensor:
    p = torch.as_tensor(prune)
    if p.dtype != torch.bool or p.shape != (d,):
        raise ValueError(f"`prune` must be a boolean mask of shape ({d},) (True = removed); "
                         f"got {p.dtype} {tuple(p.shape)}")
    return p


# ------------------------------------------------------------------------------------------------ one weight
def step_cost(hessian, step) -> Tensor:
    """``1/2 dw^T H dw``: the loss change of the step ``dw`` (``[d]``) at a minimum with Hessian ``H``
    (``[d, d]``) (Chapter 3). Exact when the loss is quadratic; a 0-d tensor."""
    dw = _weight(step, "step")
    H = _square(hessian, "hessian", dw.numel(), dw.dtype)
    return 0.5 * dw @ H @ dw


def obs_saliency(weight, hessian_inv) -> Tensor:
    """OBS saliency ``L_q = w_q^2 / (2 [H^-1]_qq)`` for every ``q`` (Chapter 3; Hassibi & Stork 1993).

    ``weight``: ``[d]``; ``hessian_inv``: ``[d, d]``, the inverse Hessian at the minimum. ``L_q`` is the loss
    increase of removing ``w_q`` when the other weights are then moved optimally (:func:`obs_update`); it is
    never larger than OBD's ``1/2 H_qq w_q^2`` and equals it when ``H`` is diagonal. Returns ``[d]``;
    ``inf`` where ``[H^-1]_qq = 0`` (a weight already removed by :func:`inverse_downdate`).
    """
    w = _weight(weight)
    P = _hessian_inv(hessian_inv, w.numel(), w.dtype)
    diag = P.diagonal()
    removed = diag == 0  # coordinates already removed by a downdate cannot be removed again
    return torch.where(removed, torch.full_like(w, float("inf")), w.square() / (2 * diag.masked_fill(removed, 1.0)))


def obs_update(weight, hessian_inv, q: int) -> Tensor:
    """The OBS step for removing weight ``q``: ``dw = -(w_q / [H^-1]_qq) H^-1[:, q]`` (Chapter 3).

    ``weight``: ``[d]``; ``hessian_inv``: ``[d, d]``; ``q``: 0-based index. Returns ``dw`` (``[d]``), the change
    to add to ``weight``: it minimises ``1/2 dw^T H dw`` subject to ``dw_q = -w_q`` (set exactly, so
    ``weight + dw`` has an exact zero at ``q``). The other entries move along the valley of the loss.
    """
    w = _weight(weight)
    d = w.numel()
    P = _hessian_inv(hessian_inv, d, w.dtype)
    q = _index(q, d)
    dw = -(w[q] / _pivot(P, q)) * P[:, q] + 0.0  # (d,); "+ 0.0" turns -0.0 into 0.0
    dw[q] = -w[q]
    return dw


def inverse_downdate(hessian_inv, q: int) -> Tensor:
    """Remove coordinate ``q`` from an inverse Hessian: ``P - P[:, q] P[q, :] / P_qq`` (Chapter 3).

    ``hessian_inv`` (``P``): ``[d, d]``, symmetric with ``P_qq > 0``. The result (``[d, d]``, row and column
    ``q`` set exactly to zero) restricted to the other coordinates is the inverse of ``H`` with row and
    column ``q`` deleted: the inverse Hessian of the remaining weights once ``w_q`` is fixed at zero. This is
    one step of Gaussian elimination (a Schur complement); it costs ``O(d^2)`` instead of a new ``O(d^3)``
    inversion.
    """
    P = _square(hessian_inv, "hessian_inv", None)
    d = P.shape[0]
    q = _index(q, d)
    _pivot(P, q)
    col = P[:, q].clone()  # (d,)
    out = P - torch.outer(col, P[q, :]) / P[q, q]
    out[q, :] = 0.0
    out[:, q] = 0.0
    return out


# ------------------------------------------------------------------------------------------------ a set of weights
def obs_set_cost(weight, hessian_inv, prune) -> Tensor:
    """Exact quadratic cost of removing the set ``S`` (``prune``) with the optimal compensating step (Chapter 3):
    ``dL_S = 1/2 w_S^T ([H^-1]_SS)^-1 w_S``.

    ``prune``: ``[d]`` booleans, True for the weights in ``S``. For one weight this is :func:`obs_saliency`.
    It is not the sum of the single saliencies: removing one weight changes the cost of the others. An empty
    set costs 0. Returns a 0-d tensor.
    """
    w = _weight(weight)
    d = w.numel()
    P = _hessian_inv(hessian_inv, d, w.dtype)
    S = torch.nonzero(_prune_mask(prune, d)).reshape(-1)  # (k,)
    if S.numel() == 0:
        return torch.zeros((), dtype=w.dtype)
    w_S = w[S]
    return 0.5 * w_S @ torch.linalg.solve(P[S][:, S], w_S)


def obs_set_update(weight, hessian_inv, prune) -> Tensor:
    """The OBS step that removes the whole set ``S`` at once: ``dw = -H^-1[:, S] ([H^-1]_SS)^-1 w_S``
    (Chapter 3). Returns ``dw`` (``[d]``) with ``dw_S = -w_S`` exactly. Sequential OBS over ``S``, in any
    order and with the downdate, ends at the same weights."""
    w = _weight(weight)
    d = w.numel()
    P = _hessian_inv(hessian_inv, d, w.dtype)
    p = _prune_mask(prune, d)
    S = torch.nonzero(p).reshape(-1)
    dw = torch.zeros_like(w)
    if S.numel() == 0:
        return dw
    lam = torch.linalg.solve(P[S][:, S], w[S])  # (k,) the Lagrange multipliers
    dw = -(P[:, S] @ lam) + 0.0  # (d,); "+ 0.0" turns -0.0 into 0.0
    dw[S] = -w[S]
    return dw


# ------------------------------------------------------------------------------------------------ sequential OBS
@dataclass(frozen=True)
class OBSResult:
    """What :func:`sequential_obs` returns (Chapter 3).

    ``weight`` ``[d]``: the weights after all removals (exact zeros at ``removed``); ``removed``: the removed
    indices in order; ``costs`` ``[k]``: the predicted loss increase of each step, ``w_q^2 / (2 P_qq)`` with
    the current ``w`` and ``P``; ``hessian_inv`` ``[d, d]``: the downdated inverse after the last step;
    ``snapshots``: ``{number removed: weight [d]}`` for the requested counts.
    """

    weight: Tensor
    removed: list[int]
    costs: Tensor
    hessian_inv: Tensor
    snapshots: dict[int, Tensor] = field(default_factory=dict)

    @property
    def total_cost(self) -> float:
        """Sum of the step costs: the predicted loss increase of the whole removal."""
        return float(self.costs.sum())


def _check_order(order, d: int) -> list[int]:
    try:
        out = [int(q) for q in order]
        bad = [q for q in order if isinstance(q, bool) or float(q) != int(q)]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`order` must be a list of distinct indices in [0, {d}); got {order!r}") from exc
    if bad or any(not 0 <= q < d for q in out) or len(set(out)) != len(out) or not out:
        raise ValueError(f"`order` must be a non-empty list of distinct indices in [0, {d}); got {list(order)!r}")
    return out


def sequential_obs(weight, hessian_inv, k: int | None = None, *, order: Sequence[int] | None = None,
                   prunable=None, downdate: bool = True, snapshots: Iterable[int] = ()) -> OBSResult:
    """Sequential OBS: remove weights one at a time, each with its OBS update, downdating ``H^-1`` in between
    (Chapter 3).

    Give exactly one of ``k`` (greedy: ``k`` times, remove the weight of least saliency under the current
    ``w`` and ``H^-1``; ties to the lowest index; only where ``prunable`` (``[d]`` booleans, default all) is
    True) or ``order`` (remove these indices in this order, e.g. "largest first"). ``snapshots``: counts
    ``0..k`` at which to record a copy of the weights.

    ``downdate=False`` reproduces a common mistake: the ORIGINAL ``H^-1`` is used at every step (weights
    already removed are held at zero). Its ``costs`` are then not the true costs.

    Cost: ``O(d^2)`` per removal (the downdate), so ``O(k d^2)`` after the ``O(d^3)`` inversion of ``H``.
    """
    w0 = _weight(weight)
    d = w0.numel()
    P0 = _hessian_inv(hessian_inv, d, w0.dtype)
    if (k is None) == (order is None):
        raise ValueError("give exactly one of `k` (greedy) and `order` (a fixed order of removal)")
    if prunable is None:
        allowed = torch.ones(d, dtype=torch.bool, device=w0.device)
    else:
        allowed = torch.as_tensor(prunable)
        if allowed.dtype != torch.bool or allowed.shape != (d,):
            raise ValueError(f"`prunable` must be a boolean mask of shape ({d},); got {allowed.dtype} "
                             f"{tuple(allowed.shape)}")
    if order is not None:
        fixed = _check_order(order, d)
        if not bool(allowed[fixed].all()):
            raise ValueError(f"`order` must list only indices where `prunable` is True; got {fixed}")
        n_steps = len(fixed)
    else:
        fixed = None
        n_avail = int(allowed.sum())
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_avail:
            raise ValueError(f"`k` must be an integer in [1, {n_avail}] (the number of prunable weights); got {k!r}")
        n_steps = k
    wanted = sorted({int(s) for s in snapshots})
    if any(not 0 <= s <= n_steps for s in wanted):
        raise ValueError(f"`snapshots` must be counts in [0, {n_steps}]; got {wanted}")

    w = w0.detach().clone()
    P = P0.detach().clone()  # updated in place below: a private copy
    alive = allowed.clone()
    removed: list[int] = []
    costs = torch.zeros(n_steps, dtype=w.dtype)
    shots = {0: w.clone()} if 0 in wanted else {}
    inf = torch.tensor(float("inf"), dtype=w.dtype)
    for step in range(n_steps):
        if fixed is not None:
            q = fixed[step]
        else:
            diag = P.diagonal()
            safe = torch.where(alive, diag, torch.ones_like(diag))  # removed coordinates have P_qq = 0
            saliency = torch.where(alive, w.square() / (2 * safe), inf)  # (d,)
            q = int(torch.argmin(saliency))  # first minimum: ties go to the lowest index
        Pqq = _pivot(P, q)
        costs[step] = w[q].square() / (2 * Pqq)
        col = P[:, q].clone()  # (d,)
        w = w - (w[q] / Pqq) * col  # the OBS update
        w[q] = 0.0
        if downdate:
            P.addr_(col, col, alpha=-1.0 / Pqq.item())  # P <- P - P[:,q] P[q,:] / P_qq (P symmetric)
            P[q, :] = 0.0
            P[:, q] = 0.0
        else:
            w[removed] = 0.0  # the mistake: removed weights were "done"; hold them at zero
        alive[q] = False
        removed.append(q)
        if step + 1 in wanted:
            shots[step + 1] = w.clone()
    return OBSResult(weight=w, removed=removed, costs=costs, hessian_inv=P, snapshots=shots)


# ------------------------------------------------------------------------------------------------ exhaustive search
def set_costs(weight, hessian_inv, k: int, *, prunable=None) -> list[tuple[tuple[int, ...], float]]:
    """Every set of ``k`` weights with its exact OBS cost ``1/2 w_S^T ([H^-1]_SS)^-1 w_S``, cheapest first
    (Chapter 3). Ties keep the lexicographic order of the sets.

    Only for small problems: at most ``MAX_SUBSETS`` subsets (``C(n, k)``, ``n`` prunable weights).
    """
    w = _weight(weight)
    d = w.numel()
    P = _hessian_inv(hessian_inv, d, w.dtype)
    if prunable is None:
        cand = list(range(d))
    else:
        p = torch.as_tensor(prunable)
        if p.dtype != torch.bool or p.shape != (d,):
            raise ValueError(f"`prunable` must be a boolean mask of shape ({d},); got {p.dtype} {tuple(p.shape)}")
        cand = torch.nonzero(p).reshape(-1).tolist()
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(cand):
        raise ValueError(f"`k` must be an integer in [1, {len(cand)}]; got {k!r}")
    n_sets = math.comb(len(cand), k)
    if n_sets > MAX_SUBSETS:
        raise ValueError(f"`k`={k} of {len(cand)} weights gives {n_sets:,} subsets; exhaustive search is limited "
                         f"to {MAX_SUBSETS:,} subsets")
    out = []
    for S in itertools.combinations(cand, k):
        idx = list(S)
        w_S = w[idx]
        out.append((tuple(S), float(0.5 * w_S @ torch.linalg.solve(P[idx][:, idx], w_S))))
    out.sort(key=lambda item: item[1])  # stable: equal costs keep lexicographic order
    return out


def best_set(weight, hessian_inv, k: int, *, prunable=None) -> tuple[tuple[int, ...], float]:
    """The set of ``k`` weights whose removal (with the OBS update) costs least, and its cost, by exhaustive
    search (Chapter 3). See :func:`set_costs`."""
    return set_costs(weight, hessian_inv, k, prunable=prunable)[0]
