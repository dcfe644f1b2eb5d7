"""Cost of inversion against width: float32 and float64, clean and 60% missing, CPU or GPU.

    python3 benchmarks/bench_scale.py                      # CPU: every case below, ~30-60 min on 2 cores
    python3 benchmarks/bench_scale.py --device cuda        # the same on a GPU
    python3 benchmarks/bench_scale.py --quick              # small batches, to try it

Each (widths, dtype, missing, method) runs in its own subprocess, so that its peak memory is its own
(peak resident set size on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU), and under a time
limit (a case past it is recorded as "timeout"). Reported per case: ms per signal, forward-pass
equivalents (wall time over one synchronised batched forward pass of the same batch: the fastest
that any case's process measured, see ``shared_forward``), peak memory,
success at 1e-3, median latent error and statuses. On the CPU the timed calls follow a warm-up on
two signals; on a GPU they follow a first call on the whole batch, timed apart
(``first_call_ms_per_signal``: lazily loaded kernels and the caching allocator's first blocks).
The time is the best of up to ``REPEATS`` calls (as many as fit in ``REPEAT_BUDGET_S``;
``timed_calls``).
Writes ``benchmarks/results/scale_<device>.json`` and ``SCALE_<device>.md``;
``benchmarks/update_readme.py`` copies the CPU table into the README and ``--plot`` writes a PNG of
forward-pass equivalents against width (headless chromium).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIDTHS = ([20, 128, 392, 784], [64, 512, 2048, 8192], [128, 1024, 4096, 16384])
# Signals per case: the batch on a GPU and for the widest generator; on a 2-core CPU the middle
# one gets 256 instead of 1024, and gd (whose cost per signal does not depend on the batch, seconds per
# signal on the wide ones) fewer still.
BATCH = {"cuda": (1024, 1024, 256), "cpu": (1024, 256, 256)}
GD_BATCH = {"cuda": (1024, 1024, 256), "cpu": (256, 32, 4)}
METHODS = ("latent-pursuit", "hybrid", "gd")
SKIP = {("cpu", 16384, "gd")}
"""gd on the widest generator runs for hours on a 2-core CPU: measured on a GPU only."""
GD_ITER = {"cuda": 8000, "cpu": 8000}


def _one(args: argparse.Namespace) -> dict:
    """Run one case in this process (the child) and return its row."""
    import resource
    import warnings

    import torch

    import geninv
    from geninv.inversion._layerwise import forward_seconds
    from geninv.metrics import latent_error, success_rate
    from geninv.solvers import linear

    torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    widths = [int(w) for w in args.widths.split("-")]
    device = torch.device(args.device)
    G = geninv.Generator.random(widths, seed=0, dtype=dtype, device=device)
    mask = geninv.masks.random_pixels(widths[-1], args.missing, seed=2) if args.missing else None
    obs = geninv.observe(G, G.sample_latent(args.batch, seed=1), mask=mask)
    fwd = forward_seconds(G, args.batch)
    options = {"n_iter": args.gd_iter} if args.method == "gd" else {}

    def timed():
        """The inversion of the whole batch and its wall time (synchronised on a GPU). Every call pays
        for what it builds: the conjugate-gradient route's preconditioner, which geninv keeps per
        matrix for the next call on the same generator, is dropped first."""
        linear._PRECONDITIONERS.clear()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = geninv.invert(G, obs, args.method, **options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = None
        if device.type == "cuda":
            # The first call at full size pays one-time costs (lazily loaded kernels, the caching
            # allocator's first blocks): reported apart, as first_call_ms_per_signal; the timed
            # call is the second.
            _, first = timed()
            torch.cuda.reset_peak_memory_stats()
        else:
            geninv.invert(G, obs[0:2], args.method, **options)  # warm-up
        res, seconds = timed()
        calls = 1
        while calls < REPEATS and seconds * (calls + 1) < REPEAT_BUDGET_S:
            seconds = min(seconds, timed()[1])
            calls += 1
    err = latent_error(res.z_hat, obs.z_true)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    statuses = {str(s): int((res.statuses == s).sum()) for s in set(res.statuses.tolist())}
    return {
        "ms_per_signal": 1000 * seconds / args.batch,
        "timed_calls": calls,
        "forward_pass_equivalents": seconds / fwd,
        "forward_pass_ms": 1000 * fwd,
        "forward_pass_ms_own": 1000 * fwd,
        "peak_memory_mib": peak / 2**20,
        "success_1e-3": success_rate(err, 1e-3),
        "median_latent_error": float(err.median()),
        "statuses": statuses,
    } | ({"first_call_ms_per_signal": 1000 * first / args.batch} if first is not None else {})


REPEATS = 3
"""Timed calls per case (the best is reported, as for the forward pass) while they fit in
``REPEAT_BUDGET_S``: one call's time on this project's 2-core machine varies by up to a third
between moments of the same run. (At 30 s only one float64 call of the widest generator, 12-16 s
each, fit.)"""
REPEAT_BUDGET_S = 60.0


def _forward_only(args: argparse.Namespace) -> dict:
    """The child that only measures the forward pass (best of 10) of one (widths, dtype, batch)."""
    import torch

    import geninv
    from geninv.inversion._layerwise import forward_seconds

    torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    G = geninv.Generator.random([int(w) for w in args.widths.split("-")], seed=0, dtype=dtype, device=args.device)
    return {"forward_pass_ms": 1000 * forward_seconds(G, args.batch)}


FORWARD_PROCESSES = 5
"""Separate processes that measure each forward pass besides the cases' own (see ``shared_forward``)."""


