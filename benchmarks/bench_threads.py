"""Cost per signal of ``certify`` against the batch size, with 1 and 2 torch threads, idle and loaded.

The measurements behind the thread policy of ``geninv/_threads.py``. "loaded" runs a busy-loop process
(``python3 -c "while True: pass"``) on one core during the measurement, as another user of a shared
2-core machine would. Writes ``benchmarks/results/threads.json``.

Usage::

    python benchmarks/bench_threads.py                  # shipped MNIST decoder, float64
    python benchmarks/bench_threads.py --sizes 1 8 64 --no-loaded
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch

import geninv
from geninv import _threads, theory
from geninv.theory import certify

SIZES = (1, 4, 16, 32, 55, 56, 64, 128, 256, 512, 1000)
OUT = Path(__file__).parent / "results" / "threads.json"


@contextlib.contextmanager
def busy_core(enabled: bool):
    """A busy-loop process on one core while the block runs (when ``enabled``)."""
    if not enabled:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        proc.wait()


def time_certify(generator, batch: int, threads: int | None, repeats: int) -> float:
    """Best wall time of ``certify`` on ``batch`` signals, with ``threads`` torch threads (None: the policy)."""
    z = generator.sample_latent(batch, seed=1)
    best = float("inf")
    for _ in range(repeats):
        if threads is None:
            start = time.perf_counter()
            certify(generator, z)
        else:  # bypass the policy: exactly ``threads`` threads
            with _threads.num_threads(threads), mock.patch.object(theory, "threads_for", _unchanged):
                start = time.perf_counter()
                certify(generator, z)
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def _unchanged(generator, batch):
    yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="mnist")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--no-loaded", action="store_true", help="skip the runs with a busy core")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop a series once a run takes longer")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    generator = geninv.load_generator(args.generator).double()
    certify(generator, generator.sample_latent(4, seed=0))  # warm up
    records = []
    for loaded in (False,) if args.no_loaded else (False, True):
        too_slow: set[object] = set()
        with busy_core(loaded):
            for batch in args.sizes:
                for threads in (1, 2, None):  # interleaved: each batch size sees the same background
                    label = "policy" if threads is None else threads
                    if label in too_slow:
                        continue
                    repeats = 3 if batch <= 64 else 1
                    seconds = time_certify(generator, batch, threads, repeats)
                    row = {
                        "loaded": loaded,
                        "threads": label,
                        "batch": batch,
                        "seconds": seconds,
                        "ms_per_signal": 1000 * seconds / batch,
                        "load_average": os.getloadavg()[0],
                    }
                    records.append(row)
                    print(json.dumps(row), flush=True)
                    if seconds > args.max_seconds:
                        too_slow.add(label)
    machine = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "generator": args.generator,
        "dtype": "float64",
        "policy": _threads.describe(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "records": records}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
