"""Checkers for Chapter 8 (what speedup pruning buys: Amdahl's law, the memory-bandwidth bound, crossovers).

Expected outputs come from :mod:`pruning_lab.speedup`, the implementation the chapter teaches, except the
decoding-time bound of the last exercise, which ``speedup`` has no function for: the checker computes it as
bytes read / bandwidth.

The exercises (the learner writes each function):

1. ``amdahl(f, s)``: the end-to-end speedup when a fraction ``f`` in [0, 1] of the run time gets ``s`` times
   faster (``s > 0``; ``s < 1`` is a slowdown): ``1 / ((1 - f) + f / s)``, a float.
2. ``fraction_needed(target, s)``: Amdahl inverted, the fraction ``f`` of the run time that must get ``s`` times
   faster for an end-to-end speedup ``target`` (always reachable in the cases): a float in [0, 1].
3. ``bandwidth_speedup_24(value_bits)``: the speedup bound of a memory-bound (decoding) product with a 2:4
   matrix over the dense one, when each value takes ``value_bits`` bits: dense bytes over 2:4 bytes, a float.
4. ``csr_crossover(sparsities, t_dense, t_csr)``: the sparsity at which CSR becomes faster than dense, linearly
   interpolated between the two measured points around the FIRST crossing; the first sparsity if CSR is faster
   there already; ``None`` if it never is. ``sparsities`` increasing, times in any one unit.
5. ``decode_time_bound(n_weights, bytes_per_weight, bandwidth_gb_s)`` (a prediction before the chapter measures
   decoding): the lower bound on the time per decoded token in MILLISECONDS when every weight is read once from
   memory per token and memory delivers ``bandwidth_gb_s`` GB/s (1 GB = 1e9 bytes).
"""
from __future__ import annotations

import math

import torch

from .. import speedup as ref
from ._core import Case, Checker, register, seeded_generator as _gen, as_float as _as_float


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


# ----------------------------------------------------------------------------- 1. Amdahl's law
def _amdahl_cases() -> list[Case]:
    names = ("f", "s")

    def case(label, f, s):
        return Case(label, (f, s), expected=ref.amdahl(f, s), arg_names=names)

    cases = [
        case("worked problem: 70% of the time 2x faster -> 1/0.65 = 1.538x", 0.7, 2.0),
        case("the linear layers (60% of the time) at 2:4's fp16 bandwidth bound s = 16/9", 0.6, 16 / 9),
        case("90% of the time 100x faster: close to the limit 1/(1 - f) = 10x", 0.9, 100.0),
        case("a slowdown: 30% of the time in CSR at half the dense speed (s = 0.5)", 0.3, 0.5),
        case("f = 0: nothing accelerated", 0.0, 10.0),
        case("f = 1: everything 3x faster", 1.0, 3.0),
    ]
    g = _gen(81)
    f = round(float(torch.rand(1, generator=g)), 4)
    s = round(float(torch.empty(1).uniform_(1.2, 8.0, generator=g)), 4)
    cases.append(case(f"random: f = {f:g}, s = {s:g} (seed 81)", f, s))
    return cases


def _amdahl_hint(case: Case, got) -> str | None:
    f, s = case.args
    got = _as_float(got)
    if got is None:
        return None
    exp = case.expected
    rules = [
        (lambda: 1 / (f + (1 - f) / s),
         "f and 1 - f are swapped: f is the fraction of the time that gets s times faster, so f is the part "
         "divided by s: 1 / ((1 - f) + f / s)."),
        (lambda: (1 - f) + f / s,
         "that is the NEW run time as a fraction of the old, (1 - f) + f / s; the speedup is old time over new "
         "time, its reciprocal."),
        (lambda: (1 - f) + f * s,
         "that averages the SPEEDS, (1 - f) * 1 + f * s, and overstates the gain. Amdahl adds the TIMES: the new "
         "time is (1 - f) + f / s of the old, and the speedup is 1 / ((1 - f) + f / s)."),
        (lambda: 1 / ((1 - f) + f * s),
         "s times faster means the accelerated part takes f / s of the old time, not f * s."),
        (lambda: 1 / (1 - f),
         "that is the limit 1 / (1 - f) as s grows without bound; with a finite s the accelerated part still takes "
         "f / s of the time."),
        (lambda: f * s,
         "the part that is not accelerated still takes (1 - f) of the old time: 1 / ((1 - f) + f / s)."),
        (lambda: 100 * (exp - 1),
         "give the speedup as a ratio (1.54 for 1.54x), not a percentage gain."),
    ]
    for value, msg in rules:
        try:
            v = value()
        except ZeroDivisionError:
            continue
        if _close(got, v) and not _close(exp, v):
            return msg
    if s < 1 and _close(got, 1.0):
        return ("a part that gets SLOWER (s < 1) makes the whole slower: the end-to-end speedup is below 1; "
                "don't clamp it at 1.")
    return None