def forward_ms(widths, dtype, batch, *, device, threads) -> list[float]:
    """The forward pass of (widths, dtype, batch), measured in FORWARD_PROCESSES fresh processes."""
    cmd = [sys.executable, __file__, "--child", "--forward-only", "--widths", "-".join(map(str, widths))]
    cmd += ["--dtype", dtype, "--batch", str(batch), "--device", device, "--threads", str(threads)]
    out = []
    for _ in range(FORWARD_PROCESSES):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode == 0:
            out.append(json.loads(proc.stdout.strip().splitlines()[-1])["forward_pass_ms"])
    return out


def run_case(widths, dtype, missing, method, batch, *, device, threads, gd_iter, timeout) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--widths",
        "-".join(map(str, widths)),
        "--dtype",
        dtype,
        "--missing",
        str(missing),
        "--method",
        method,
        "--batch",
        str(batch),
        "--device",
        device,
        "--threads",
        str(threads),
        "--gd-iter",
        str(gd_iter),
    ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:200] if proc.stderr.strip() else "failed"}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["wall_seconds"] = round(time.perf_counter() - start, 1)
    return row


def _forward_key(widths, dtype: str, batch: int) -> str:
    """The key of ``report["forward_ms"]`` (a JSON object's keys are strings): "20-128-392-784|float64|1024"."""
    return f"{'-'.join(map(str, widths))}|{dtype}|{batch}"


def shared_forward(report: dict) -> None:
    """Give every row the fastest forward pass measured for its (widths, dtype, batch, device) by any
    case's process, and its forward-pass equivalents over that.

    Each case measures the forward pass in its own process (best of 10), and on this project's
    CPU that measurement is bimodal between processes (16.5-17.5 or 22-25 ms for the same float64
    batch of 1024 on [20, 128, 392, 784]; all four layer-wise cases of one run measured the slow
    mode) while the inversions' times are not: one process's measurement alone moved forward-pass
    equivalents by up to a third. So FORWARD_PROCESSES more processes measure it too
    (``report["forward_ms"]``), and the fastest of all is the cost of the pass itself, and the
    larger (more conservative) ratio.
    """
    best = {key: min(values) for key, values in report.get("forward_ms", {}).items()}
    for row in report["rows"]:
        r = row["result"]
        if "error" not in r:
            key = _forward_key(row["widths"], row["dtype"], row["batch"])
            own = r.setdefault("forward_pass_ms_own", r["forward_pass_ms"])
            best[key] = min(best.get(key, own), own)
    for row in report["rows"]:
        r = row["result"]
        if "error" not in r:
            fwd = best[_forward_key(row["widths"], row["dtype"], row["batch"])]
            r["forward_pass_ms"] = fwd
            r["forward_pass_equivalents"] = r["ms_per_signal"] * row["batch"] / fwd


