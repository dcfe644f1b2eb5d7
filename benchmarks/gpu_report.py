"""Markdown summary of the GPU runs (made on a lent GPU, never in CI): writes results/GPU.md.

    python3 benchmarks/bench_scale.py --device cuda                               # on the GPU machine
    python3 benchmarks/gpu_check.py benchmarks/results/gpu/gpu_check.json         # on the GPU machine
    python3 benchmarks/gpu_report.py                                              # here: writes GPU.md

Reads ``results/scale_cuda.json`` (cost against width), ``results/gpu/gpu_check.json`` (every method
on CUDA against the CPU) and, where present, ``results/gpu/scale_cuda_*.json`` (earlier runs, for
their peak memory). A ``note`` field in a result file (what the run measured and what changed
after it) is printed with it.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent / "results"
LAYERWISE = ("latent-pursuit", "hybrid")


def _cases(report: dict) -> dict[tuple, dict[str, dict]]:
    """{(widths, batch of the layer-wise methods, missing, dtype): {method: result}}."""
    cases: dict[tuple, dict[str, dict]] = {}
    for row in report["rows"]:
        key = ("-".join(map(str, row["widths"])), row["missing"], row["dtype"])
        cases.setdefault(key, {})[row["method"]] = row["result"] | {"batch": row["batch"]}
    return cases


def scale_table(report: dict) -> list[str]:
    m = report["machine"]
    lines = [
        f"`python3 benchmarks/bench_scale.py{report['flags']}` on {report['date']}, {m['device_name']} "
        f"(torch {m['torch']}). Milliseconds per signal; peak: the largest GPU memory allocated by any of the "
        "three methods in its own process; success: latent error ≤ 1e-3 for all three. Full table: "
        "`benchmarks/results/SCALE_cuda.md`.",
        "",
        "| widths | batch | pixels missing | dtype | latent-pursuit | hybrid | gd | latent-pursuit vs gd "
        "| hybrid vs gd | peak MiB | success |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (widths, missing, dtype), rows in _cases(report).items():
        if any("error" in r for r in rows.values()) or set(rows) != {*LAYERWISE, "gd"}:
            lines.append(f"| {widths} | | {100 * missing:.0f}% | {dtype} | not measured: "
                         f"{'; '.join(r.get('error', '') for r in rows.values())} |||||||")  # fmt: skip
            continue
        ms = {k: r["ms_per_signal"] for k, r in rows.items()}
        peak = max(r["peak_memory_mib"] for r in rows.values())
        success = min(r["success_1e-3"] for r in rows.values())
        lines.append(
            f"| {widths} | {rows['hybrid']['batch']} | {100 * missing:.0f}% | {dtype} "
            f"| {ms['latent-pursuit']:.3g} | {ms['hybrid']:.3g} | {ms['gd']:.3g} "
            f"| {ms['gd'] / ms['latent-pursuit']:.3g} | {ms['gd'] / ms['hybrid']:.3g} | {peak:.0f} "
            f"| {100 * success:.0f}% |"
        )
    if report.get("note"):
        lines += ["", report["note"]]
    return lines


def earlier_peaks(report: dict, path: Path) -> list[str]:
    """Cases whose peak memory the earlier run measured above 1.5 GiB, against the current run."""
    now = {(tuple(r["widths"]), r["missing"], r["dtype"], r["method"]): r["result"] for r in report["rows"]}
    old = json.loads(path.read_text())
    lines = []
    for row in old["rows"]:
        key = (tuple(row["widths"]), row["missing"], row["dtype"], row["method"])
        before, after = row["result"].get("peak_memory_mib", 0), now.get(key, {}).get("peak_memory_mib")
        if before > 1536 and after is not None and now[key] != row["result"]:  # re-run since
            lines.append(
                f"- {'-'.join(map(str, row['widths']))}, {100 * row['missing']:.0f}% missing, {row['dtype']}, "
                f"{row['method']}: {before:.0f} MiB, now {after:.0f} MiB"
            )
    if not lines:
        return []
    head = f"Peak GPU memory above 1.5 GiB in the earlier run `{path.name}` ({old['date']})"
    return ["", head + (f". {old['note']}" if old.get("note") else ":"), "", *lines]


def check_summary(check: dict) -> list[str]:
    cuda = [r for r in check["rows"] if r["device"] == "cuda"]
    cpu = {(r["case"], r["method"]): r for r in check["rows"] if r["device"] == "cpu" and "error" not in r}
    on_gpu = [r for r in cuda if r.get("z_hat_device", "").startswith("cuda")]
    converged = [r for r in on_gpu if set(r.get("statuses", {})) == {"converged"}]
    same = [
        r
        for r in on_gpu
        if (r["case"], r["method"]) in cpu and r["success_1e-6"] == cpu[(r["case"], r["method"])]["success_1e-6"]
    ]
    compared = [r for r in on_gpu if (r["case"], r["method"]) in cpu]
    others = [r for r in on_gpu if r not in converged]
    failed = [f"{r['method']} ({r['case']}): {r['error']}" for r in cuda if "error" in r]
    lines = [
        "",
        f"`benchmarks/gpu_check.py` ({check['gpu']}, float64, 64 signals of [20, 128, 392, 784]): {len(on_gpu)} of "
        f"{len(cuda)} method × case runs (clean, 60% missing, 20 dB; gd, plugin, latent-pursuit, lbp, hybrid) "
        f"returned their estimate on CUDA, {len(converged)} with every signal `converged`"
        + (f" (the others: {'; '.join(_statuses(r) for r in others)})" if others else "")
        + f"; the same success at 1e-6 as on the CPU in {len(same)} of the {len(compared)} runs compared there"
        + (f"; failed: {'; '.join(failed)}." if failed else "."),
    ]  # fmt: skip
    if check.get("note"):
        lines[-1] += " " + check["note"]
    return lines


def _statuses(row: dict) -> str:
    return f"{row['method']}, {row['case']}: " + ", ".join(f"{n} {s}" for s, n in sorted(row["statuses"].items()))


def main() -> int:
    report = json.loads((HERE / "scale_cuda.json").read_text())
    lines = ["### GPU", "", *scale_table(report)]
    for path in sorted((HERE / "gpu").glob("scale_cuda_*.json")):
        lines += earlier_peaks(report, path)
    lines += check_summary(json.loads((HERE / "gpu" / "gpu_check.json").read_text()))
    lines += ["", "CI has no GPU; these runs were made on a GPU lent to a development session."]
    (HERE / "GPU.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
