"""The lottery-ticket experiment of Chapter 6: IMP on a LeNet-300-100-style MLP, with its controls.

Frankle & Carbin (2019) run IMP on LeNet-300-100 (784 -> 300 -> 100 -> 10) on MNIST. Here an MLP of the same
shape (two ReLU hidden layers, by default 200 and 60 units) reads scikit-learn's 8x8 digits (64 inputs) offline,
or MNIST (``dataset="mnist"``, downloaded by scikit-learn's ``fetch_openml``) when online. Every network of a level (all seeds x all arms) trains at once as one batched
computation: the weights of layer l are a ``[S, out, in]`` tensor, one slice per network, and Adam, being
elementwise, treats each slice as its own network.

The arms, at each level L = 1, 2, ... (level 0 is the dense network, trained once per seed):

* ``ticket``: IMP with reset: prune the ticket of level L-1 after training, reset the survivors to theta_0;
* ``reinit``: the ticket's mask, new random Glorot values (the control of the paper);
* ``random_mask``: a random mask with the ticket's per-layer counts, from theta_0;
* ``one_shot``: the dense network pruned once by magnitude to the ticket's per-layer counts, reset to theta_0;
* ``rewind``: IMP that rewinds to theta_k, the dense run's iterate at ``rewind_iteration`` (Frankle et al. 2020);
* ``no_reset``: IMP that keeps training the pruned network from its trained values (pruning with fine-tuning).

Each training run keeps the validation loss every ``eval_every`` iterations; its *early-stopping iteration* is
the one of minimum validation loss, and the test accuracy reported is the one at that iteration (the paper's
protocol). Validation and test splits are disjoint from the training split and from each other.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from . import lottery as lt
from ._validate import check_choice

__all__ = ["ARMS", "LotteryConfig", "LotteryData", "LevelResult", "LotteryResult", "load_data", "run", "paired"]

ARMS = ("ticket", "reinit", "random_mask", "one_shot", "rewind", "no_reset")
LAYERS = ("fc1", "fc2", "fc3")


@dataclass(frozen=True)
class LotteryConfig:
    """The experiment's knobs. The defaults fit a 2-core CPU in under two minutes; :meth:`paper` is the
    paper's MNIST setup (Frankle & Carbin 2019, Figure 3: Adam 1.2e-3, batch 60, 50K iterations)."""

    dataset: str = "digits"
    hidden: tuple[int, int] = (200, 60)  # LeNet-300-100's shape scaled to fit the time budget; paper(): 300, 100
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    rounds: int = 16  # 0.8 ** 16 = 2.8% of the hidden-layer weights remain
    rates: tuple[float, float, float] = (0.2, 0.2, 0.1)  # per layer, of the remaining weights; output: half
    iterations: int = 1000  # 60 epochs of the 997 training digits (the paper: 50K iterations = 55 MNIST epochs)
    batch: int = 60
    lr: float = 1.2e-3
    eval_every: int = 25
    rewind_iteration: int = 50
    control_every: int = 2  # the controls (reinit, random_mask, one_shot) train at every 2nd level and the last
    arms: tuple[str, ...] = ARMS
    n_val: int | None = None  # default: 300 digits, or 5,000 MNIST images (the paper's)
    n_test: int | None = None  # default: 500 digits, or MNIST's 10,000
    split_seed: int = 1234
    dtype: torch.dtype = torch.float64  # float32 training drifts apart on other CPUs (see the chapter); float64 not

    def __post_init__(self) -> None:
        check_choice(self.dataset, "dataset", {"digits", "mnist"})
        for name, default in (("n_val", {"digits": 300, "mnist": 5000}), ("n_test", {"digits": 500, "mnist": 10000})):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default[self.dataset])
        for a in self.arms:
            check_choice(a, "arms", set(ARMS))
        if self.rewind_iteration % self.eval_every or not 0 < self.rewind_iteration < self.iterations:
            raise ValueError(f"`rewind_iteration` must be a multiple of eval_every={self.eval_every} in "
                             f"(0, iterations={self.iterations}); got {self.rewind_iteration}")
        if self.iterations % self.eval_every:
            raise ValueError(f"`iterations` must be a multiple of `eval_every`={self.eval_every}")
        if isinstance(self.control_every, bool) or not isinstance(self.control_every, int) or self.control_every < 1:
            raise ValueError(f"`control_every` must be an integer >= 1; got {self.control_every!r}")
        if len(self.rates) != 3:
            raise ValueError(f"`rates` must give one rate per layer (3); got {self.rates!r}")

    @classmethod
    def paper(cls, **kw) -> "LotteryConfig":
        """The paper's LeNet-300-100 run on MNIST (needs the internet once, and hours on a CPU)."""
        base = dict(dataset="mnist", hidden=(300, 100), iterations=50_000, eval_every=100, rewind_iteration=500,
                    rounds=20, control_every=1)
        return cls(**{**base, **kw})