register(Checker(
    name="ch08.amdahl", chapter=8, kind="function",
    summary="amdahl(f, s): end-to-end speedup (float) when the fraction f in [0, 1] of the run time gets s times "
            "faster (s > 0, s < 1 a slowdown): 1 / ((1 - f) + f / s)",
    make_cases=_amdahl_cases, hint=_amdahl_hint,
))


# ----------------------------------------------------------------------------- 2. derivation: Amdahl inverted
def _fraction_cases() -> list[Case]:
    names = ("target", "s")

    def case(label, target, s):
        return Case(label, (target, s), expected=ref.fraction_needed(target, s), arg_names=names)

    return [
        case("the worked problem backwards: 1/0.65 = 1.538x with s = 2 needs f = 0.7", 1 / 0.65, 2.0),
        case("1.5x end to end with 2:4's fp16 bandwidth bound s = 16/9", 1.5, 16 / 9),
        case("2x end to end with a part 100x faster", 2.0, 100.0),
        case("target = s: all of the time must be accelerated", 4.0, 4.0),
        case("target = 1: nothing needs to change", 1.0, 3.0),
        case("a slowdown: how much time at half speed (s = 0.5) makes the whole 0.8x", 0.8, 0.5),
    ]


def _fraction_hint(case: Case, got) -> str | None:
    t, s = case.args
    got = _as_float(got)
    if got is None:
        return None
    f = case.expected
    rules = [
        (lambda: (t - 1) / (s - 1),
         "that interpolates the speedup linearly between 1 (f = 0) and s (f = 1), but the speedup is not linear "
         "in f; the TIME is: 1/target = (1 - f) + f / s. Solve that for f."),
        (lambda: 1 - 1 / t,
         "s is missing: 1 - 1/target is the fraction needed with an infinitely fast part (s -> inf); with a finite "
         "s divide by 1 - 1/s: f = (1 - 1/target) / (1 - 1/s)."),
        (lambda: t / s,
         "target / s is not a fraction of the run time: solve 1/target = (1 - f) + f / s for f."),
        (lambda: (1 - 1 / s) / (1 - 1 / t),
         "upside down: f = (1 - 1/target) / (1 - 1/s)."),
        (lambda: 1 - f,
         "that is 1 - f, the fraction of the time NOT accelerated; f is the fraction that gets s times faster."),
        (lambda: 100 * f,
         "give a fraction of the run time (between 0 and 1), not a percentage."),
    ]
    for value, msg in rules:
        try:
            v = value()
        except ZeroDivisionError:
            continue
        if _close(got, v) and not _close(f, v):
            return msg
    return None


register(Checker(
    name="ch08.fraction_needed", chapter=8, kind="function",
    summary="fraction_needed(target, s): the fraction f (float in [0, 1]) of the run time that must get s times "
            "faster for an end-to-end speedup target; invert 1/target = (1 - f) + f / s",
    make_cases=_fraction_cases, hint=_fraction_hint,
))


# ----------------------------------------------------------------------------- 3. the bandwidth bound of 2:4
def _bandwidth_cases() -> list[Case]:
    names = ("value_bits",)

    def case(label, bits):
        return Case(label, (bits,), expected=ref.bandwidth_speedup("2:4", bits / 8), arg_names=names)

    return [
        case("fp16 values: 16 / (8 + 1) = 1.78x, not 2x", 16),
        case("fp32 values", 32),
        case("int8 values", 8),
        case("int4 values", 4),
        case("2-bit values: the metadata eats the whole gain", 2),
    ]


def _bandwidth_hint(case: Case, got) -> str | None:
    (b,) = case.args
    got = _as_float(got)
    if got is None:
        return None
    rules = [
        (2.0, "2x ignores the metadata: a 2:4 matrix reads half the values PLUS a 2-bit position per kept value, "
              "1 bit per dense weight, so value_bits / 2 + 1 bits per weight against value_bits dense."),
        (b / (b / 2 + 0.5), "that uses 0.5 metadata bits per weight (2 bits per group of 4), a mistake found in the "
                            "wild: each of the 2 KEPT values has its own 2-bit position, 4 bits per group = 1 bit "
                            "per weight."),
        (b / (b / 2 + 2), "that gives every weight a 2-bit position; only the kept half stores one: 1 bit per "
                          "dense weight."),
        (b / (b / 2 + 4), "4 bits of metadata is per GROUP of 4 weights: 1 bit per weight."),
        (b / (b / 2 + 1 / 8), "bits and bytes are mixed: the metadata is 1 BIT per weight (1/8 is its size in "
                              "bytes), and value_bits is in bits: value_bits / (value_bits / 2 + 1)."),
        ((b / 2 + 1) / b, "that is 2:4 bytes over dense bytes (the compression ratio); the speedup of a "
                          "memory-bound product is dense bytes over 2:4 bytes, its reciprocal."),
        (b / 2 + 1, "that is the bits read per weight by the 2:4 matrix; divide the dense bits, value_bits, by it."),
    ]
    for v, msg in rules:
        if _close(got, v) and not _close(case.expected, v):
            return msg
    return None


