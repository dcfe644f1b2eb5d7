"""The batched linear-algebra kernels behind the layer-wise solvers and ``certify``, side by side.

    python3 benchmarks/bench_kernels.py            # ~2 min on 2 cores, one torch thread
    python3 benchmarks/bench_kernels.py --quick    # smaller batches

Each row times two ways of doing the same thing in the same run and reports their ratio:

- ``cholesky``: torch's batched ``linalg.cholesky_ex`` against :func:`geninv.solvers.linear.cholesky_ex`
  (scipy's LAPACK ``potrf`` one matrix at a time on the CPU, from ``LAPACK_MIN_N`` up);
- ``smallest eigenvalue``: torch's ``eigvalsh`` against :func:`geninv.solvers.linear.smallest_eigenvalues`
  (LAPACK ``syevr`` asked for one eigenvalue);
- ``cholesky solve``: torch's ``cholesky_solve`` against :func:`geninv.solvers.linear.chol_solve` (two
  triangular solves);
- ``mid-layer least squares``: :func:`geninv.solvers.linear.lstsq_rows` on the mid layer of a
  [20, 128, 392, 784] generator (half its rows per signal), as one batch of 1024 against cache-sized
  chunks (``CACHE_BYTES``);
- ``gram + cholesky``: each signal's Gram matrix and its Cholesky factor for the same mid layer
  (float32, each signal's rows packed first, in the solver's chunks), as a batched product and
  :func:`geninv.solvers.linear.cholesky_ex` against :func:`geninv.solvers.linear.gram_cholesky`
  (BLAS ``syrk`` on the signal's own rows and ``potrf``, one matrix at a time);
- ``shared least squares``: one tall matrix for the whole batch (a fixed mask), Householder QR against
  the semi-normal equations the solver uses.

Writes ``benchmarks/results/kernels.json``. Wall times are the best of a few repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from geninv.solvers import linear

OUT = Path(__file__).parent / "results" / "kernels.json"


def best_time(fn, repeats: int = 3) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _spd(batch: int, n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n + n // 2, n, generator=gen, dtype=dtype)
    return a.mT @ a


def _row(kernel: str, size: str, dtype: torch.dtype, batch: int, baseline: float, ours: float, labels) -> dict:
    row = {
        "kernel": kernel,
        "size": size,
        "dtype": str(dtype).replace("torch.", ""),
        "batch": batch,
        f"{labels[0]}_ms_per_item": 1000 * baseline / batch,
        f"{labels[1]}_ms_per_item": 1000 * ours / batch,
        "speedup": baseline / ours,
    }
    print(json.dumps(row), flush=True)
    return row


def factorisations(quick: bool) -> list[dict]:
    rows = []
    for n in (64, 128, 256, 512):
        batch = max(4, (64 if quick else 256) * 128 * 128 // (n * n))
        for dtype in (torch.float32, torch.float64):
            gram = _spd(batch, n, dtype, seed=n)
            torch_t = best_time(lambda gram=gram: torch.linalg.cholesky_ex(gram))
            ours_t = best_time(lambda gram=gram: linear.cholesky_ex(gram))
            rows.append(_row("cholesky", f"n={n}", dtype, batch, torch_t, ours_t, ("torch", "geninv")))
        gram = _spd(max(4, batch // 4), n, torch.float64, seed=n + 1)
        torch_t = best_time(lambda gram=gram: torch.linalg.eigvalsh(gram)[..., 0])
        ours_t = best_time(lambda gram=gram: linear.smallest_eigenvalues(gram))
        rows.append(
            _row("smallest eigenvalue", f"n={n}", torch.float64, gram.shape[0], torch_t, ours_t, ("torch", "geninv"))
        )
    for dtype in (torch.float32, torch.float64):
        gram = _spd(64 if quick else 512, 128, dtype, seed=3)
        chol, _ = torch.linalg.cholesky_ex(gram)
        rhs = torch.randn(gram.shape[0], 128, dtype=dtype)
        torch_t = best_time(lambda chol=chol, rhs=rhs: torch.cholesky_solve(rhs.unsqueeze(-1), chol))
        ours_t = best_time(lambda chol=chol, rhs=rhs: linear.chol_solve(rhs, chol))
        rows.append(_row("cholesky solve", "n=128", dtype, gram.shape[0], torch_t, ours_t, ("torch", "geninv")))
    return rows


def least_squares(quick: bool) -> list[dict]:
    import geninv

    rows = []
    batch = 256 if quick else 1024
    generator = geninv.Generator.random([20, 128, 392, 784], seed=0)
    h = generator.trace(generator.sample_latent(batch, seed=1)).activations[0]
    weight = generator.weight(1)
    pre = h @ weight.T
    active = pre > 0
    target = pre * active

    def whole() -> None:
        saved = linear.CACHE_BYTES
        linear.CACHE_BYTES = 1 << 62  # one chunk
        try:
            linear.lstsq_rows(weight, target, active)
        finally:
            linear.CACHE_BYTES = saved

    one_t = best_time(whole, repeats=2)
    chunk_t = best_time(lambda: linear.lstsq_rows(weight, target, active), repeats=2)
    rows.append(
        _row(
            "mid-layer least squares",
            "392x128, half the rows",
            torch.float64,
            batch,
            one_t,
            chunk_t,
            ("one_batch", "chunked"),
        )
    )
    order, valid = linear._packed_rows(active, None, torch.float32)
    stack = linear._row_stack(weight.float(), order, valid)  # (batch, k, n): each signal's rows first
    counts = active.sum(-1)
    size = linear.MIN_CHUNK

    def batched() -> None:
        for lo in range(0, batch, size):
            part = stack[lo : lo + size]
            linear.cholesky_ex(part.mT @ part, overwrite=True)

    def fused() -> None:
        for lo in range(0, batch, size):
            linear.gram_cholesky(stack[lo : lo + size], counts[lo : lo + size])

    label = f"{weight.shape[0]}x{weight.shape[1]}, {stack.shape[1]} rows packed, chunks of {size}"
    rows.append(
        _row(
            "gram + cholesky",
            label,
            torch.float32,
            batch,
            best_time(batched),
            best_time(fused),
            ("bmm_potrf", "syrk_potrf"),
        )
    )
    m, n = (2048, 512) if quick else (8192, 2048)
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(m, n, generator=gen, dtype=torch.float64)
    t = torch.randn(64, n, generator=gen, dtype=torch.float64) @ a.T

    def qr() -> None:
        q, r = torch.linalg.qr(a)
        torch.linalg.solve_triangular(r, (t @ q).T, upper=True)

    qr_t = best_time(qr, repeats=1)
    ours_t = best_time(lambda: linear.lstsq_rows(a, t, torch.ones_like(t, dtype=torch.bool)), repeats=1)
    rows.append(_row("shared least squares", f"{m}x{n}", torch.float64, 64, qr_t, ours_t, ("qr", "geninv")))
    # The Gram of a shared output layer (the semi-normal equations' factor): the output layers of the
    # [64, 512, 2048, 8192] and [128, 1024, 4096, 16384] generators, in the dtypes their batches use.
    sizes = [(2048, 512, torch.float64)] if quick else [(8192, 2048, torch.float64), (16384, 4096, torch.float32)]
    for m, n, dtype in sizes:
        a = torch.randn(m, n, generator=gen, dtype=dtype)
        product_t = best_time(lambda a=a: a.T @ a, repeats=1)
        ours_t = best_time(lambda a=a: linear.gram(a), repeats=1)
        rows.append(_row("shared gram", f"{m}x{n}", dtype, 1, product_t, ours_t, ("matmul", "syrk")))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller batches and matrices")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "threads": 1,
        "quick": args.quick,
        "rows": factorisations(args.quick) + least_squares(args.quick),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