@dataclass
class LotteryData:
    """Train, validation and test tensors: X ``[n, d_in]`` float32 in [0, 1], y ``[n]`` labels."""

    X_train: Tensor
    y_train: Tensor
    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor


def load_data(cfg: LotteryConfig) -> LotteryData:
    """The digits (8x8, pixel / 16) or MNIST (28x28, pixel / 255), split once by ``cfg.split_seed`` into
    disjoint test, validation and training sets (Chapter 6)."""
    if cfg.dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        X, y = torch.as_tensor(d.data, dtype=torch.float32) / 16.0, torch.as_tensor(d.target, dtype=torch.long)
    else:
        from sklearn.datasets import fetch_openml

        d = fetch_openml("mnist_784", version=1, as_frame=False, parser="liac-arff")
        X = torch.as_tensor(d.data, dtype=torch.float32) / 255.0
        y = torch.as_tensor(d.target.astype("int64"))
    X = X.to(cfg.dtype)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.split_seed))
    te, va, tr = perm[:cfg.n_test], perm[cfg.n_test:cfg.n_test + cfg.n_val], perm[cfg.n_test + cfg.n_val:]
    return LotteryData(X[tr], y[tr], X[va], y[va], X[te], y[te])


# ----------------------------------------------------------------------------------------- batched MLP
def _sizes(cfg: LotteryConfig, d_in: int) -> list[tuple[int, int]]:
    dims = [d_in, *cfg.hidden, 10]
    return [(dims[i + 1], dims[i]) for i in range(3)]  # (out, in) per layer


def _forward(W: list[Tensor], b: list[Tensor], X: Tensor) -> Tensor:
    """Logits ``[S, n, 10]`` of S networks; ``X`` is ``[S, n, d_in]`` or ``[n, d_in]`` (shared)."""
    h = X if X.dim() == 3 else X.expand(W[0].shape[0], *X.shape)
    for i, (w, c) in enumerate(zip(W, b)):
        h = torch.baddbmm(c.unsqueeze(1), h, w.transpose(1, 2))  # (S, n, out)
        if i < len(W) - 1:
            h = F.relu(h)
    return h


def _loss_acc(W, b, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy of each of the S networks on a shared set: two ``[S]`` tensors."""
    logits = _forward(W, b, X)  # (S, n, 10)
    S, n, _ = logits.shape
    ce = F.cross_entropy(logits.reshape(S * n, 10), y.repeat(S), reduction="none").reshape(S, n).mean(1)
    return ce, (logits.argmax(-1) == y).float().mean(1)


def _batch_indices(n: int, batch: int, iterations: int, seed: int) -> Tensor:
    """``[iterations, batch]`` training indices: shuffled epochs from a generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    epochs = math.ceil(iterations * batch / n)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(epochs)])
    return order[: iterations * batch].reshape(iterations, batch)


