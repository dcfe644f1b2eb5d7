"""CUDA check: every method on the GPU (device follows the generator), results against the CPU.

    python3 benchmarks/gpu_check.py            # needs a CUDA device; prints one line per case

For each method and case (clean, 60% missing, 20 dB noise) on Generator.random([20, 128, 392, 784])
in float64 (and latent-pursuit and the hybrid on [64, 512, 2048, 8192], clean, whose mid layer
goes by conjugate gradients): the device of z_hat, the success rate at 1e-6 (clean / masked) and the median latent
error, run on CUDA and on the CPU with the same seed. Exit status 1 if a method fails on CUDA.
"""

from __future__ import annotations

import json
import sys
import warnings

import torch

import geninv
from geninv.metrics import latent_error, success_rate

ALL_METHODS = ("gd", "plugin", "latent-pursuit", "lbp", "hybrid")


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    rows, failed = [], False
    for device in ("cuda", "cpu"):
        G = geninv.Generator.random([20, 128, 392, 784], seed=0, device=device)
        z = G.sample_latent(64, seed=1)
        cases = {
            "clean": geninv.observe(G, z),
            "60% missing": geninv.observe(G, z, mask=geninv.masks.random_pixels(784, 0.6, seed=2)),
            "20 dB": geninv.observe(G, z, snr_db=20, seed=3),
        }
        # The wider generator's mid layer (2,048 x 512) takes the conjugate-gradient route (krylov_pays).
        wide = geninv.Generator.random([64, 512, 2048, 8192], seed=0, device=device)
        cases["wide, clean"] = geninv.observe(wide, wide.sample_latent(64, seed=1))
        for case, obs in cases.items():
            gen = wide if case.startswith("wide") else G
            methods = ("latent-pursuit", "hybrid") if gen is wide else ALL_METHODS
            for method in methods:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        res = geninv.invert(gen, obs, method)
                    except Exception as exc:  # report every failure, keep going
                        failed |= device == "cuda"
                        rows.append({"device": device, "case": case, "method": method, "error": repr(exc)[:200]})
                        print(rows[-1], flush=True)
                        _write(rows)
                        continue
                err = latent_error(res.z_hat, obs.z_true)
                row = {
                    "device": device,
                    "case": case,
                    "method": method,
                    "z_hat_device": str(res.z_hat.device),
                    "success_1e-6": success_rate(err, 1e-6),
                    "median_latent_error": float(err.median()),
                    "seconds": round(res.seconds, 3),
                    "statuses": {str(s): int((res.statuses == s).sum()) for s in set(res.statuses.tolist())},
                }
                failed |= device == "cuda" and res.z_hat.device.type != "cuda"
                rows.append(row)
                print(row, flush=True)
                _write(rows)  # after every row: a run stopped at a time limit keeps what it measured
    return int(failed)


def _write(rows: list[dict]) -> None:
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