def table(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Cost against width ({report['device']})",
        "",
        f"Generated by `python3 benchmarks/bench_scale.py{report['flags']}` on {report['date']}: {m['platform']}, "
        f"{m['cpu_count']} CPUs, torch {m['torch']} ({report['threads']} thread(s)), device {m['device_name']}. "
        "Random generators `Generator.random(widths, seed=0)`, no bias, identity output. Times: the best of "
        f"up to {REPEATS} calls on the whole batch (as many as fit in {REPEAT_BUDGET_S:.0f} s). "
        "Forward-pass "
        "equivalents: wall time over one batched forward pass of the same batch and dtype (the fastest "
        "measured by the cases' processes and 5 more: one process's measurement varies by up to a third). "
        "Peak memory: "
        "the case's own process (resident set on the CPU, allocated on a GPU). Success: latent error ≤ 1e-3. "
        "vs gd: gd's time per signal over the method's, same case and run (gd on fewer signals on a CPU, where "
        "its cost per signal does not depend on the batch; skipped on the widest generator there). The "
        "layer-wise methods' shared factorisations (one per fixed mask) are paid once per batch, so their "
        "forward-pass equivalents fall as the batch grows.",
        "",
        "| widths | batch | pixels missing | dtype | method | ms / signal | forward-pass equiv. | peak MiB | success "
        "| vs gd |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    gd_ms = {
        _gd_key(row): row["result"]["ms_per_signal"]
        for row in report["rows"]
        if row["method"] == "gd" and "error" not in row["result"]
    }
    for row in report["rows"]:
        r = row["result"]
        if "error" in r:
            cells = [r["error"], "", "", "", ""]
        else:
            gd = gd_ms.get(_gd_key(row))
            cells = [
                f"{r['ms_per_signal']:.3g}",
                f"{r['forward_pass_equivalents']:.3g}",
                f"{r['peak_memory_mib']:.0f}",
                f"{100 * r['success_1e-3']:.0f}%",
                f"{gd / r['ms_per_signal']:.3g}" if gd else "—",
            ]
        lines.append(
            f"| {'-'.join(map(str, row['widths']))} | {row['batch']} | {100 * row['missing']:.0f}% | {row['dtype']} "
            f"| {row['method']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


COLORS = {
    ("gd", False): "#555555",
    ("gd", True): "#aaaaaa",
    ("latent-pursuit", False): "#d95f02",
    ("latent-pursuit", True): "#fdae6b",
    ("hybrid", False): "#1f4e9c",
    ("hybrid", True): "#6baed6",
}
"""Line colour per (method, pixels missing): a hue per method, lighter with pixels missing."""


def plot(report: dict, path: Path) -> None:
    """Forward-pass equivalents against the output width, one line per (method, dtype, missing):
    colour for the method and the mask, dotted for float32."""
    import plotly.graph_objects as go

    fig = go.Figure()
    series: dict[tuple, list] = {}
    for row in report["rows"]:
        if "error" in row["result"]:
            continue
        key = (row["method"], row["dtype"], row["missing"])
        series.setdefault(key, []).append((row["widths"][-1], row["result"]["forward_pass_equivalents"]))
    for (method, dtype, missing), points in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        xs, ys = zip(*sorted(points))
        label = f"{method}, {dtype}, {'clean' if not missing else f'{100 * missing:.0f}% missing'}"
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="lines+markers",
            name=label,
            line={"dash": "dot" if dtype == "float32" else None, "color": COLORS.get((method, bool(missing)))},
            marker={"symbol": "diamond" if missing else "circle", "size": 8},
        )
    widths = sorted({tuple(row["widths"]) for row in report["rows"]}, key=lambda w: w[-1])
    fig.update_layout(
        title=f"Cost against width ({report['device']}): forward-pass equivalents per signal",
        xaxis_title="generator",
        yaxis_title="forward-pass equivalents (log)",
        template="plotly_white",
    )
    fig.update_xaxes(type="log", tickvals=[w[-1] for w in widths], ticktext=["-".join(map(str, w)) for w in widths])
    fig.update_yaxes(type="log", dtick=1)
    sys.path.insert(0, str(HERE.parent / "docs" / "results"))
    from render import to_png

    path.write_bytes(to_png(fig, width=900, height=500))