@dataclass
class TrainRun:
    """One batched training run of S networks: weights after training and what early stopping needs."""

    W: list[Tensor]  # trained weights, [S, out, in] per layer
    b: list[Tensor]
    checkpoint: list[Tensor] | None  # weights at cfg.rewind_iteration (only when asked for)
    val_loss: Tensor  # (evals, S): the validation-loss curves
    iters: Tensor  # (evals,)
    es_iter: Tensor  # (S,): iteration of the (first) minimum validation loss
    test_acc: Tensor  # (S,): test accuracy at that iteration


def train_batched(W0, b0, masks, data: LotteryData, seeds: list[int], cfg: LotteryConfig, *,
                  keep_checkpoint: bool = False) -> TrainRun:
    """Train S masked networks from ``(W0, b0)`` with a fresh Adam for ``cfg.iterations`` steps; network s
    reads minibatches in the order of ``seeds[s]``. Pruned weights stay exactly zero (masked gradients, mask
    re-applied after every step). Every ``cfg.eval_every`` steps the validation loss is measured; the test
    accuracy is measured whenever a network reaches a new minimum of it. Inputs are not modified."""
    masks = [m.to(w.dtype) for w, m in zip(W0, masks)]  # 0./1.: multiplying by a bool tensor would convert it each time
    W = [w.detach().clone().mul_(m).requires_grad_(True) for w, m in zip(W0, masks)]
    b = [c.detach().clone().requires_grad_(True) for c in b0]
    # fresh per run: no momentum carried across rounds; fused: one kernel for all parameters (2x faster on a CPU)
    opt = torch.optim.Adam(W + b, lr=cfg.lr, fused=True)
    idx = torch.stack([_batch_indices(len(data.y_train), cfg.batch, cfg.iterations, s) for s in seeds], 1)
    S = len(seeds)
    best = torch.full((S,), math.inf, dtype=torch.float64)
    es_iter, test_acc = torch.zeros(S, dtype=torch.long), torch.zeros(S, dtype=torch.float64)
    vals, its, ckpt = [], [], None
    for it in range(1, cfg.iterations + 1):
        xb, yb = data.X_train[idx[it - 1]], data.y_train[idx[it - 1]]  # (S, batch, d_in), (S, batch)
        logits = _forward(W, b, xb)
        loss = F.cross_entropy(logits.reshape(-1, 10), yb.reshape(-1), reduction="sum") / cfg.batch
        opt.zero_grad(set_to_none=True)
        loss.backward()  # the sum over networks: each slice gets its own network's gradient
        with torch.no_grad():
            for w, m in zip(W, masks):
                w.grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for w, m in zip(W, masks):
                w.mul_(m)
            if it % cfg.eval_every == 0:
                vl = _loss_acc(W, b, data.X_val, data.y_val)[0].double()  # (S,)
                better = vl < best
                if better.any():
                    _, ta = _loss_acc(W, b, data.X_test, data.y_test)
                    best = torch.where(better, vl, best)
                    es_iter = torch.where(better, it, es_iter)
                    test_acc = torch.where(better, ta.double(), test_acc)
                vals.append(vl), its.append(it)
            if keep_checkpoint and it == cfg.rewind_iteration:
                ckpt = [w.detach().clone() for w in W]
    return TrainRun([w.detach() for w in W], [c.detach() for c in b], ckpt, torch.stack(vals), torch.tensor(its),
                    es_iter, test_acc)


# ----------------------------------------------------------------------------------------- results
@dataclass
class LevelResult:
    """Per arm: early-stopping iteration and test accuracy there (``[n_seeds]`` each), the curves."""

    remaining: float  # fraction of all weights kept
    layer_remaining: tuple[float, ...]
    es_iter: dict[str, Tensor] = field(default_factory=dict)
    test_acc: dict[str, Tensor] = field(default_factory=dict)
    masks: dict[str, list[Tensor]] = field(default_factory=dict)  # seed 0's mask per arm, per layer
    ticket_trained: list[Tensor] | None = None  # seed 0's trained ticket weights (the torch.prune cross-check)


