"""The lottery ticket hypothesis: iterative magnitude pruning (IMP) and its controls (Chapter 6).

Frankle & Carbin (ICLR 2019) train a network from its initialisation theta_0, prune a fraction of the smallest
surviving weights of each layer, reset the survivors to theta_0 and repeat. The hypothesis: a dense network
contains a subnetwork (a mask m) that, trained in isolation from ``m * theta_0``, reaches the accuracy of the
dense network in at most as many steps. Frankle et al. (ICML 2020) rewind to an early iterate theta_k instead.

Everything here works on *weight dictionaries*: layer name -> weight tensor (``[out, in]`` for a linear layer,
``[out, in, kh, kw]`` for a convolution), and mask dictionaries with the same names and shapes (``True`` =
kept). :func:`prunable_weights` reads them from any ``nn.Module`` built of ``nn.Linear`` / ``nn.Conv2d``.
All functions return new tensors and leave their inputs alone, except :func:`load_weights` (whose job is to
write into a model) and :func:`train_masked` with ``inplace=True``.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from ._validate import all_finite, check_choice

__all__ = [
    "per_round_rate", "rounds_for", "kept_counts", "prune_round", "remaining_fraction", "full_masks", "apply_masks", "reset",
    "rewind", "random_mask", "magnitude_mask_like", "glorot_normal", "random_reinit", "prunable_weights",
    "load_weights", "train_masked",
]

Weights = Mapping[str, Tensor]
Masks = Mapping[str, Tensor]


# ----------------------------------------------------------------------------------------- schedules
def per_round_rate(final_remaining: float, rounds: int) -> float:
    """The fraction p of the *remaining* weights to prune in each of ``rounds`` rounds so that
    ``(1 - p) ** rounds = final_remaining``: ``p = 1 - final_remaining ** (1 / rounds)`` (Chapter 6)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"`rounds` must be an integer >= 1; got {rounds!r}")
    if isinstance(final_remaining, bool) or not isinstance(final_remaining, (int, float)) \
            or not 0.0 < final_remaining <= 1.0:
        raise ValueError(f"`final_remaining` must be a fraction in (0, 1]; got {final_remaining!r}")
    return 1.0 - float(final_remaining) ** (1.0 / rounds)


def rounds_for(final_remaining: float, rate: float) -> int:
    """The fewest rounds of pruning ``rate`` of the remaining weights that leave at most ``final_remaining``
    of them: the smallest k with ``(1 - rate) ** k <= final_remaining`` (Chapter 6)."""
    _check_rate_value(rate, "rate")
    if not 0.0 < final_remaining <= 1.0:
        raise ValueError(f"`final_remaining` must be a fraction in (0, 1]; got {final_remaining!r}")
    if final_remaining == 1.0:
        return 0
    if rate == 0.0:
        raise ValueError("`rate` must be > 0 to reach `final_remaining` < 1")
    k = math.ceil(math.log(final_remaining) / math.log(1.0 - rate) - 1e-12)
    return max(k, 0)


def kept_counts(numels: Mapping[str, int], rates: Mapping[str, float], rounds: int) -> list[dict[str, int]]:
    """Weights kept per layer after 0, 1, ..., ``rounds`` rounds of :func:`prune_round` (``scope="layer"``):
    each round removes ``round(rate * kept)`` of a layer's ``kept`` weights. ``numels``: layer -> weight count
    (Chapter 6)."""
    if set(rates) != set(numels):
        raise ValueError(f"`rates` must have one entry per layer {sorted(numels)}; got {sorted(rates)}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"`rounds` must be an integer >= 0; got {rounds!r}")
    out = [dict(numels)]
    for _ in range(rounds):
        prev = out[-1]
        out.append({k: prev[k] - round(_check_rate_value(rates[k], f"rates[{k!r}]") * prev[k]) for k in prev})
    return out


# ----------------------------------------------------------------------------------------- checks
def _check_rate_value(rate, name: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or math.isnan(float(rate)) \
            or not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"`{name}` must be a fraction in [0, 1) of the remaining weights; got {rate!r}")
    return float(rate)


def _check_weights(weights: Weights, name: str = "weights") -> dict[str, Tensor]:
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"`{name}` must be a non-empty dict of layer name -> tensor; got {type(weights).__name__}")
    out = {}
    for key, w in weights.items():
        if not isinstance(w, Tensor) or not w.is_floating_point():
            raise ValueError(f"`{name}[{key!r}]` must be a floating-point tensor; got {type(w).__name__}")
        if not all_finite(w):
            raise ValueError(f"`{name}[{key!r}]` contains NaN or inf")
        out[key] = w.detach()
    return out


