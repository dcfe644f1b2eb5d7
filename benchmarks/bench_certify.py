"""The certificate of the shipped MNIST decoder, and what ``certify`` costs.

For 200 latents (float64), clean and with the bottom half hidden: how many samples are identifiable
(layer by layer, and as a whole network), the median end-to-end noise gain, condition number and
product of the step gains, and the oracle's latent error at 20 dB predicted by the certificate
against the one measured (least squares on the true pattern, ``oracle_latent``). Then the wall time
of ``certify`` against the batch size (torch threads by the policy). Writes
``benchmarks/results/certify.json``.

Usage::

    python benchmarks/bench_certify.py
    python benchmarks/bench_certify.py --samples 50 --sizes 1 10 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import geninv
from geninv import _threads
from geninv.inversion.oracle import oracle_latent
from geninv.metrics import latent_error

OUT = Path(__file__).parent / "results" / "certify.json"


def certificate_stats(generator, z, mask, snr_db: float, seed: int) -> dict[str, object]:
    """Identifiability, gains and predicted against measured oracle error for one corruption."""
    cert = geninv.certify(generator, z, mask=mask)
    obs = geninv.observe(generator, z, mask=mask, snr_db=snr_db, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z_oracle = oracle_latent(generator, obs)
    measured = latent_error(z_oracle, z).numpy()
    predicted = cert.predicted_error(obs.noise_sigma)
    moved = measured > 0  # the oracle is its own estimate, never the truth: every sample, unless exact
    ratio = measured[moved] / predicted[moved]
    kinds = [re.sub(r"noise x[0-9,.e+]+", "noise xK", v) for v in cert.verdict]  # K: the condition number
    verdicts, counts = np.unique(kinds, return_counts=True)
    return {
        "samples": int(z.shape[0]),
        "identifiable_layerwise": float(np.mean(cert.identifiable)),
        "identifiable_network": float(np.mean(cert.identifiable_network)),
        "stable": float(np.mean(cert.stable)),
        "noise_gain_median": float(np.median(cert.noise_gain)),
        "condition_median": float(np.median(cert.condition_number)),
        "step_gains_median": [float(np.median(g)) for g in cert.step_gains],
        "step_gain_product_median": float(np.median(cert.step_gain_product)),
        "snr_db": snr_db,
        "sigma_median": float(obs.noise_sigma.median()),
        "predicted_error_median": float(np.median(predicted)),
        "measured_error_median": float(np.median(measured)),
        "oracle_moved": int(moved.sum()),
        "ratio_median": float(np.median(ratio)) if moved.any() else None,
        "ratio_within_2": float(np.mean((ratio > 0.5) & (ratio < 2))) if moved.any() else None,
        "verdicts": {str(v): int(c) for v, c in zip(verdicts, counts)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 55, 56, 100, 300, 1000])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    G = geninv.load_generator("mnist").double()
    z = G.sample_latent(args.samples, seed=1)
    corruptions = {"clean": None, "bottom half hidden": geninv.masks.half((28, 28), hide="bottom")}
    stats = {}
    for name, mask in corruptions.items():
        stats[name] = certificate_stats(G, z, mask, snr_db=20.0, seed=2)
        print(name, json.dumps(stats[name]), flush=True)
    timings = []
    for batch in args.sizes:
        zb = G.sample_latent(batch, seed=3)
        threads = _threads.policy_threads(_threads.forward_macs(G, batch))  # what certify will use
        start = time.perf_counter()
        geninv.certify(G, zb)
        seconds = time.perf_counter() - start
        timings.append(
            {
                "batch": batch,
                "seconds": seconds,
                "ms_per_signal": 1000 * seconds / batch,
                "threads": threads,
                "load_average": os.getloadavg()[0],
            }
        )
        print(json.dumps(timings[-1]), flush=True)
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}
    result = {"machine": machine, "generator": "mnist float64", "certificate": stats, "timings": timings}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
