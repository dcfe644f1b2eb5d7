"""Dashboard timings: time to the first rendered page after start, and one MNIST inversion.

    python benchmarks/bench_dashboard.py                 # writes benchmarks/results/bench_dashboard.json
    python benchmarks/bench_dashboard.py --json out.json --repeats 5

Measured in one run on this machine:
- ``server_ready_s``: from launching ``streamlit run`` to ``/_stcore/health`` answering ``ok``;
- ``first_paint_s``: from launching to the page's title visible;
- ``first_render_s``: from launching to the sample image visible in headless Chromium (the browser
  is started beforehand, so its own start-up is not counted);
- ``invert_library_s``: ``geninv.demo.run`` on one MNIST sample (half hidden) with gd at its default
  settings plus every layer-wise method — the call the dashboard makes;
- ``invert_browser_s``: the same run (next latent seed) started by clicking "Run" in the page, until
  the app is idle again with the results drawn;
- ``open_link_s``: opening a shared link of that experiment in a new tab until the results table
  shows (page load, new session, the run and the drawing).
Targets from the issue: first render < 3 s, one sample < 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("GENINV_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
METHODS = ("gd", "latent-pursuit", "lbp", "lp", "hybrid")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
            return r.read().decode().strip() == "ok"
    except OSError:
        return False


def browser_timings(browser, query: str) -> dict[str, float]:
    """Start a fresh server, time readiness and first render, then one run from the page."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "streamlit_app.py"),
           "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false"]  # fmt: skip
    page = browser.new_page(viewport={"width": 1500, "height": 1500})
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not _healthy(url):
            if time.perf_counter() - start > 90:
                raise RuntimeError("streamlit did not start in 90 s")
            time.sleep(0.05)
        ready = time.perf_counter() - start
        page.goto(url)
        page.get_by_test_id("stHeading").first.wait_for(state="visible", timeout=60_000)
        paint = time.perf_counter() - start
        page.get_by_test_id("stImage").first.wait_for(state="visible", timeout=60_000)
        first = time.perf_counter() - start
        t0 = time.perf_counter()
        page.goto(f"{url}/?{query}")  # a shared link: loads the page and runs the experiment
        page.get_by_test_id("stDataFrame").first.wait_for(state="visible", timeout=120_000)
        link = time.perf_counter() - t0
        _settle(page)
        page.get_by_role("button", name="New sample").click()  # another signal, then "Run" as a user would
        _settle(page)
        t0 = time.perf_counter()
        page.get_by_role("button", name="Run").click()
        page.get_by_test_id("stStatusWidget").wait_for(state="visible", timeout=30_000)
        page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=120_000)
        run = time.perf_counter() - t0
    finally:
        page.close()
        proc.terminate()
        proc.wait(timeout=10)
    return {
        "server_ready_s": ready,
        "first_paint_s": paint,
        "first_render_s": first,
        "invert_browser_s": run,
        "open_link_s": link,
    }


def _settle(page) -> None:
    page.wait_for_timeout(300)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=60_000)


def library_seconds(latent_seed: int) -> dict[str, float]:
    import geninv
    from geninv import demo

    G = geninv.load_generator("mnist").double()
    exp = demo.Experiment(latent_seed=latent_seed, corruption=demo.Corruption(mask="half"), methods=METHODS)
    t0 = time.perf_counter()
    out = demo.run(G, exp)
    total = time.perf_counter() - t0
    return (
        {"invert_library_s": total}
        | {f"{m}_s": out.methods[m].seconds for m in METHODS}
        | {f"{m}_latent_error": out.methods[m].metrics["latent_error"] for m in METHODS}
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_dashboard.json"))
    parser.add_argument("--no-browser", action="store_true", help="only the library timing")
    args = parser.parse_args(argv)

    from geninv import demo

    runs = []
    browser_ctx = None
    if not args.no_browser:
        from playwright.sync_api import sync_playwright

        browser_ctx = sync_playwright().start()
        browser = browser_ctx.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        for k in range(args.repeats):
            row = library_seconds(k)
            if browser_ctx is not None:
                exp = demo.Experiment(latent_seed=k, corruption=demo.Corruption(mask="half"), methods=METHODS)
                query = "&".join(f"{a}={b}" for a, b in exp.to_query().items())
                row |= browser_timings(browser, query)
            runs.append(row)
            print(json.dumps({k: round(v, 4) for k, v in row.items()}))
    finally:
        if browser_ctx is not None:
            browser.close()
            browser_ctx.stop()
    keys = runs[0].keys()
    medians = {k: statistics.median(r[k] for r in runs) for k in keys}
    import torch

    from geninv.inversion.gradient import GradientDescentConfig

    result = {
        "benchmark": "dashboard",
        "methods": list(METHODS),
        "case": "MNIST generator, one sample, bottom half hidden, gd at its default settings "
        f"({GradientDescentConfig().n_iter} iterations, {GradientDescentConfig().restarts} restarts)",
        "targets": {"first_render_s": 3.0, "invert_library_s": 5.0, "invert_browser_s": 5.0},
        "median": medians,
        "runs": runs,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
        },
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"median: {json.dumps({k: round(v, 3) for k, v in medians.items() if not k.endswith('error')})}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
