"""Benchmark of the layer-wise driver on the embedded default model (issue 3, "Speed").

Measures, on the embedded SmolLM2-135M copy with ``--calib`` windows of ``--seqlen`` tokens (default 32 x 512):

- the floor: two forward passes of the calibration set through the decoder blocks (what any layer-wise method
  must at least do: one pass to collect statistics, one to propagate the pruned outputs), timed right before
  each method;
- Wanda and SparseGPT whole-model times (``prune_model``, 50% unstructured), with their phases (capture of the
  block-0 inputs, statistics pass, per-matrix pruning, propagate pass);
- the ratios Wanda / floor (target <= 1.1) and SparseGPT / Wanda (target <= 1.2);
- peak resident memory of the process (``resource.getrusage``; target < 2.5 GB) after pruning and at the end;
- perplexities (dense, Wanda, SparseGPT) on ``--windows`` held-out windows.

Run:  .venv/bin/python benchmarks/bench_prune.py [--calib 32 --seqlen 512 --windows 16]
Timings are wall-clock and sensitive to other processes on the machine: the load average is printed with them,
``--repeat N`` keeps the best of N runs, and the "in-run floor" (twice the driver's own propagate pass, scaled to
all blocks) is measured under the same conditions as the method it is compared with.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import torch

from pruning_lab.llm import calibration_windows, eval_tokens, load_default, perplexity, prune_model
from pruning_lab.llm.data import embedded_text
from pruning_lab.llm.driver import _capture_inputs, _first, find_decoder_blocks


def peak_rss_gb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb * 1024 / 1e9 if sys.platform != "darwin" else kb / 1e9


@torch.no_grad()
def floor_seconds(model, calib: torch.Tensor) -> float:
    """Two forward passes of the calibration set through every decoder block, one window at a time, as the
    driver runs them (block-0 inputs captured first and not timed)."""
    _, blocks = find_decoder_blocks(model)
    inps, kwargs = _capture_inputs(model, blocks, calib, 1)
    kw = kwargs[1]
    t0 = time.perf_counter()
    for _ in range(2):
        x, out = inps.clone(), torch.empty_like(inps)
        for block in blocks:
            for i in range(x.shape[0]):
                out[i : i + 1] = _first(block(x[i : i + 1], **kw))
            x, out = out, x
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calib", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--windows", type=int, default=16, help="evaluation windows (0: skip perplexities)")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=1, help="repeat every timing and keep the best (noisy machines)")
    args = p.parse_args(argv)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    model, tok = load_default()
    print(f"load_default: {time.perf_counter() - t0:.2f} s (first call in this process)", flush=True)
    calib = calibration_windows(tok, args.calib, args.seqlen, seed=0)
    test = eval_tokens(tok)
    print(embedded_text().summary())
    print(f"calibration {tuple(calib.shape)}; evaluation {args.windows} windows x {args.seqlen} tokens", flush=True)

    ppl = {}
    if args.windows:
        ppl["dense"] = perplexity(model, test, args.seqlen, max_windows=args.windows)
    del model  # one model in memory at a time
    runs: dict[str, list[dict]] = {"wanda": [], "sparsegpt": []}
    floors: list[float] = []
    for rep in range(args.repeat):
        for method in ("wanda", "sparsegpt"):
            model, _ = load_default()
            floors.append(floor_seconds(model, calib))
            print(f"[{rep + 1}/{args.repeat}] floor: {floors[-1]:.1f} s (load average {os.getloadavg()[0]:.2f})",
                  flush=True)
            report = prune_model(model, method, args.sparsity, "unstructured", calib, progress=False)
            ph = report["times_s"]
            # the floor measured inside the same run: the propagate pass IS one forward pass of the calibration set
            # through every block but the last, so two passes through all 30 blocks = 2 * propagate * 30 / 29
            nblocks = len(find_decoder_blocks(model)[1])
            in_run_floor = 2 * ph["propagate"] * nblocks / (nblocks - 1)
            runs[method].append(dict(time=report["time_s"], phases=ph, in_run_floor=in_run_floor, rss=peak_rss_gb()))
            print(f"[{rep + 1}/{args.repeat}] {method}: {report['time_s']:.1f} s (stats {ph['stats']:.1f}, prune "
                  f"{ph['prune']:.1f}, propagate {ph['propagate']:.1f}); sparsity {report['total_sparsity']:.4f}; "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
            if args.windows and rep == 0:
                ppl[method] = perplexity(model, test, args.seqlen, max_windows=args.windows)
            del model

    best = {m: min(r, key=lambda x: x["time"]) for m, r in runs.items()}
    floor = min(floors)
    print()
    print(f"best of {args.repeat} run(s) per measurement; floor = two forward passes of the calibration set "
          f"through the decoder blocks = {floor:.1f} s")
    print(f"{'method':<10} {'time (s)':>9} {'/floor':>7} {'in-run floor':>13} {'/in-run':>8} {'capture':>8} "
          f"{'stats':>7} {'prune':>7} {'propag.':>8} {'peak RSS':>9} {'ppl':>8}")
    for method, r in best.items():
        ph = r["phases"]
        print(f"{method:<10} {r['time']:>9.1f} {r['time'] / floor:>7.2f} {r['in_run_floor']:>13.1f} "
              f"{r['time'] / r['in_run_floor']:>8.2f} {ph['capture']:>8.1f} {ph['stats']:>7.1f} {ph['prune']:>7.1f} "
              f"{ph['propagate']:>8.1f} {r['rss']:>8.2f}G {ppl.get(method, float('nan')):>8.2f}")
    if "dense" in ppl:
        print(f"{'dense':<10} {'':>9} {'':>7} {'':>13} {'':>8} {'':>8} {'':>7} {'':>7} {'':>8} {'':>9} "
              f"{ppl['dense']:>8.2f}")
    w, s = best["wanda"], best["sparsegpt"]
    print()
    print(f"Wanda / floor     = {w['time'] / floor:.2f}   (target <= 1.1; against the in-run floor: "
          f"{w['time'] / w['in_run_floor']:.2f})")
    print(f"SparseGPT / Wanda = {s['time'] / w['time']:.2f}   (target <= 1.2)")
    print(f"SparseGPT / floor = {s['time'] / floor:.2f}")
    print(f"peak RSS          = {peak_rss_gb():.2f} GB (target < 2.5 GB; after pruning: "
          f"{max(r['rss'] for rr in runs.values() for r in rr):.2f} GB)")
    print(f"load average at end {os.getloadavg()[0]:.2f} (2 CPUs: above ~2, other processes compete and "
          "2-thread torch slows down sharply; rerun on a quiet machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