def _check_masks(masks: Masks, weights: Weights, name: str = "masks") -> dict[str, Tensor]:
    """Masks must have exactly the weights' names and shapes and hold only 0/1 (or bools); returns bools."""
    if not isinstance(masks, Mapping):
        raise ValueError(f"`{name}` must be a dict of layer name -> boolean tensor; got {type(masks).__name__}")
    if set(masks) != set(weights):
        raise ValueError(f"`{name}` must have the same layer names as the weights {sorted(weights)}; "
                         f"got {sorted(masks)}")
    out = {}
    for key, w in weights.items():
        m = masks[key]
        if not isinstance(m, Tensor) or m.shape != w.shape:
            shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise ValueError(f"`{name}[{key!r}]` must have the weight's shape {tuple(w.shape)}; got {shape}")
        if m.dtype != torch.bool:
            if not bool(((m == 0) | (m == 1)).all()):
                raise ValueError(f"`{name}[{key!r}]` must hold only 0/1 or True/False")
            m = m != 0
        out[key] = m
    return out


def _check_rates(rate, weights: Weights, scope: str) -> dict[str, float]:
    if isinstance(rate, Mapping):
        if scope == "global":
            raise ValueError("`rate` must be one number with scope='global' (one threshold for all layers); "
                             "got a dict")
        if set(rate) != set(weights):
            raise ValueError(f"`rate` must have one entry per layer {sorted(weights)}; got {sorted(rate)}")
        return {k: _check_rate_value(rate[k], f"rate[{k!r}]") for k in weights}
    r = _check_rate_value(rate, "rate")
    return {k: r for k in weights}


# ----------------------------------------------------------------------------------------- one IMP round
def _lowest_alive(scores: Tensor, alive: Tensor, k: int) -> Tensor:
    """Flat indices of the ``k`` smallest ``scores`` among the ``alive`` entries (1-D tensors); ties go to the
    lower index (a stable sort), so the result is deterministic."""
    idx = alive.nonzero().squeeze(1)  # (n_alive,)
    order = torch.argsort(scores[idx], stable=True)
    return idx[order[:k]]


def prune_round(weights: Weights, masks: Masks, rate, *, scope: str = "layer") -> dict[str, Tensor]:
    """One round of iterative magnitude pruning; returns new boolean masks (Chapter 6).

    ``scope="layer"``: in each layer prune ``round(rate * n_alive)`` of its ``n_alive`` still-unpruned weights,
    those of smallest ``|w|`` (the paper's rule; ``rate`` may be a per-layer dict, e.g. 0.2 for hidden layers and
    0.1 for the output layer). ``scope="global"``: pool the unpruned weights of all layers and prune
    ``round(rate * total_alive)`` of them by one magnitude threshold (as ``facebookresearch/open_lth`` does).
    The counts are those of ``torch.nn.utils.prune.l1_unstructured`` / ``global_unstructured`` called with
    ``amount=rate`` on the same masks; ties are broken towards the lower index (layers in dict order). A pruned
    weight is never revived. A round that would remove every remaining weight of a layer raises ``ValueError``.
    """
    check_choice(scope, "scope", {"layer", "global"})
    weights = _check_weights(weights)
    masks = _check_masks(masks, weights)
    rates = _check_rates(rate, weights, scope)
    new = {k: m.clone() for k, m in masks.items()}
    if scope == "layer":
        for key, w in weights.items():
            alive = masks[key].reshape(-1)
            n_alive = int(alive.sum())
            k = round(rates[key] * n_alive)  # Python's round, as torch.nn.utils.prune
            _check_not_emptied(key, n_alive, k)
            new[key].view(-1)[_lowest_alive(w.abs().reshape(-1), alive, k)] = False
        return new
    keys = list(weights)
    scores = torch.cat([weights[k].abs().reshape(-1).double() for k in keys])  # (total,)
    alive = torch.cat([masks[k].reshape(-1) for k in keys])
    pruned = _lowest_alive(scores, alive, round(rates[keys[0]] * int(alive.sum())))
    flat = alive.clone()
    flat[pruned] = False
    start = 0
    for key in keys:
        n = weights[key].numel()
        new[key] = flat[start:start + n].reshape(weights[key].shape)
        _check_not_emptied(key, int(masks[key].sum()), int(masks[key].sum() - new[key].sum()), scope="global")
        start += n
    return new