@dataclass
class LotteryResult:
    config: LotteryConfig
    levels: list[LevelResult]
    seconds: float

    def remaining(self, arm: str | None = None) -> Tensor:
        """Fraction of weights kept at each level (where ``arm`` was trained, if given)."""
        return torch.tensor([lv.remaining for i, lv in enumerate(self.levels)
                             if arm is None or i == 0 or arm in lv.test_acc])

    def stat(self, arm: str, what: str = "test_acc") -> tuple[Tensor, Tensor, Tensor]:
        """``(remaining, mean, std)`` over seeds of ``what`` ("test_acc" or "es_iter") for ``arm``,
        at the levels where ``arm`` was trained, level 0 (the dense network, shared by every arm) included; std
        is the sample standard deviation over seeds."""
        check_choice(what, "what", {"test_acc", "es_iter"})
        check_choice(arm, "arm", set(self.config.arms))
        x = self.values(arm, what).double()  # (levels, seeds)
        return self.remaining(arm), x.mean(1), x.std(1)

    def values(self, arm: str, what: str = "test_acc") -> Tensor:
        """``[levels, seeds]``: ``what`` for every seed at the levels where ``arm`` was trained (and level 0)."""
        return torch.stack([getattr(lv, what)["dense" if i == 0 else arm] for i, lv in enumerate(self.levels)
                            if i == 0 or arm in lv.test_acc])


def paired(res: LotteryResult, a: str, b: str, what: str = "test_acc", level: int | None = None):
    """The seed-paired difference ``a - b`` of ``what`` at the levels where both arms were trained: returns
    ``(remaining, mean, half_width)`` with the half-width of a 95% Student-t interval over the seeds (seed s of
    every arm starts from the same theta_0 and reads the same minibatches, so pairing removes their share of
    the variance). ``b="dense"`` compares with the same seed's dense network. A difference whose interval
    contains 0 is no difference (Chapter 6)."""
    from scipy.stats import t as student_t

    rows = []
    for i, lv in enumerate(res.levels):
        va = getattr(lv, what).get("dense" if i == 0 else a)
        vb = getattr(res.levels[0], what)["dense"] if b == "dense" else getattr(lv, what).get("dense" if i == 0 else b)
        if i > 0 and va is not None and vb is not None and (level is None or i == level):
            rows.append((lv.remaining, (va.double() - vb.double())))
    if not rows:
        raise ValueError(f"`a`, `b`: arms {a!r} and {b!r} share no trained level")
    n = rows[0][1].numel()
    tq = float(student_t.ppf(0.975, n - 1))
    remaining = torch.tensor([r for r, _ in rows])
    d = torch.stack([x for _, x in rows])  # (levels, seeds)
    return remaining, d.mean(1), tq * d.std(1) / math.sqrt(n)


def _init(sizes, seeds: list[int], salt: int = 0, dtype: torch.dtype = torch.float64):
    """Gaussian Glorot weights (the paper's) and zero biases for each seed: ``[S, out, in]`` per layer."""
    W = []
    for out, inp in sizes:
        gens = [torch.Generator().manual_seed(1000 * s + 7 * salt + len(W)) for s in seeds]
        W.append(torch.stack([lt.glorot_normal((out, inp), g, dtype) for g in gens]))
    return W, [torch.zeros(len(seeds), out, dtype=dtype) for out, _ in sizes]


def _as_dict(W: list[Tensor], s: int) -> dict[str, Tensor]:
    return {name: w[s] for name, w in zip(LAYERS, W)}


def _stack(dicts: list[dict[str, Tensor]]) -> list[Tensor]:
    return [torch.stack([d[name] for d in dicts]) for name in LAYERS]