def _gd_key(row: dict) -> tuple:
    """The case without method and batch: gd's row for the same generator, dtype and mask."""
    return (tuple(row["widths"]), row["missing"], row["dtype"])


def _key(row: dict) -> tuple:
    return (tuple(row["widths"]), row["batch"], row["missing"], row["dtype"], row["method"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="batches of 16 / 8 / 4, to try the script")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per case")
    parser.add_argument("--plot", action="store_true", help="also write scale_<device>.png")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--resume", action="store_true", help="keep the finished cases of OUT/scale_<device>.json")
    parser.add_argument(
        "--only", type=int, nargs="+", metavar="OUTPUT_WIDTH", help="(re)run only these generators, e.g. 784 8192"
    )
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, help="(re)run only these methods, keeping the others' rows"
    )
    # child process options
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--widths", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--missing", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gd-iter", type=int, default=8000, help=argparse.SUPPRESS)
    parser.add_argument("--forward-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_forward_only(args) if args.forward_only else _one(args)))
        return 0

    import torch

    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    batches = (16, 8, 4) if args.quick else BATCH[kind]
    gd_batches = (16, 8, 4) if args.quick else GD_BATCH[kind]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": kind,
        "threads": args.threads,
        "flags": (f" --device {args.device}" if kind == "cuda" else "") + (" --quick" if args.quick else ""),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name(0) if kind == "cuda" else platform.processor() or "cpu",
        },
        "rows": [],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done: dict[tuple, dict] = {}
    measured: set[str] = set()
    previous = out / f"scale_{kind}.json"
    if args.resume and previous.exists():
        old = json.loads(previous.read_text())
        if old.get("flags") == report["flags"] and old.get("threads") == args.threads:
            what = f"widths {', '.join(map(str, args.only))} re-run" if args.only else "resumed"
            if args.methods:
                what = what.replace(" re-run", "") if args.only else "widths all"
                what += f", {', '.join(args.methods)} re-run"
            earlier = re.sub(rf" \({re.escape(what)} [^)]*\)", "", old["date"])  # this re-run replaces them
            report["date"] = earlier + f" ({what} " + report["date"] + ")"
            done = {_key(row): row for row in old["rows"] if "error" not in row["result"]}
            report["forward_ms"] = old.get("forward_ms", {})
    for widths, method_batch, gd_batch in zip(WIDTHS, batches, gd_batches):
        for missing in (0.0, 0.6):
            for dtype in ("float64", "float32"):
                for method in METHODS:
                    if (kind, widths[-1], method) in SKIP:
                        continue
                    batch = gd_batch if method == "gd" else method_batch
                    row = {"widths": widths, "batch": batch, "missing": missing, "dtype": dtype, "method": method}
                    rerun = (args.only is None or widths[-1] in args.only) and (
                        args.methods is None or method in args.methods
                    )
                    if _key(row) in done and not ((args.only or args.methods) and rerun):
                        report["rows"].append(done[_key(row)])
                        continue
                    if not rerun:
                        continue
                    fkey = _forward_key(widths, dtype, batch)
                    if fkey not in measured:
                        measured.add(fkey)
                        report.setdefault("forward_ms", {})[fkey] = forward_ms(
                            widths, dtype, batch, device=args.device, threads=args.threads
                        )
                    result = run_case(
                        widths,
                        dtype,
                        missing,
                        method,
                        batch,
                        device=args.device,
                        threads=args.threads,
                        gd_iter=GD_ITER[kind],
                        timeout=args.timeout,
                    )
                    report["rows"].append(row | {"result": result})
                    print(json.dumps(report["rows"][-1]), flush=True)
                    shared_forward(report)
                    (out / f"scale_{kind}.json").write_text(json.dumps(report, indent=1) + "\n")
    shared_forward(report)
    (out / f"scale_{kind}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"SCALE_{kind}.md").write_text(table(report))
    if args.plot:
        plot(report, out / f"scale_{kind}.png")
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
