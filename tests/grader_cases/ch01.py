"""Grader cases of Chapter 1: the solution of every checker and plausible wrong answers (with words the failure
message must contain). Collected by tests/test_graders.py."""
import math

import torch


def _lowest_k_keep(scores, k):
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[torch.sort(scores.reshape(-1), stable=True).indices[:k]] = False  # ties: lower index first
    return keep.reshape(scores.shape)


def _magnitude(weight, k):
    return _lowest_k_keep(weight.abs(), k)


def _random(shape, k, seed):
    g = torch.Generator().manual_seed(seed)
    return _lowest_k_keep(torch.rand(shape, generator=g), k)


def _break_even(fmt, shape, value_bytes, index_bytes):
    numel = shape[0] * shape[1]
    if fmt == "coo":
        return 2 * index_bytes / (2 * index_bytes + value_bytes)
    return 1 - (numel * value_bytes - (shape[0] + 1) * index_bytes) / (numel * (index_bytes + value_bytes))


SOLUTIONS = {
    "ch01.magnitude_mask": _magnitude,
    "ch01.random_mask": _random,
    "ch01.coo_bytes": lambda shape, nnz, v, i: nnz * (len(shape) * i + v),
    "ch01.csr_bytes": lambda shape, nnz, v, i: nnz * (i + v) + (shape[0] + 1) * i,
    "ch01.break_even_sparsity": _break_even,
    "ch01.random_norm_removed": lambda s: math.sqrt(s),
}


# ---------------------------------------------------------------------------- plausible wrong answers
def _norm_magnitude_gaussian(s):
    """What MAGNITUDE pruning removes from N(0, 1) weights: sqrt(E[w^2; |w| < t]), P(|w| < t) = s."""
    from statistics import NormalDist

    if s in (0.0, 1.0):
        return s
    nd = NormalDist()
    t = nd.inv_cdf((1 + s) / 2)
    return math.sqrt(s - 2 * t * nd.pdf(t))