def _check_not_emptied(key: str, n_alive: int, k: int, scope: str = "layer") -> None:
    if n_alive > 0 and k >= n_alive:
        fix = "lower `rate` or use scope='layer'" if scope == "global" else "lower `rate` for this layer"
        raise ValueError(f"`rate` would prune all {n_alive} remaining weights of layer {key!r}; {fix}")


# ----------------------------------------------------------------------------------------- masks and resets
def full_masks(weights: Weights) -> dict[str, Tensor]:
    """All-True masks (nothing pruned yet) for every layer of ``weights`` (Chapter 6)."""
    return {k: torch.ones_like(w, dtype=torch.bool) for k, w in _check_weights(weights).items()}


def remaining_fraction(masks: Masks) -> float:
    """The fraction of weights kept, over all layers together (Chapter 6)."""
    if not isinstance(masks, Mapping) or not masks:
        raise ValueError("`masks` must be a non-empty dict of layer name -> boolean tensor")
    kept = sum(int((m != 0).sum()) for m in masks.values())
    return kept / sum(m.numel() for m in masks.values())


def apply_masks(weights: Weights, masks: Masks) -> dict[str, Tensor]:
    """``m * w`` for every layer: new tensors with the pruned weights exactly zero (Chapter 6)."""
    weights = _check_weights(weights)
    masks = _check_masks(masks, weights)
    return {k: w * masks[k] for k, w in weights.items()}


def reset(init: Weights, masks: Masks) -> dict[str, Tensor]:
    """The lottery-ticket reset: the survivors take their values at initialisation, ``m * theta_0``; the
    mask is kept (Chapter 6). ``init`` holds theta_0's weights, which must have been saved before training."""
    return apply_masks(init, masks)


def rewind(checkpoints: Mapping[int, Weights], iteration: int, masks: Masks) -> dict[str, Tensor]:
    """Rewinding (Frankle et al. 2020): ``m * theta_k``, the survivors at training iteration ``k`` =
    ``iteration`` of the dense run, looked up in ``checkpoints`` (iteration -> weights) (Chapter 6).
    ``iteration=0`` is the reset to theta_0."""
    if not isinstance(checkpoints, Mapping) or iteration not in checkpoints:
        saved = sorted(checkpoints) if isinstance(checkpoints, Mapping) else []
        raise ValueError(f"`iteration` must be one of the saved iterations {saved}; got {iteration!r}")
    return apply_masks(checkpoints[iteration], masks)


def random_mask(masks: Masks, *, seed: int = 0) -> dict[str, Tensor]:
    """A random mask with the same number of kept weights in every layer as ``masks`` (the random-mask
    control of Chapter 6): the positions are drawn uniformly, layer by layer, from a seeded generator."""
    if not isinstance(masks, Mapping) or not masks:
        raise ValueError("`masks` must be a non-empty dict of layer name -> boolean tensor")
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, m in masks.items():
        kept = int((m != 0).sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=g)[:kept]] = True
        out[key] = flat.reshape(m.shape)
    return out


