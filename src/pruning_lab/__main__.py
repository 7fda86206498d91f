"""Command line: ``python -m pruning_lab prune | evaluate | table`` (Chapters 1, 4, 5, 7).

Examples::

    python -m pruning_lab evaluate --model default
    python -m pruning_lab prune --model default --method sparsegpt --sparsity 0.5 --pattern 2:4 --save pruned/
    python -m pruning_lab evaluate --model pruned/
    python -m pruning_lab table                       # dense vs magnitude/random/wanda/sparsegpt, 3 patterns

Offline, ``--model default`` is the embedded 4-bit copy of SmolLM2-135M-Instruct with the embedded text (see
``pruning_lab.llm``); online, any hub causal LM with ``--calib-source c4 --eval-source wikitext2`` reproduces the
papers' protocol (128 windows of 2048 tokens, WikiText-2 test).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

METHODS = ("magnitude", "magnitude_global", "random", "wanda", "sparsegpt")
DEFAULT_SEQLEN = 512  # the embedded model and text: 512-token windows (hub models: min(2048, context))


def _pattern(value: str) -> str:
    from .nm import parse_pattern

    try:
        nm = parse_pattern(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return "unstructured" if nm is None else f"{nm[0]}:{nm[1]}"


def _sparsity(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1); got {value!r}") from None
    if not 0.0 <= s < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (0 = keep everything); got {value!r}")
    return s


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value!r}")
    return n


def _nonneg(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; got {value!r}")
    return n


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="'default' (embedded SmolLM2-135M Q4_1 copy, offline), a folder written by --save / "
                        "save_pretrained, or a Hugging Face hub name such as facebook/opt-125m (needs internet)")
    p.add_argument("--seqlen", type=_positive, default=None,
                   help=f"tokens per window (default {DEFAULT_SEQLEN} for the embedded model, else min(2048, context))")
    p.add_argument("--eval-source", choices=("embedded", "wikitext2"), default="embedded",
                   help="evaluation text: the embedded held-out split, or WikiText-2 test (needs `datasets`, internet)")
    p.add_argument("--windows", type=_nonneg, default=16,
                   help="evaluate on the first N non-overlapping windows (0 = all of them; default 16)")


def _add_calib_args(p: argparse.ArgumentParser, calib_default: int) -> None:
    p.add_argument("--calib", type=_positive, default=calib_default,
                   help=f"number of calibration windows (default {calib_default}; the papers use 128 x 2048)")
    p.add_argument("--calib-source", choices=("embedded", "c4"), default="embedded",
                   help="calibration text: the embedded calibration split, or C4 (needs `datasets`, internet)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows and of random pruning")
    p.add_argument("--blocksize", type=_positive, default=128, help="SparseGPT columns per block (default 128)")
    p.add_argument("--percdamp", type=float, default=0.01, help="SparseGPT dampening, fraction of mean diag(H)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pruning_lab",
        description="Prune and evaluate causal language models layer by layer (the Pruning Lab workbench).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="prune a model and report its sparsity, time and perplexity")
    _add_model_args(p)
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--sparsity", type=_sparsity, default=None,
                   help="fraction of weights removed, in [0, 1) (default 0.5; fixed at 1-N/M by an N:M pattern)")
    p.add_argument("--pattern", type=_pattern, default="unstructured",
                   help="'unstructured' or N:M (N kept of every M consecutive inputs), e.g. 2:4 or 4:8")
    _add_calib_args(p, 32)
    p.add_argument("--save", metavar="DIR", default=None,
                   help="write the pruned model, its tokenizer and pruning_report.json to DIR (save_pretrained)")

    p = sub.add_parser("evaluate", help="perplexity and sparsity of a model")
    _add_model_args(p)

    p = sub.add_parser("table", help="the standard comparison: dense and every method x pattern, one table")
    _add_model_args(p)
    p.add_argument("--sparsity", type=_sparsity, default=0.5, help="unstructured sparsity (default 0.5)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["magnitude", "random", "wanda", "sparsegpt"])
    p.add_argument("--patterns", nargs="+", type=_pattern, default=["unstructured", "2:4", "4:8"])
    _add_calib_args(p, 32)
    p.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON")
    return parser


def _seqlen(args, model) -> int:
    if args.seqlen is not None:
        return args.seqlen
    if args.model == "default":
        return DEFAULT_SEQLEN
    ctx = getattr(model.config, "max_position_embeddings", None) or 2048
    return int(min(2048, ctx))


def _load(parser, args):
    from .llm import load_model

    t0 = time.perf_counter()
    try:
        model, tok = load_model(args.model)
    except ValueError as exc:
        parser.error(str(exc))
    except ModuleNotFoundError as exc:
        parser.error(str(exc))
    print(f"model: {args.model} ({type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          f"parameters) loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    return model, tok


def _eval_tokens(args, tok):
    from .llm import eval_tokens
    from .llm.data import embedded_text

    tokens = eval_tokens(tok, source=args.eval_source)
    if args.eval_source == "embedded":
        print(f"text: {embedded_text().summary()}", flush=True)
    return tokens


def _calibration(args, tok, seqlen):
    from .llm import calibration_windows

    return calibration_windows(tok, args.calib, seqlen, source=args.calib_source, seed=args.seed)


def _ppl(model, tokens, seqlen, windows) -> float:
    from .llm import perplexity

    return perplexity(model, tokens, seqlen, max_windows=windows or None)


def _eval_settings(args, seqlen, tokens) -> str:
    k = tokens.numel() // seqlen
    used = min(k, args.windows) if args.windows else k
    return f"{args.eval_source} eval, {used} windows x {seqlen} tokens"


def cmd_evaluate(parser, args) -> int:
    from .llm import check_sparsity

    model, tok = _load(parser, args)
    seqlen = _seqlen(args, model)
    tokens = _eval_tokens(args, tok)
    t0 = time.perf_counter()
    ppl = _ppl(model, tokens, seqlen, args.windows)
    sp = check_sparsity(model)
    print(f"perplexity {ppl:.3f} ({_eval_settings(args, seqlen, tokens)}; {time.perf_counter() - t0:.1f} s); "
          f"sparsity of the decoder linears {sp['total']:.4f}")
    return 0


def cmd_prune(parser, args) -> int:
    from .llm import prune_model

    pattern = args.pattern
    sparsity = args.sparsity
    if pattern != "unstructured":
        n, m = map(int, pattern.split(":"))
        if sparsity is not None and abs(sparsity - (1 - n / m)) > 1e-9:
            parser.error(f"--sparsity {sparsity} contradicts --pattern {pattern} (which fixes it at {1 - n / m:g})")
        sparsity = 1 - n / m
    elif sparsity is None:
        sparsity = 0.5
    model, tok = _load(parser, args)
    seqlen = _seqlen(args, model)
    calib = _calibration(args, tok, seqlen) if args.method in ("wanda", "sparsegpt") else None
    try:
        report = prune_model(model, args.method, sparsity, pattern, calib, blocksize=args.blocksize,
                             percdamp=args.percdamp, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    settings = f"calibration {args.calib} x {seqlen} tokens ({args.calib_source}, seed {args.seed})" if calib is not None \
        else "no calibration data"
    print(f"pruned: {args.method} {report['pattern']} target {report['sparsity']:.4f}, measured "
          f"{report['total_sparsity']:.4f}, {report['time_s']:.1f} s; {settings}"
          + (f"; N:M valid: {report['nm_valid']}" if "nm_valid" in report else ""), flush=True)
    tokens = _eval_tokens(args, tok)
    ppl = _ppl(model, tokens, seqlen, args.windows)
    report["perplexity"] = ppl
    print(f"perplexity {ppl:.3f} ({_eval_settings(args, seqlen, tokens)})")
    if args.save:
        from pathlib import Path

        out = Path(args.save)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        (out / "pruning_report.json").write_text(json.dumps(report, indent=2))
        print(f"saved to {out} (load with AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0


def cmd_table(parser, args) -> int:
    from .llm import run_grid

    model, tok = _load(parser, args)
    seqlen = _seqlen(args, model)
    tokens = _eval_tokens(args, tok)
    calib = _calibration(args, tok, seqlen)
    print(f"settings: calibration {args.calib} x {seqlen} tokens ({args.calib_source}, seed {args.seed}); "
          f"{_eval_settings(args, seqlen, tokens)}; SparseGPT blocksize {args.blocksize}, percdamp {args.percdamp}")
    header = f"{'method':<17} {'pattern':<13} {'sparsity':>8} {'perplexity':>12} {'prune time (s)':>15}"
    print(header)
    print("-" * len(header), flush=True)
    rows = []

    def emit(method, pattern, sparsity, ppl, secs):
        rows.append(dict(method=method, pattern=pattern, sparsity=sparsity, perplexity=ppl, prune_time_s=secs))
        secs_s = "-" if secs is None else f"{secs:.1f}"
        ppl_s = f"{ppl:.2f}" if ppl < 1e6 else f"{ppl:.2e}"
        print(f"{method:<17} {pattern:<13} {sparsity:>8.4f} {ppl_s:>12} {secs_s:>15}", flush=True)

    runs = [dict(method=method, pattern=pattern, sparsity=0.5 if pattern != "unstructured" else args.sparsity,
                 blocksize=args.blocksize, percdamp=args.percdamp, seed=args.seed)
            for pattern in args.patterns for method in args.methods
            if not (method == "magnitude_global" and pattern != "unstructured")]
    run_grid(model, runs, eval_tokens=tokens, seqlen=seqlen, calibration=calib,
             max_windows=args.windows or None,
             callback=lambda r: emit(r["method"], r["pattern"], r["measured_sparsity"], r["perplexity"],
                                     r["prune_time_s"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": vars(args) | {"seqlen": seqlen}, "rows": rows}, fh, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return {"prune": cmd_prune, "evaluate": cmd_evaluate, "table": cmd_table}[args.command](parser, args)


if __name__ == "__main__":
    sys.exit(main())