def _norm_sampled(s):
    """A Monte-Carlo estimate on one random matrix instead of the expectation."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=g, dtype=torch.float64)
    removed = torch.rand(w.shape, generator=g, dtype=torch.float64) < s
    return float((w * removed).norm() / w.norm())


def _mag_threshold_le(weight, k):
    if k == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    t = weight.abs().reshape(-1).kthvalue(k).values
    return weight.abs() > t  # removes every weight tied with the k-th smallest


def _mag_threshold_lt(weight, k):
    if k == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    t = weight.abs().reshape(-1).kthvalue(k).values
    return weight.abs() >= t  # spares the ties


def _mag_ties_high_index_first(weight, k):
    keep = torch.ones(weight.numel(), dtype=torch.bool)
    order = torch.sort(weight.abs().reshape(-1), descending=True, stable=True).indices
    if k:
        keep[order[-k:]] = False
    return keep.reshape(weight.shape)


def _mag_inplace(weight, k):
    weight.abs_()
    return _lowest_k_keep(weight, k)


def _rand_bernoulli(shape, k, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) >= k / math.prod(shape)


def _rand_randperm(shape, k, seed):
    g = torch.Generator().manual_seed(seed)
    keep = torch.ones(math.prod(shape), dtype=torch.bool)
    keep[torch.randperm(math.prod(shape), generator=g)[:k]] = False
    return keep.reshape(shape)


def _rand_highest(shape, k, seed):
    g = torch.Generator().manual_seed(seed)
    return _lowest_k_keep(-torch.rand(shape, generator=g), k)


def _rand_two_draws(shape, k, seed):
    g = torch.Generator().manual_seed(seed)
    torch.rand(shape, generator=g)  # a first draw thrown away: the generator has moved on
    return _lowest_k_keep(torch.rand(shape, generator=g), k)


def _csr_no_pointers(shape, nnz, v, i):
    return nnz * (i + v)


def _be_density(fmt, shape, v, i):
    return 1 - _break_even(fmt, shape, v, i)


def _be_csr_without_pointers(fmt, shape, v, i):
    return 2 * i / (2 * i + v) if fmt == "coo" else i / (i + v)


def _be_csr_as_coo(fmt, shape, v, i):
    return 2 * i / (2 * i + v)


def _be_rows_pointers(fmt, shape, v, i):
    if fmt == "coo":
        return 2 * i / (2 * i + v)
    numel = shape[0] * shape[1]
    return 1 - (numel * v - shape[0] * i) / (numel * (i + v))


MUTANTS = {
    "ch01.magnitude_mask": [
        (_mag_threshold_le, "also removes every weight tied"),
        (_mag_threshold_lt, "spares the weights equal to the threshold"),
        (lambda w, k: _lowest_k_keep(w, k), "rank by |w|, not by w"),
        (lambda w, k: ~_magnitude(w, k), "exactly inverted"),
        (_mag_ties_high_index_first, "remove the LOWER flattened index"),
        (lambda w, k: w * _magnitude(w, k), "not the pruned weights"),
        (lambda w, k: _lowest_k_keep(-w.abs(), k), "k LARGEST"),
        (_mag_inplace, "modified its input `weight`"),
    ],
    "ch01.random_mask": [
        (_rand_bernoulli, "Bernoulli"),
        (_rand_randperm, "randperm"),
        (_rand_highest, "k HIGHEST"),
        (lambda shape, k, seed: ~_random(shape, k, seed), "exactly inverted"),
        (_rand_two_draws, "ONE call"),
        (lambda shape, k, seed: _random(shape, k, seed).float(), "boolean tensor"),
    ],
    "ch01.coo_bytes": [
        (lambda shape, nnz, v, i: nnz * (i + v), "row AND its column"),
        (lambda shape, nnz, v, i: nnz * (2 * i + v), "one index per dimension"),
        (lambda shape, nnz, v, i: nnz * v, "only the values"),
        (lambda shape, nnz, v, i: 8 * nnz * (len(shape) * i + v), "bits"),
        (lambda shape, nnz, v, i: math.prod(shape) * (len(shape) * i + v), "use nnz"),
    ],
    "ch01.csr_bytes": [
        (_csr_no_pointers, "add the row pointers"),
        (lambda shape, nnz, v, i: nnz * (i + v) + shape[0] * i, "rows + 1 pointers, not rows"),
        (lambda shape, nnz, v, i: nnz * (i + v) + (shape[1] + 1) * i, "per row"),
        (lambda shape, nnz, v, i: nnz * (2 * i + v) + (shape[0] + 1) * i, "only the column index"),
        (lambda shape, nnz, v, i: 8 * (nnz * (i + v) + (shape[0] + 1) * i), "bits"),
    ],
    "ch01.break_even_sparsity": [
        (_be_density, "density"),
        (lambda fmt, shape, v, i: 100 * _break_even(fmt, shape, v, i), "percentage"),
        (lambda fmt, shape, v, i: i / (i + v), "two indices per non-zero"),
        (_be_csr_without_pointers, "left out the rows + 1 row pointers"),
        (_be_csr_as_coo, "CSR stores one index per non-zero"),
        (_be_rows_pointers, "rows + 1 row pointers, not rows"),
    ],
    "ch01.random_norm_removed": [
        (lambda s: s, "forgot the square root"),
        (lambda s: math.sqrt(1 - s), "share of the norm KEPT"),
        (lambda s: 1 - s, "fraction of weights kept"),
        (lambda s: s**2, "squares the probability"),
        (_norm_magnitude_gaussian, "prefers SMALL weights"),
        (_norm_sampled, "sampled estimate"),
        (lambda s: 100 * math.sqrt(s), "percentage"),
        (lambda s: str(math.sqrt(s)), "one number"),
    ],
}
