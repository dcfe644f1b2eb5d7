"""The ``geninv`` command line: invert, certify, sweep, train.

Bad input exits with status 2 and one line on stderr (no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

EPILOG = "Generators: 'mnist' or 'random:20-128-392-784[:seed=0][:bias][:hidden=leaky_relu][:output=sigmoid]'."


_last_shown = [-1.0]


def _progress(fraction: float, message: str) -> bool:
    if 0 < fraction < 1 and fraction - _last_shown[0] < 0.01:  # redraw at most every 1%
        return True
    _last_shown[0] = fraction if fraction < 1 else -1.0
    width = 30
    done = round(fraction * width)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {100 * fraction:5.1f}%  {message[:60]:<60}")
    sys.stderr.flush()
    if fraction >= 1:
        sys.stderr.write("\n")
    return True


def _mask(args: argparse.Namespace, n: int):
    from geninv import masks

    chosen = [x for x in (args.missing, args.box, args.half, args.mask_png) if x]
    if len(chosen) > 1:
        raise ValueError("Choose one of --missing, --box, --half, --mask-png.")
    if args.missing:
        return masks.random_pixels(n, args.missing, seed=args.seed)
    if args.box:
        return masks.center_box(n, args.box)
    if args.half:
        return masks.half(n, hide=args.half)
    if args.mask_png:
        return masks.from_png(args.mask_png, n)
    return None


def cmd_invert(args: argparse.Namespace) -> int:
    import numpy as np

    from geninv import masks, metrics, observe
    from geninv.experiments import run_methods
    from geninv.io import generator_from_spec

    gen = generator_from_spec(args.generator, dtype=None).double()
    mask = _mask(args, gen.output_dim)
    z = gen.sample_latent(args.samples, seed=args.seed)
    obs = observe(gen, z, mask=mask, noise_sigma=args.sigma, snr_db=args.snr, seed=args.seed)
    results = run_methods(gen, obs, args.methods, seed=args.seed, progress=_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "generator": args.generator,
        "samples": args.samples,
        "seed": args.seed,
        "mask_observed": None if mask is None else int(mask.sum()),
        "sigma": args.sigma,
        "snr_db": args.snr,
        "methods": {},
    }
    side = round(gen.output_dim**0.5)
    is_image = side * side == gen.output_dim
    if is_image:
        _save_png(obs.x_true.numpy(), side, out / "original.png")
        observed = obs.operator.adjoint(obs.y).numpy()
        _save_png(observed, side, out / "observed.png", mask=mask)
        if mask is not None:
            masks.to_png(mask, (side, side), out / "mask.png")
    for method, res in results.items():
        if isinstance(res, Exception):
            report["methods"][method] = {"error": str(res)}
            print(f"{method:15s} error: {res}")
            continue
        m = metrics.evaluate(res, obs)
        summary = {
            "median_latent_error": float(np.median(m["latent_error"])),
            "success_rate": float(m["success"].mean()),
            "median_psnr": float(np.median(m["psnr"])),
            "seconds": res.seconds,
            "status": res.status.value,
            "records": res.to_records(obs),
        }
        report["methods"][method] = summary
        print(
            f"{method:15s} success {summary['success_rate']:.2f}  median latent error "
            f"{summary['median_latent_error']:.2e}  PSNR {summary['median_psnr']:.1f} dB  {res.seconds:.2f} s"
        )
        if is_image:
            _save_png(res.x_hat.numpy(), side, out / f"reconstruction_{method}.png")
    (out / "results.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"wrote {out / 'results.json'}")
    return 0


def _save_png(x, side: int, path: Path, mask=None) -> None:
    from geninv.viz import grid_png

    path.write_bytes(grid_png(x, (side, side), mask=mask))


def cmd_certify(args: argparse.Namespace) -> int:
    from geninv import certify
    from geninv.io import generator_from_spec

    gen = generator_from_spec(args.generator).double()
    mask = _mask(args, gen.output_dim)
    cert = certify(gen, gen.sample_latent(args.samples, seed=args.seed), mask=mask, noise_sigma=args.sigma or 0.0)
    rows = cert.summary()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = [
        "layer",
        "cardinality_mean",
        "rows_mean",
        "coherence_median",
        "paper_unique_holds",
        "paper_unique_fails",
        "lbp_guaranteed",
        "identifiable",
    ]
    print(f"certificate of {args.generator} over {args.samples} samples (step k recovers x_k; 0 = z)")
    print("  ".join(f"{c:>18s}" for c in cols))
    for r in rows:
        print(
            "  ".join(
                f"{r.get(c, ''):>18.3f}" if isinstance(r.get(c), float) else f"{r.get(c, '')!s:>18s}" for c in cols
            )
        )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from geninv.experiments import PRESETS, SweepConfig, run_sweep, summarize, write_results

    if args.preset:
        if args.preset not in PRESETS:
            raise ValueError(f"Unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}.")
        config = PRESETS[args.preset]
        name = args.preset
    else:
        if not (args.variable and args.values):
            raise ValueError("Give a preset, or --variable and --values.")
        config = SweepConfig(generator=args.generator, variable=args.variable, values=tuple(args.values))
        name = f"sweep-{args.variable}"
    changes: dict[str, Any] = {}
    if args.trials:
        changes["trials"] = args.trials
    if args.methods:
        changes["methods"] = tuple(args.methods)
    if args.seed is not None:
        changes["seed"] = args.seed
    config = dataclasses.replace(config, **changes)
    out = Path(args.out)
    records_path = out / f"{name}.records.jsonl" if args.resume else None
    records = run_sweep(
        config, progress=_progress, records_path=records_path, scheduler=args.scheduler, n_workers=args.workers
    )
    write_results(records, config, out, name)
    print(f"{'method':15s} {'value':>8s} {'success':>8s} {'median error':>13s}")
    for r in summarize(records):
        print(f"{r['method']:15s} {r['value']:8g} {r['success_rate']:8.2f} {r['median_error']:13.2e}")
    print(f"wrote {out / name}.csv/.json/.html")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from geninv.train import main as train_main

    return train_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geninv", description="Invert deep generative models.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)

    def corruption(p: argparse.ArgumentParser) -> None:
        p.add_argument("--missing", type=float, default=None, help="fraction of random pixels hidden (0..1)")
        p.add_argument("--box", type=int, default=None, help="side of a hidden centred square (images)")
        p.add_argument("--half", choices=["top", "bottom", "left", "right"], help="hide one half of the image")
        p.add_argument("--mask-png", default=None, help="PNG mask: white = observed")
        p.add_argument("--sigma", type=float, default=None, help="Gaussian noise standard deviation")
        p.add_argument("--seed", type=int, default=0, help="seed of latents, mask and noise (default 0)")
        p.add_argument("--samples", type=int, default=8, help="number of signals (default 8)")

    inv = sub.add_parser("invert", help="corrupt samples and invert them with several methods", epilog=EPILOG)
    inv.add_argument("--generator", default="mnist", help="generator spec (default mnist)")
    corruption(inv)
    inv.add_argument("--snr", type=float, default=None, help="noise as SNR in dB (instead of --sigma)")
    inv.add_argument("--methods", nargs="+", default=["gd", "latent-pursuit", "hybrid"], help="methods to run")
    inv.add_argument("--out", default="out/invert", help="output folder for results.json and PNGs")
    inv.set_defaults(func=cmd_invert)

    cer = sub.add_parser("certify", help="per-layer invertibility certificate statistics", epilog=EPILOG)
    cer.add_argument("--generator", default="mnist", help="generator spec (default mnist)")
    corruption(cer)
    cer.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cer.set_defaults(func=cmd_certify)

    swp = sub.add_parser("sweep", help="run a named experiment or a custom sweep", epilog=EPILOG)
    swp.add_argument(
        "preset", nargs="?", help="expansion, noise, missing-random, missing-mnist, box-mnist, certificate"
    )
    swp.add_argument("--generator", default="random:20-128-392-784", help="generator spec for a custom sweep")
    swp.add_argument("--variable", choices=["noise_db", "missing", "box", "expansion"], help="custom sweep variable")
    swp.add_argument("--values", type=float, nargs="+", help="values of the variable")
    swp.add_argument("--methods", nargs="+", help="methods (default: the preset's)")
    swp.add_argument("--trials", type=int, default=None, help="signals per value (default: the preset's)")
    swp.add_argument("--seed", type=int, default=None, help="seed (default: the preset's)")
    swp.add_argument("--workers", type=int, default=1, help="local worker processes (default 1: inline)")
    swp.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://127.0.0.1:8786")
    swp.add_argument("--resume", action="store_true", help="keep records in OUT/NAME.records.jsonl and resume")
    swp.add_argument("--out", default="docs/results", help="output folder (default docs/results)")
    swp.set_defaults(func=cmd_sweep)

    trn = sub.add_parser("train", help="train a shipped generator (see 'geninv train mnist --help')")
    trn.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the trainer, e.g. mnist --epochs 150")
    trn.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``geninv`` console script."""
    from geninv.errors import GeninvError

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "sigma", None) is not None and getattr(args, "snr", None) is not None:
        parser.exit(2, "geninv: error: give --sigma or --snr, not both\n")
    try:
        return int(args.func(args))
    except (GeninvError, ValueError, FileNotFoundError) as exc:
        sys.stderr.write(f"\ngeninv: error: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