def magnitude_mask_like(weights: Weights, masks: Masks) -> dict[str, Tensor]:
    """One-shot magnitude pruning to the same per-layer counts as ``masks``: in each layer keep the
    ``masks[layer].sum()`` weights of largest ``|w|`` (ties: the lower index is pruned first) (Chapter 6)."""
    weights = _check_weights(weights)
    masks = _check_masks(masks, weights)
    out = {}
    for key, w in weights.items():
        n_prune = w.numel() - int(masks[key].sum())
        flat = torch.ones(w.numel(), dtype=torch.bool)
        flat[_lowest_alive(w.abs().reshape(-1), flat.clone(), n_prune)] = False
        out[key] = flat.reshape(w.shape)
    return out


def glorot_normal(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """Gaussian Glorot initialisation, the paper's: N(0, 2 / (fan_in + fan_out)) with fan_in = in * kh * kw
    and fan_out = out * kh * kw for a weight of shape ``[out, in, *kernel]`` (Chapter 6)."""
    if len(shape) < 2:
        raise ValueError(f"`shape` must be [out, in, ...] with at least 2 dimensions; got {tuple(shape)}")
    receptive = math.prod(shape[2:])
    std = math.sqrt(2.0 / ((shape[0] + shape[1]) * receptive))
    return torch.randn(shape, generator=generator, dtype=dtype) * std


def random_reinit(masks: Masks, weights: Weights, *, seed: int = 0) -> dict[str, Tensor]:
    """The random re-initialisation control: the same mask, new Gaussian Glorot values drawn from ``seed``,
    in the shapes and dtypes of ``weights`` (Chapter 6)."""
    weights = _check_weights(weights)
    masks = _check_masks(masks, weights)
    g = torch.Generator().manual_seed(seed)
    return {k: glorot_normal(tuple(w.shape), g, w.dtype) * masks[k] for k, w in weights.items()}


# ----------------------------------------------------------------------------------------- nn.Module glue
def _prunable_modules(model: nn.Module) -> dict[str, nn.Module]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    mods = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    if not mods:
        raise ValueError("`model` must contain at least one nn.Linear or nn.Conv2d layer")
    return mods


def prunable_weights(model: nn.Module) -> dict[str, Tensor]:
    """Copies of the weight of every ``nn.Linear`` and ``nn.Conv2d`` of ``model``, keyed by module name (the
    prunable weights of Chapter 6; biases are not pruned)."""
    return {name: m.weight.detach().clone() for name, m in _prunable_modules(model).items()}


def load_weights(model: nn.Module, weights: Weights) -> nn.Module:
    """Write ``weights`` (from :func:`prunable_weights`, :func:`reset`, ...) into ``model``'s layers, in
    place, and return ``model`` (Chapter 6)."""
    mods = _prunable_modules(model)
    weights = _check_weights(weights)
    _check_masks({k: torch.ones_like(w, dtype=torch.bool) for k, w in weights.items()},
                 {k: m.weight for k, m in mods.items()}, name="weights")
    with torch.no_grad():
        for key, w in weights.items():
            mods[key].weight.copy_(w)
    return model


def train_masked(
    model: nn.Module,
    masks: Masks,
    batches: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
    *,
    inplace: bool = False,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> nn.Module:
    """Train ``model`` with a fixed mask: pruned weights stay exactly zero (Chapter 6).

    A *fresh* optimizer is made by ``make_optimizer(params)`` (momentum from an earlier round would otherwise
    push pruned weights away from zero). Each step: loss of ``model(x)`` against ``y``, backward, the
    gradients of pruned weights zeroed, the optimizer step, then the mask re-applied (weight decay or
    momentum may still move a zero). ``callback(step, model)`` runs after each step (1, 2, ...). Returns the
    trained model: a copy unless ``inplace=True``.
    """
    model = model if inplace else copy.deepcopy(model)
    mods = _prunable_modules(model)
    masks = _check_masks(masks, {k: m.weight for k, m in mods.items()})
    apply_ = lambda: [mods[k].weight.mul_(masks[k]) for k in mods]  # noqa: E731
    with torch.no_grad():
        apply_()
    opt = make_optimizer(model.parameters())
    for step, (x, y) in enumerate(batches, start=1):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        for k, mod in mods.items():
            if mod.weight.grad is not None:
                mod.weight.grad.mul_(masks[k])
        opt.step()
        with torch.no_grad():
            apply_()
        if callback is not None:
            callback(step, model)
    return model