register(Checker(
    name="ch08.bandwidth_24", chapter=8, kind="function",
    summary="bandwidth_speedup_24(value_bits): bandwidth-bound (decoding) speedup (float) of a 2:4 matrix over "
            "dense, each value of value_bits bits: dense bits read per weight over 2:4 bits incl. metadata",
    make_cases=_bandwidth_cases, hint=_bandwidth_hint,
))


# ----------------------------------------------------------------------------- 4. where CSR overtakes dense
def _crossover_cases() -> list[Case]:
    names = ("sparsities", "t_dense", "t_csr")

    def case(label, xs, dense, csr):
        return Case(label, (xs, dense, csr), expected=ref.crossover(xs, dense, csr), arg_names=names)

    return [
        case("CPU decoding, times in ms: dense ~1 ms with noise, CSR falling; crossing between 0.8 and 0.9",
             [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99],
             [1.02, 0.99, 1.01, 1.00, 0.98, 1.01, 0.99],
             [4.1, 3.3, 2.45, 1.62, 0.83, 0.44, 0.11]),
        case("a GPU's dense kernel is fast: CSR never catches up (None)",
             [0.5, 0.7, 0.9, 0.95, 0.99],
             [0.21, 0.21, 0.20, 0.21, 0.21],
             [2.9, 1.8, 0.75, 0.46, 0.25]),
        case("CSR already faster at the first measured sparsity",
             [0.9, 0.95, 0.98, 0.99],
             [1.0, 1.01, 0.99, 1.0],
             [0.8, 0.45, 0.2, 0.1]),
        case("noisy: CSR dips below dense at 0.8, is slower again at 0.85, faster for good from 0.9",
             [0.6, 0.7, 0.8, 0.85, 0.9, 0.95],
             [1.0, 1.01, 0.99, 1.0, 1.02, 1.0],
             [1.6, 1.2, 0.97, 1.05, 0.8, 0.5]),
        case("equal times at 0.9: the crossing is 0.9",
             [0.7, 0.8, 0.9, 0.95],
             [1.0, 1.0, 1.0, 1.0],
             [1.8, 1.4, 1.0, 0.6]),
        case("two measurements only, dense time rising too",
             [0.5, 0.9],
             [1.0, 1.2],
             [2.0, 0.5]),
    ]


def _brackets(xs, dense, csr) -> list[tuple[float, float, float, float]]:
    """Every (x0, x1, d0, d1) with d = t_csr - t_dense going from >= 0 to < 0: the crossings, in order."""
    d = [c - t for c, t in zip(csr, dense)]
    return [(xs[i], xs[i + 1], d[i], d[i + 1]) for i in range(len(xs) - 1) if d[i + 1] < 0 <= d[i]]


def _crossover_hint(case: Case, got) -> str | None:
    xs, dense, csr = case.args
    exp = case.expected
    if exp is None:
        if got is None:
            return None
        return ("CSR is never faster than dense here (t_csr >= t_dense at every measured sparsity): return None, "
                "not a number; a crossing beyond the measured range was not measured.")
    if got is None:
        if exp == xs[0]:
            return ("CSR is already faster at the first sparsity (t_csr[0] < t_dense[0]): return sparsities[0]; "
                    "there is no change of sign to find.")
        return "CSR does become faster than dense here: return the interpolated sparsity; None only if it never does."
    got = _as_float(got)
    if got is None:
        return None
    if exp == xs[0]:
        return "CSR is already faster at the first sparsity: return sparsities[0]."
    brackets = _brackets(xs, dense, csr)
    (x0, x1, d0, d1), later = brackets[0], brackets[1:]
    i0 = xs.index(x0)
    rules = [
        (x1, f"that is the first MEASURED sparsity where CSR is faster ({x1:g}); the crossing lies between {x0:g} "
             "and it: interpolate linearly, x0 + (x1 - x0) * d0 / (d0 - d1) with d = t_csr - t_dense."),
        (x0, f"that is the last measured sparsity where CSR is still slower ({x0:g}); the crossing lies between it "
             f"and {x1:g}: interpolate linearly, x0 + (x1 - x0) * d0 / (d0 - d1) with d = t_csr - t_dense."),
        (x0 + (x1 - x0) * -d1 / (d0 - d1),
         "the interpolation weights are swapped: the crossing is NEARER the point where t_csr - t_dense is closer "
         "to 0: x0 + (x1 - x0) * d0 / (d0 - d1)."),
        ((x0 + x1) / 2, "that is the midpoint of the two measured sparsities; interpolate linearly where "
                        "t_csr - t_dense reaches 0."),
        (100 * exp, "give the sparsity as a fraction, like the inputs, not a percentage."),
    ]
    for t_ref in (dense[i0], dense[i0 + 1]):  # the CSR segment cut with one dense time, not the dense segment
        c0, c1 = csr[i0], csr[i0 + 1]
        rules.append((x0 + (x1 - x0) * (c0 - t_ref) / (c0 - c1),
                      "interpolate the DIFFERENCE t_csr - t_dense: the dense time was measured at both points too, "
                      "and both curves change between them."))
    for y0, y1, e0, e1 in later:
        for v in (y0 + (y1 - y0) * e0 / (e0 - e1), y1):
            rules.append((v, f"CSR is faster from {x1:g} on, slower again at {y0:g} (noise) and faster again: the "
                             f"FIRST crossing counts, between {x0:g} and {x1:g}."))
    for v, msg in rules:
        if _close(got, v) and not _close(exp, v):
            return msg
    if float(got).is_integer() and 0 <= got < len(xs) and not any(float(x).is_integer() for x in xs):
        return "return the sparsity itself (a fraction), not its index in `sparsities`."
    return None


