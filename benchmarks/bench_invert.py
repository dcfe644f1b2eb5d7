"""Every inversion method on the same batch, side by side: success, error, time, cost.

    python benchmarks/bench_invert.py                       # clean [20,128,392,784], batch 256
    python benchmarks/bench_invert.py --missing 0.6 --batch 256
    python benchmarks/bench_invert.py --batch 1024 --methods latent-pursuit hybrid
    python benchmarks/bench_invert.py --snr 20 --methods gd latent-pursuit hybrid   # with the oracle

Writes benchmarks/results/bench_invert_<case>.json. Times are wall-clock on this machine; the
ratios (against gd, and against the cvxpy reference solve of the same layer-wise problem) are the
numbers to compare across machines. Forward-pass equivalents: wall time / time of one batched
forward pass (see geninv.inversion._layerwise.forward_seconds); gd counts 3 per iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import geninv
from geninv.inversion._layerwise import forward_seconds
from geninv.metrics import latent_error, success_rate


def reference_seconds(G, obs, n: int) -> float:
    """Seconds per signal of latent-pursuit's steps solved by cvxpy (CLARABEL) on ``n`` signals."""
    from geninv.inversion._layerwise import hidden_problem, output_problem
    from geninv.solvers.reference import constrained_lstsq

    sub = obs[0:n]
    start = time.perf_counter()
    p = output_problem(G, sub)
    estimates = {}
    for layer in range(G.n_layers - 1, -1, -1):
        if layer < G.n_layers - 1:
            p = hidden_problem(G, layer, estimates[layer + 1])
        w = p.weight.numpy()
        xs = []
        for b in range(n):
            rows, off = p.rows[b].numpy(), p.off_rows[b].numpy()
            t = p.shifted_target[b].numpy()
            xs.append(constrained_lstsq(w[rows], t[rows], nonneg=p.nonneg, ineq_a=w[off], ineq_b=t[off]))
        x = torch.from_numpy(np.stack(xs))
        if p.nonneg:
            x = torch.where(x > 1e-6 * x.abs().amax(-1, keepdim=True), x, torch.zeros_like(x))
        estimates[layer] = x
    return (time.perf_counter() - start) / n


def run_case(
    *,
    widths: list[int],
    batch: int = 256,
    missing: float = 0.0,
    snr: float | None = None,
    methods: list[str] | None = None,
    lp_batch: int = 16,
    reference: int = 8,
    threshold: float = 1e-6,
    device: str = "cpu",
    verbose: bool = True,
) -> dict:
    """Run one benchmark case (every method on the same batch); returns the JSON-ready result."""
    G = geninv.Generator.random(widths, seed=0, device=device)
    mask = geninv.masks.random_pixels(widths[-1], missing, seed=2) if missing else None
    z = G.sample_latent(batch, seed=1)
    obs = geninv.observe(G, z, mask=mask, snr_db=snr, seed=3)
    methods = methods or list(geninv.methods())
    t_fwd = forward_seconds(G, batch)
    rows = {}
    for method in methods:
        sub = obs if method != "lp" else obs[0:lp_batch]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            geninv.invert(G, sub[0:2], method)  # warm-up
            res = geninv.invert(G, sub, method)
        err = latent_error(res.z_hat, sub.z_true)
        rows[method] = {
            "signals": sub.batch_size,
            "success": success_rate(err, threshold),
            "median_latent_error": float(err.median()),
            "seconds_per_signal": res.seconds / sub.batch_size,
            "forward_pass_equivalents": res.forward_passes
            if method in ("gd", "plugin")
            else res.seconds / forward_seconds(G, sub.batch_size),
            "status": res.status.value,
        }
        if verbose:
            print(f"{method:15s} {rows[method]}")
    if snr is not None:
        # With noise nothing is exact: the reference is least squares on the true pattern.
        from geninv.inversion.oracle import oracle_latent

        oracle = float(latent_error(oracle_latent(G, obs), obs.z_true).median())
        for row in rows.values():
            row["error_vs_oracle"] = row["median_latent_error"] / oracle
        rows["oracle"] = {"signals": batch, "median_latent_error": oracle}
    if "gd" in rows:
        for row in rows.values():
            if "seconds_per_signal" in row:
                row["time_vs_gd"] = row["seconds_per_signal"] / rows["gd"]["seconds_per_signal"]
    ref = reference_seconds(G, obs, min(reference, batch)) if reference and snr is None else None
    if ref is not None:
        for method in ("latent-pursuit", "hybrid", "lbp"):
            if method in rows:
                rows[method]["speedup_vs_cvxpy_reference"] = ref / rows[method]["seconds_per_signal"]
    return {
        "case": {"widths": widths, "batch": batch, "missing": missing, "snr_db": snr},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "device": str(G.device),
            "torch_threads": torch.get_num_threads(),
        },
        "forward_pass_seconds_batch": t_fwd,
        "cvxpy_reference_seconds_per_signal": ref,
        "threshold": threshold,
        "methods": rows,
    }


def case_name(widths: list[int], batch: int, missing: float, snr: float | None = None) -> str:
    """File-name stem of a case: ``20-128-392-784_b256_m0.6[_snr20]``."""
    return f"{'-'.join(map(str, widths))}_b{batch}_m{missing:g}" + (f"_snr{snr:g}" if snr else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="20-128-392-784")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--missing", type=float, default=0.0)
    parser.add_argument("--snr", type=float, default=None)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--lp-batch", type=int, default=16, help="lp solves one HiGHS program per signal")
    parser.add_argument("--reference", type=int, default=8, help="signals for the cvxpy reference timing")
    parser.add_argument("--threshold", type=float, default=1e-6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    widths = [int(w) for w in args.widths.split("-")]
    result = run_case(
        widths=widths,
        batch=args.batch,
        missing=args.missing,
        snr=args.snr,
        methods=args.methods,
        lp_batch=args.lp_batch,
        reference=args.reference,
        threshold=args.threshold,
        device=args.device,
    )
    case = case_name(widths, args.batch, args.missing, args.snr)
    out = Path(args.out or f"benchmarks/results/bench_invert_{case}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
