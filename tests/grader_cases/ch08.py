"""Grader cases of Chapter 8: the solution of every checker and plausible wrong answers (with words the failure
message must contain). Collected by tests/test_graders.py."""
import math


# ---------------------------------------------------------------------------- Chapter 8 solutions
def amdahl(f, s):
    return 1 / ((1 - f) + f / s)  # the new time, as a fraction of the old, is (1 - f) + f / s


def fraction_needed(target, s):
    return (1 - 1 / target) / (1 - 1 / s)  # solve 1/target = (1 - f) + f / s for f


def bandwidth_speedup_24(value_bits, *, metadata_bits=1.0):
    """Dense bits per weight over 2:4 bits per weight: half the values + a 2-bit position per kept value."""
    return value_bits / (value_bits / 2 + metadata_bits)


def csr_crossover(sparsities, t_dense, t_csr, *, interpolate=True, swap=False, last=False):
    """The solution (with switches that produce the mutants below)."""
    d = [c - t for c, t in zip(t_csr, t_dense)]  # > 0: CSR slower
    if d[0] < 0:
        return sparsities[0]
    found = None
    for i in range(len(d) - 1):
        if d[i] >= 0 > d[i + 1]:
            x0, x1 = sparsities[i], sparsities[i + 1]
            w = (-d[i + 1] if swap else d[i]) / (d[i] - d[i + 1])
            found = x0 + (x1 - x0) * w if interpolate else x1
            if not last:
                return found
    return found


def decode_time_bound(n_weights, bytes_per_weight, bandwidth_gb_s, *, gb=1e9, to_ms=1e3):
    return n_weights * bytes_per_weight / (bandwidth_gb_s * gb) * to_ms  # bytes / (bytes/s), in ms


SOLUTIONS = {
    "ch08.amdahl": amdahl,
    "ch08.fraction_needed": fraction_needed,
    "ch08.bandwidth_24": bandwidth_speedup_24,
    "ch08.csr_crossover": csr_crossover,
    "ch08.roofline_time": decode_time_bound,
}


# ---------------------------------------------------------------------------- wrong answers
def _crossover_csr_only(xs, dense, csr):
    """Cuts the CSR segment with the dense time of the left point instead of the dense segment."""
    if csr[0] < dense[0]:
        return xs[0]
    for i in range(len(xs) - 1):
        if csr[i + 1] < dense[i + 1] and csr[i] >= dense[i]:
            return xs[i] + (xs[i + 1] - xs[i]) * (csr[i] - dense[i]) / (csr[i] - csr[i + 1])
    return None


def _crossover_no_first_check(xs, dense, csr):
    for i in range(len(xs) - 1):
        d0, d1 = csr[i] - dense[i], csr[i + 1] - dense[i + 1]
        if d0 >= 0 > d1:
            return xs[i] + (xs[i + 1] - xs[i]) * d0 / (d0 - d1)
    return None


def _crossover_index(xs, dense, csr):
    return next((i for i, (t, c) in enumerate(zip(dense, csr)) if c < t), None)


MUTANTS = {
    "ch08.amdahl": [
        (lambda f, s: 1 / (f + (1 - f) / s), "swapped"),
        (lambda f, s: f * s + (1 - f), "averages the SPEEDS"),
        (lambda f, s: (1 - f) + f / s, "its reciprocal"),
        (lambda f, s: 1 / ((1 - f) + f * s), "not f * s"),
        (lambda f, s: 1 / (1 - f) if f < 1 else s, "the limit"),
        (lambda f, s: max(1.0, amdahl(f, s)), "don't clamp"),
        (lambda f, s: 100 * (amdahl(f, s) - 1), "percentage"),
        (lambda f, s: f"{amdahl(f, s):.2f}x", "expected a number"),
    ],
    "ch08.fraction_needed": [
        (lambda target, s: (target - 1) / (s - 1), "not linear"),
        (lambda target, s: 1 - 1 / target, "s is missing"),
        (lambda target, s: target / s, "not a fraction of the run time"),
        (lambda target, s: (1 - 1 / s) / (1 - 1 / target), "upside down"),
        (lambda target, s: 1 - fraction_needed(target, s), "NOT accelerated"),
        (lambda target, s: 100 * fraction_needed(target, s), "percentage"),
    ],
    "ch08.bandwidth_24": [
        (lambda value_bits: 2.0, "ignores the metadata"),
        (lambda value_bits: bandwidth_speedup_24(value_bits, metadata_bits=0.5), "2 bits per group"),  # erratum 7
        (lambda value_bits: bandwidth_speedup_24(value_bits, metadata_bits=2), "every weight a 2-bit position"),
        (lambda value_bits: bandwidth_speedup_24(value_bits, metadata_bits=4), "per GROUP of 4"),
        (lambda value_bits: bandwidth_speedup_24(value_bits, metadata_bits=1 / 8), "bits and bytes are mixed"),
        (lambda value_bits: 1 / bandwidth_speedup_24(value_bits), "compression ratio"),
        (lambda value_bits: value_bits / 2 + 1, "bits read per weight"),
    ],
    "ch08.csr_crossover": [
        (lambda xs, dense, csr: csr_crossover(xs, dense, csr, interpolate=False), "first MEASURED sparsity"),
        (lambda xs, dense, csr: csr_crossover(xs, dense, csr, swap=True), "weights are swapped"),
        (lambda xs, dense, csr: csr_crossover(xs, dense, csr, last=True), "FIRST crossing counts"),
        (_crossover_csr_only, "interpolate the DIFFERENCE"),
        (_crossover_no_first_check, "already faster at the first sparsity"),
        (lambda xs, dense, csr: (lambda v: math.nan if v is None else v)(csr_crossover(xs, dense, csr)),
         "not a number"),
        (lambda xs, dense, csr: (lambda v: 1.0 if v is None else v)(csr_crossover(xs, dense, csr)),
         "return None"),
        (_crossover_index, "not its index"),
    ],
    "ch08.roofline_time": [
        (lambda n, b, bw: decode_time_bound(n, b, bw, gb=2**30), "not 2**30"),
        (lambda n, b, bw: decode_time_bound(n, b, bw, to_ms=1), "that is seconds"),
        (lambda n, b, bw: 8 * decode_time_bound(n, b, bw), "no factor 8"),
        (lambda n, b, bw: decode_time_bound(n, b, bw, to_ms=1e6), "microseconds"),
        (lambda n, b, bw: decode_time_bound(n, b, bw, gb=1), "multiply it by 1e9"),
        (lambda n, b, bw: 1e3 / decode_time_bound(n, b, bw), "tokens per second"),
        (lambda n, b, bw: decode_time_bound(n, b, bw) / 8, "don't divide by 8"),
    ],
}