register(Checker(
    name="ch08.csr_crossover", chapter=8, kind="function",
    summary="csr_crossover(sparsities, t_dense, t_csr): sparsity (float) where CSR first gets faster than dense, "
            "linear between the two measured points around the FIRST crossing; sparsities[0] if faster there, "
            "None if never",
    make_cases=_crossover_cases, hint=_crossover_hint,
))


# ----------------------------------------------------------------------------- 5. prediction: the decoding roof
def _roofline_cases() -> list[Case]:
    names = ("n_weights", "bytes_per_weight", "bandwidth_gb_s")

    def case(label, n, b, bw):
        return Case(label, (n, b, bw), expected=ref.decode_time_bound(n, b, bw), arg_names=names)

    b24 = ref.bytes_per_weight("2:4", 2)  # 1.125 bytes: half the fp16 values + 1 bit of metadata
    return [
        case("the book's SmolLM2-135M (134.5M weights) in fp32 on a laptop's 50 GB/s", 134_500_000, 4, 50.0),
        case("the same model in fp16 on an H200 (4800 GB/s)", 134_500_000, 2, 4800.0),
        case("a 7B model in fp16 on 1000 GB/s", 7_000_000_000, 2, 1000.0),
        case("the 7B model in 2:4 fp16: 1.125 bytes per weight (speedup.bytes_per_weight('2:4'))",
             7_000_000_000, b24, 1000.0),
        case("the 7B model in int4: 0.5 bytes per weight", 7_000_000_000, 0.5, 1000.0),
        case("one 1000x1000 fp32 matrix on 25.6 GB/s", 1_000_000, 4, 25.6),
    ]


def _roofline_hint(case: Case, got) -> str | None:
    got = _as_float(got)
    if got is None:
        return None
    exp = case.expected
    rules = [
        (exp * 1e9 / 2**30, "GB/s here means 1e9 bytes per second (decimal, as memory bandwidth is quoted and "
                            "measured), not 2**30 (GiB)."),
        (exp * 1e-3, "that is seconds; the question asks for milliseconds (x 1000)."),
        (exp * 1e3, "that is microseconds; the question asks for milliseconds."),
        (exp * 8, "bytes_per_weight is already in bytes and the bandwidth in bytes per second: no factor 8 (bits)."),
        (exp / 8, "bytes_per_weight is already in bytes: don't divide by 8."),
        (exp * 1e9, "bandwidth_gb_s is in GB/s: multiply it by 1e9 to get bytes per second."),
        (exp * 1e6, "bandwidth_gb_s is in GB/s: multiply it by 1e9 to get bytes per second (and x 1000 for ms)."),
        (1e3 / exp, "that is tokens per second (the reciprocal); the question asks for milliseconds per token."),
        (1 / exp, "that is the reciprocal: time = bytes read / bandwidth, in milliseconds."),
    ]
    for v, msg in rules:
        if _close(got, v):
            return msg
    return None


register(Checker(
    name="ch08.roofline_time", chapter=8, kind="function",
    summary="decode_time_bound(n_weights, bytes_per_weight, bandwidth_gb_s): lower bound in MILLISECONDS (float) "
            "per decoded token, every weight read once per token at bandwidth_gb_s GB/s (1 GB = 1e9 bytes)",
    make_cases=_roofline_cases, hint=_roofline_hint,
))
