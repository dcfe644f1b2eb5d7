"""Certificate and inversion success rates of a shipped MNIST generator (fully connected or convolutional).

    PYTHONPATH=. python benchmarks/mnist_report.py                      # full report (slow on 2 cores)
    PYTHONPATH=. python benchmarks/mnist_report.py --n 20 --methods gd hybrid
    PYTHONPATH=. python benchmarks/mnist_report.py --generator mnist-conv --n 100 --methods gd latent-pursuit hybrid

Writes benchmarks/results/<generator>_report.json (``mnist_report.json`` for ``mnist``): the
certificate summary over ``--n-cert`` latents z ~ N(0, I) (clean, and with the bottom half of the
image hidden), and per inversion method the success rate (latent relative error <= 1e-3), the exact
rate (<= 1e-6) overall and on the samples the certificate calls identifiable, the median latent
error and the wall time on ``--n`` clean and ``--n`` half-masked signals, with each method's time per
signal over gd's. Inversion runs in float64 on the float32 weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import geninv
from geninv.io import load_generator

RESULTS = Path(__file__).resolve().parent / "results" / "mnist_report.json"


def certificate_summary(G: geninv.Generator, n: int, mask: np.ndarray | None, seed: int) -> dict:
    start = time.perf_counter()
    cert = geninv.certify(G, G.sample_latent(n, seed=seed), mask)
    rows = cert.summary()
    # The verdicts name each sample's noise gain ("... noise x740"): count them by kind.
    kinds = [re.sub(r"x[\d,.]+", "x…", str(v)) for v in cert.verdict]
    verdicts, counts = np.unique(kinds, return_counts=True)
    gains = cert.noise_gain[np.isfinite(cert.noise_gain)]
    return {
        "samples": n,
        "steps": rows,
        "verdicts": {str(v): float(c) / n for v, c in zip(verdicts, counts)},
        "noise_gain_median": float(np.median(gains)) if gains.size else None,
        "condition_number_median": float(np.median(cert.condition_number[np.isfinite(cert.condition_number)]))
        if gains.size
        else None,
        "seconds": round(time.perf_counter() - start, 1),
    }


EXACT = 1e-6


def run_method(
    G: geninv.Generator,
    method: str,
    z: torch.Tensor,
    mask: np.ndarray | None,
    chunk: int,
    identifiable: np.ndarray | None = None,
) -> dict:
    errors, seconds, passes, statuses = [], 0.0, [], []
    for lo in range(0, z.shape[0], chunk):
        obs = geninv.observe(G, z[lo : lo + chunk], mask=mask)
        start = time.perf_counter()
        result = geninv.invert(G, obs, method=method, seed=0)
        seconds += time.perf_counter() - start
        errors.append(geninv.metrics.evaluate(result, obs)["latent_error"])
        passes.append(np.broadcast_to(np.asarray(result.forward_passes, dtype=float), (obs.y.shape[0],)))
        statuses += [str(getattr(s, "value", s)) for s in np.asarray(result.statuses).reshape(-1)]
    err = np.concatenate(errors)
    out_ident = {}
    if identifiable is not None:
        ident = np.asarray(identifiable, dtype=bool)
        out_ident = {
            "identifiable": int(ident.sum()),
            "exact_on_identifiable": int((err[ident] <= EXACT).sum()),
            "not_exact_on_identifiable": np.flatnonzero(ident & (err > EXACT)).tolist(),
        }
    return {
        "signals": int(err.size),
        "success_rate": geninv.metrics.success_rate(err),
        "exact_rate": geninv.metrics.success_rate(err, EXACT),
        **out_ident,
        "median_latent_error": float(np.median(err)),
        "p90_latent_error": float(np.quantile(err, 0.9)),
        "seconds_total": round(seconds, 1),
        "seconds_per_signal": round(seconds / err.size, 4),
        "forward_passes_median": float(np.median(np.concatenate(passes))),
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="signals per setting for the inversion methods")
    parser.add_argument("--n-cert", type=int, default=1000, help="latents for the certificate")
    parser.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    parser.add_argument("--chunk", type=int, default=50, help="signals per invert() call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="default: results/<generator>_report.json")
    parser.add_argument("--generator", choices=["mnist", "mnist-conv"], default="mnist")
    parser.add_argument(
        "--card", action="store_true", help="write the inversion table into the generator's model card (assets/)"
    )
    parser.add_argument("--from-json", type=Path, help="no run: take the report from this file (with --card)")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        report = json.loads(args.from_json.read_text())
        if args.card:
            write_card(report, args.generator)
        print(card_table(report))
        return report
    torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = RESULTS.with_name(f"{args.generator}_report.json")

    G = load_generator(args.generator, dtype=torch.float64)
    half = geninv.masks.half((28, 28))
    report: dict = {
        "generator": G.describe(),
        "machine": {"platform": platform.platform(), "threads": args.threads, "torch": torch.__version__},
        "command": "python3 benchmarks/mnist_report.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "success_threshold": geninv.metrics.DEFAULT_THRESHOLD,
    }
    report["certificate_clean"] = certificate_summary(G, args.n_cert, None, seed=1)
    print("certificate (clean):", report["certificate_clean"]["verdicts"], flush=True)
    report["certificate_half"] = certificate_summary(G, min(args.n_cert, args.n), half, seed=2)
    print("certificate (half):", report["certificate_half"]["verdicts"], flush=True)

    methods = args.methods or list(geninv.methods())
    report["methods"] = {}
    z = G.sample_latent(args.n, seed=2)  # the same latents as the half-mask certificate
    identifiable = {
        label: geninv.certify(G, z, mask).identifiable_network for label, mask in (("clean", None), ("half", half))
    }
    for method in methods:
        report["methods"][method] = {}
        for label, mask in (("clean", None), ("half", half)):
            row = run_method(G, method, z, mask, args.chunk, identifiable[label])
            gd_row = report["methods"].get("gd", {}).get(label)
            if gd_row is not None:
                row["gd_seconds_over_method"] = round(
                    gd_row["seconds_per_signal"] / max(row["seconds_per_signal"], 1e-9), 2
                )
            report["methods"][method][label] = row
            print(
                f"{method:15s} {label:5s} success {row['success_rate']:.3f}  median err "
                f"{row['median_latent_error']:.2e}  {row['seconds_total']:.1f} s",
                flush=True,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")  # partial results survive a stop
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.card:
        write_card(report, args.generator)
    print(card_table(report))
    return report


def card_table(report: dict) -> str:
    """The model card's inversion table, from a report (every number from the JSON)."""
    lines = [
        "| method | clean: success | clean: exact | clean: median error | clean: s/signal | gd / method "
        "| half: success | half: exact | half: median error | half: s/signal | gd / method |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, rows in report["methods"].items():
        cells = []
        for label in ("clean", "half"):
            r = rows[label]
            cells += [
                f"{100 * r['success_rate']:.1f}%",
                f"{100 * r['exact_rate']:.1f}%",
                f"{r['median_latent_error']:.1e}",
                f"{r['seconds_per_signal']:.3g}",
                f"{r.get('gd_seconds_over_method', 1.0 if method == 'gd' else float('nan')):.3g}",
            ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    n = next(iter(report["methods"].values()))["clean"]["signals"]
    machine = report["machine"]
    lines += [
        "",
        f"{n} clean and {n} half-masked signals (bottom half hidden), float64; success: latent error ≤ "
        f"{report['success_threshold']:g}, exact: ≤ {EXACT:g}. From `{report['command'].strip()}` "
        f"({machine['platform']}, torch {machine['torch']}, {machine['threads']} threads; times depend on the "
        "machine, the ratios gd / method much less).",
    ]
    return "\n".join(lines) + "\n"


def write_card(report: dict, generator: str) -> None:
    """Splice :func:`card_table` into assets/MODEL_CARD*.md between its inversion markers."""
    name = "MODEL_CARD.md" if generator == "mnist" else f"MODEL_CARD_{generator}.md"
    path = Path(__file__).resolve().parents[1] / "assets" / name
    text = path.read_text()
    begin, end = "<!-- inversion:begin -->", "<!-- inversion:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    path.write_text(f"{head}{begin}\n{card_table(report)}{end}{rest.split(end, 1)[1]}")
    print(f"wrote the inversion table into {path}")


if __name__ == "__main__":
    main()