def run(cfg: LotteryConfig = LotteryConfig(), data: LotteryData | None = None, *, log=None) -> LotteryResult:
    """Run IMP and its controls for every seed of ``cfg`` (Chapter 6). ``log(str)`` reports progress."""
    t0 = time.perf_counter()
    data = data or load_data(cfg)
    seeds, arms, n = list(cfg.seeds), list(cfg.arms), len(cfg.seeds)
    sizes = _sizes(cfg, data.X_train.shape[1])
    rates = dict(zip(LAYERS, cfg.rates))
    W0, b0 = _init(sizes, seeds, dtype=cfg.dtype)
    ones = [torch.ones_like(w, dtype=torch.bool) for w in W0]
    dense = train_batched(W0, b0, ones, data, seeds, cfg, keep_checkpoint=True)
    levels = [LevelResult(1.0, (1.0, 1.0, 1.0), {"dense": dense.es_iter}, {"dense": dense.test_acc},
                          {"dense": [m[0] for m in ones]}, [w[0].clone() for w in dense.W])]
    # the state each chain carries from level to level: masks and trained weights, per seed
    chains = {a: {"masks": [_as_dict(ones, s) for s in range(n)], "trained": [_as_dict(dense.W, s) for s in range(n)],
                  "b": dense.b} for a in ("ticket", "rewind", "no_reset")}
    for level in range(1, cfg.rounds + 1):
        inits, masks, bs = [], [], []
        for a in ("ticket", "rewind", "no_reset"):
            c = chains[a]
            c["masks"] = [lt.prune_round(c["trained"][s], c["masks"][s], rates) for s in range(n)]
        ticket_masks = chains["ticket"]["masks"]
        control_level = level % cfg.control_every == 0 or level == cfg.rounds
        now = [a for a in arms if a in chains or control_level]
        for a in now:
            if a in ("ticket", "rewind", "no_reset"):
                m = chains[a]["masks"]
                src = {"ticket": _stack([_as_dict(W0, s) for s in range(n)]), "rewind": dense.checkpoint,
                       "no_reset": _stack(chains["no_reset"]["trained"])}[a]
                w = [x.clone() for x in src]
            elif a == "reinit":
                m = ticket_masks
                w, _ = _init(sizes, seeds, salt=level, dtype=cfg.dtype)
            elif a == "random_mask":
                m = [lt.random_mask(ticket_masks[s], seed=1000 * seeds[s] + level) for s in range(n)]
                w = [x.clone() for x in W0]
            else:  # one_shot
                m = [lt.magnitude_mask_like(_as_dict(dense.W, s), ticket_masks[s]) for s in range(n)]
                w = [x.clone() for x in W0]
            inits.append(w), masks.append(_stack(m))
            bs.append(chains["no_reset"]["b"] if a == "no_reset" else b0)
        cat = lambda parts: [torch.cat([p[i] for p in parts]) for i in range(3)]  # noqa: E731
        out = train_batched(cat(inits), cat(bs), cat(masks), data, seeds * len(now), cfg)
        lv = LevelResult(lt.remaining_fraction(ticket_masks[0]),
                         tuple(float(ticket_masks[0][k].float().mean()) for k in LAYERS))
        for j, a in enumerate(now):
            sl = slice(j * n, (j + 1) * n)
            lv.es_iter[a], lv.test_acc[a] = out.es_iter[sl], out.test_acc[sl]
            lv.masks[a] = [x[j * n].clone() for x in cat(masks)]
            if a in chains:
                chains[a]["trained"] = [_as_dict([w[sl] for w in out.W], s) for s in range(n)]
                if a == "no_reset":
                    chains[a]["b"] = [c[sl] for c in out.b]
        lv.ticket_trained = [w.clone() for w in chains["ticket"]["trained"][0].values()] \
            if "ticket" in arms else None
        levels.append(lv)
        if log:
            log(f"level {level:2d}: {lv.remaining:6.1%} remaining, ticket acc "
                f"{lv.test_acc.get('ticket', torch.tensor([float('nan')])).mean():.3f}, "
                f"{time.perf_counter() - t0:5.0f} s")
    return LotteryResult(cfg, levels, time.perf_counter() - t0)


def small_config(**kw) -> LotteryConfig:
    """A tiny configuration for tests (seconds)."""
    base = dict(hidden=(20, 10), seeds=(0, 1), rounds=3, iterations=40, eval_every=10, rewind_iteration=10,
                n_val=200, n_test=200, control_every=1)
    return replace(LotteryConfig(), **{**base, **kw})
