"""Markdown summary of the GPU runs in benchmarks/results/gpu/ (made on a lent H100, never in CI).

    python3 benchmarks/gpu_check.py benchmarks/results/gpu/gpu_check.json          # on the GPU machine
    python3 benchmarks/bench_invert.py --device cuda --reference 0 --batch 256 \\
        --methods gd plugin latent-pursuit hybrid --out benchmarks/results/gpu/gpu_clean_b256.json
    python3 benchmarks/gpu_report.py                                               # here: writes GPU.md
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent / "results"
CASES = (("gpu_clean_b256.json", "clean, batch 256"), ("gpu_clean_b4096.json", "clean, batch 4096"),
         ("gpu_m06_b256.json", "60% missing, batch 256"))  # fmt: skip


def main() -> int:
    check = json.loads((HERE / "gpu" / "gpu_check.json").read_text())
    lines = [
        "### GPU",
        "",
        f"On a lent {check['gpu']} (torch {check['torch']}), float64, with "
        "`benchmarks/bench_invert.py --device cuda` (no cvxpy there, so no reference column). CI has no GPU.",
        "",
        "| case | method | success | median latent error | µs / signal | speed-up vs gd |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, label in CASES:
        rows = json.loads((HERE / "gpu" / name).read_text())["methods"]
        gd = rows["gd"]["seconds_per_signal"]
        for method, row in rows.items():
            lines.append(
                f"| {label} | {method} | {100 * row['success']:.0f}% | {row['median_latent_error']:.1e} "
                f"| {1e6 * row['seconds_per_signal']:.0f} | {gd / row['seconds_per_signal']:.2g} |"
            )
    cuda = [r for r in check["rows"] if r["device"] == "cuda"]
    ok = [r for r in cuda if r.get("z_hat_device", "").startswith("cuda")]
    failed = [f"{r['method']} ({r['case']}): {r['error']}" for r in cuda if "error" in r]
    lines += [
        "",
        f"`benchmarks/gpu_check.py`: {len(ok)} of {len(cuda)} method × case runs finished on CUDA with the "
        "same success as on the CPU" + (f"; not run there: {'; '.join(failed)}." if failed else "."),
    ]
    (HERE / "GPU.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
