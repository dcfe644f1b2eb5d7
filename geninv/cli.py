"""The ``geninv`` command line: invert, certify, sweep, train.

Bad input exits with status 2 and one line on stderr (no traceback), checked before any compute.
Progress goes to stderr: a bar redrawn in place on a terminal, plain lines in a log file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EPILOG = (
    "Generators: 'mnist', 'mnist-conv' or 'random:20-128-392-784[:seed=0][:bias][:hidden=leaky_relu]"
    "[:output=sigmoid]'. Measurements (--measurements): 'gaussian:M[:seed=S]', 'dct:M[:seed=S]', "
    "'subsample:M[:seed=S]' or 'blur[:sigma=X][:stride=K]'."
)


class _Progress:
    """A progress bar redrawn in place (``\\r``) on a terminal; plain lines every 10% into a file or pipe."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.last = -1.0

    def __call__(self, fraction: float, message: str) -> bool:
        step = 0.01 if self.tty else 0.1
        if 0 < fraction < 1 and fraction - self.last < step:
            return True
        self.last = fraction if fraction < 1 else -1.0
        if self.tty:
            width = 30
            done = round(fraction * width)
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {100 * fraction:5.1f}%  {message[:60]:<60}")
            if fraction >= 1:
                self.stream.write("\n")
        else:
            self.stream.write(f"{100 * fraction:5.1f}%  {message[:60]}\n")
        self.stream.flush()
        return True


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the rest of geninv's errors are too)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _fail(message: str) -> None:
    from geninv.errors import InvalidValueError

    raise InvalidValueError(message)


def _check_common(args: argparse.Namespace) -> None:
    """Options every command shares, checked before any work."""
    from geninv._validation import check_int, check_real
    from geninv.observation import SNR_DB_RANGE

    check_int("samples", args.samples, low=1)
    check_int("seed", args.seed, low=0, high=2**63 - 1)
    if args.missing is not None:
        check_real("missing", args.missing, low=0.0, high=1.0, high_open=True)
    if args.box is not None:
        check_int("box", args.box, low=0)
    if args.sigma is not None:
        check_real("sigma", args.sigma, low=0.0)
    if getattr(args, "snr", None) is not None:
        check_real("snr", args.snr, low=SNR_DB_RANGE[0], high=SNR_DB_RANGE[1])
    if args.mask_png is not None and not Path(args.mask_png).is_file():
        _fail(f"The 'mask-png' parameter must be a PNG file. Got {args.mask_png!r}, which is not a file.")
    if getattr(args, "measurements", None) is not None:
        from geninv.operators import parse_spec

        parse_spec(args.measurements)


def _operator(args: argparse.Namespace, gen: Any):
    """The measurement operator ``--measurements`` names (None: a mask or every pixel)."""
    from geninv.observation import measurement_operator

    return None if args.measurements is None else measurement_operator(args.measurements, gen)


def _check_memory(args: argparse.Namespace, gen: Any, operator: Any, methods: Sequence[str]) -> None:
    """Refuse ``--samples`` that this machine cannot hold, before any signal is drawn."""
    from geninv.inversion.registry import make_config
    from geninv.limits import RECORD_BYTES, check_memory, held_bytes

    configs = {name: make_config(name) for name in methods}
    m = None if operator is None else operator.shape[0]
    held = held_bytes(gen.widths, configs, batch=args.samples, measurements=m)
    held += RECORD_BYTES * args.samples * len(methods)  # the report's rows
    check_memory(f"The 'samples' parameter ({args.samples:,} signals)", held)


def _out_folder(text: str) -> Path:
    """The output folder, created now, so that a bad ``--out`` fails before any compute."""
    out = Path(text)
    if out.exists() and not out.is_dir():
        _fail(f"The 'out' parameter must be a folder. Got {text!r}, which is a file.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"The 'out' parameter must be a folder geninv can create. Got {text!r} ({exc.strerror}).")
    if not os.access(out, os.W_OK):
        _fail(f"The 'out' parameter must be a writable folder. Got {text!r}.")
    return out


def _mask(args: argparse.Namespace, n: int):
    from geninv import masks

    # argparse allows only one of them (a mutually exclusive group)
    if args.missing is not None:
        return masks.random_pixels(n, args.missing, seed=args.seed)
    if args.box is not None:
        return masks.center_box(n, args.box)
    if args.half is not None:
        return masks.half(n, hide=args.half)
    if args.mask_png is not None:
        return masks.from_png(args.mask_png, n)
    return None


def cmd_invert(args: argparse.Namespace) -> int:
    import numpy as np

    from geninv import masks, metrics, observe
    from geninv.experiments import run_methods
    from geninv.io import generator_from_spec

    _check_common(args)
    if len(set(args.methods)) != len(args.methods):
        _fail(f"The 'methods' parameter must name each method once. Got {' '.join(args.methods)}.")
    out = _out_folder(args.out)
    gen = generator_from_spec(args.generator, dtype=None).double()
    mask = _mask(args, gen.output_dim)
    operator = _operator(args, gen)
    _check_memory(args, gen, operator, args.methods)
    z = gen.sample_latent(args.samples, seed=args.seed)
    obs = observe(gen, z, mask=mask, operator=operator, noise_sigma=args.sigma, snr_db=args.snr, seed=args.seed)
    results = run_methods(gen, obs, args.methods, seed=args.seed, progress=_Progress())
    written: list[Path] = []
    report: dict[str, Any] = {
        "generator": args.generator,
        "samples": args.samples,
        "seed": args.seed,
        "mask_observed": None if mask is None else int(mask.sum()),
        "measurements": args.measurements,
        "m": int(obs.y.shape[1]),
        "sigma": args.sigma,
        "snr_db": args.snr,
        "methods": {},
    }
    side = round(gen.output_dim**0.5)
    is_image = side * side == gen.output_dim
    if is_image:
        written.append(_save_png(obs.x_true.numpy(), side, out / "original.png"))
    if is_image and obs.operator.is_selection:  # measurements that are pixels can be shown as an image
        observed = obs.operator.adjoint(obs.y).numpy()
        written.append(_save_png(observed, side, out / "observed.png", mask=mask))
        if mask is not None and is_image:
            masks.to_png(mask, (side, side), out / "mask.png")
            written.append(out / "mask.png")
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
            written.append(_save_png(res.x_hat.numpy(), side, out / f"reconstruction_{method}.png"))
    (out / "results.json").write_text(json.dumps(_finite(report), indent=1, allow_nan=False) + "\n")
    written.insert(0, out / "results.json")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _finite(x: Any) -> Any:
    """Plain JSON: numpy scalars as numbers, NaN and inf as null (never a bare NaN in the file)."""
    import math

    import numpy as np

    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, np.ndarray):
        return _finite(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _save_png(x, side: int, path: Path, mask=None) -> Path:
    from geninv.viz import grid_png

    path.write_bytes(grid_png(x, (side, side), mask=mask))
    return path


def cmd_certify(args: argparse.Namespace) -> int:
    from geninv import certify
    from geninv.io import generator_from_spec

    _check_common(args)
    gen = generator_from_spec(args.generator).double()
    mask = _mask(args, gen.output_dim)
    operator = _operator(args, gen)
    _check_memory(args, gen, operator, ())
    z = gen.sample_latent(args.samples, seed=args.seed)
    cert = certify(gen, z, mask=mask, operator=operator, noise_sigma=args.sigma or 0.0)
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
    seen = f" from {args.measurements}" if args.measurements else ""
    print(f"certificate of {args.generator}{seen} over {args.samples} samples (step k recovers x_k; 0 = z)")
    print("  ".join(f"{c:>18s}" for c in cols))
    for r in rows:
        print(
            "  ".join(
                f"{r.get(c, ''):>18.3f}" if isinstance(r.get(c), float) else f"{r.get(c, '')!s:>18s}" for c in cols
            )
        )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from geninv._validation import check_int
    from geninv.presets import PRESETS
    from geninv.sweeps import CLEAN_DB, SweepConfig, connect, run_sweep, summarize, write_results

    if args.preset:
        if args.preset not in PRESETS:
            raise ValueError(f"Unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}.")
        config = PRESETS[args.preset]
        name = args.preset
    else:
        if not (args.variable and args.values):
            raise ValueError("Give a preset, or --variable and --values.")
        config = SweepConfig(
            generator=args.generator,
            variable=args.variable,
            values=tuple(args.values),
            measurement=args.measurement,
        )
        name = f"sweep-{args.variable}"
    changes: dict[str, Any] = {}
    if args.trials is not None:
        changes["trials"] = args.trials
    if args.methods:
        changes["methods"] = tuple(args.methods)
    if args.seed is not None:
        changes["seed"] = args.seed
    config = dataclasses.replace(config, **changes)
    check_int("workers", args.workers, low=1)
    _check_sweep_memory(config, tasks_at_once=1 if args.scheduler else args.workers)
    out = _out_folder(args.out)
    records_path = out / f"{name}.records.jsonl"
    if not args.resume and (records_path.exists() or records_path.is_symlink()):
        records_path.unlink()  # a fresh sweep; --resume keeps what an earlier run finished
    scheduler = connect(args.scheduler, timeout=5) if args.scheduler else None
    try:
        records = run_sweep(
            config, progress=_Progress(), records_path=records_path, scheduler=scheduler, n_workers=args.workers
        )
    except KeyboardInterrupt:
        sys.stderr.write(
            f"{_end_bar()}geninv: interrupted; the finished tasks are kept in {records_path} (continue with --resume)\n"
        )
        return 130
    finally:
        if scheduler is not None:
            scheduler.close()
    write_results(records, config, out, name)
    print(f"{'method':15s} {'value':>8s} {'success':>8s} {'median error':>13s}")
    for r in summarize(records):
        value = "clean" if config.variable == "noise_db" and r["value"] >= CLEAN_DB else f"{r['value']:g}"
        print(f"{r['method']:15s} {value:>8s} {r['success_rate']:8.2f} {r['median_error']:13.2e}")
    print(f"wrote {out / name}.csv/.json/.html and {records_path.name}")
    return 0


def _check_sweep_memory(config: Any, *, tasks_at_once: int) -> None:
    """Refuse ``--trials`` that this machine cannot hold (``tasks_at_once`` tasks of one value, one method
    and ``trials`` signals each, the local workers', and every record row the sweep keeps), before any
    task runs."""
    from geninv.inversion.registry import make_config
    from geninv.limits import RECORD_BYTES, check_memory, held_bytes
    from geninv.sweeps import ORACLE, sweep_widths

    rows = len(config.values) * len(config.methods) * config.trials * RECORD_BYTES
    configs = [{} if method == ORACLE else {method: make_config(method)} for method in config.methods]
    worst = 0.0
    for value in config.values:
        widths = sweep_widths(config, value)
        m = int(value) if config.variable == "measurements" else None
        for one in configs:
            worst = max(worst, held_bytes(widths, one, batch=config.trials, measurements=m))
    check_memory(f"The 'trials' parameter ({config.trials:,} signals per task)", worst * tasks_at_once + rows)


def cmd_train(args: argparse.Namespace) -> int:
    from geninv.train import main as train_main

    return train_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    from geninv.inversion import methods
    from geninv.sweeps import ORACLE

    names = methods()
    default_methods = ["gd", "latent-pursuit", "hybrid"]
    parser = _Parser(prog="geninv", description="Invert deep generative models.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)

    def corruption(p: argparse.ArgumentParser) -> None:
        hide = p.add_mutually_exclusive_group()
        hide.add_argument("--missing", type=float, default=None, help="fraction of random pixels hidden (0..1)")
        hide.add_argument("--box", type=int, default=None, help="side of a hidden centred square (images)")
        hide.add_argument("--half", choices=["top", "bottom", "left", "right"], help="hide one half of the image")
        hide.add_argument("--mask-png", default=None, help="PNG mask: white = observed")
        hide.add_argument(
            "--measurements",
            default=None,
            metavar="SPEC",
            help="compressed sensing instead of pixels: gaussian:M[:seed=S], dct:M[:seed=S], "
            "subsample:M[:seed=S] or blur[:sigma=X][:stride=K]",
        )
        p.add_argument("--sigma", type=float, default=None, help="Gaussian noise standard deviation")
        p.add_argument("--seed", type=int, default=0, help="seed of latents, mask and noise (default 0)")
        p.add_argument("--samples", type=int, default=8, help="number of signals (default 8)")

    inv = sub.add_parser("invert", help="corrupt samples and invert them with several methods", epilog=EPILOG)
    inv.add_argument("--generator", default="mnist", help="generator spec (default mnist)")
    corruption(inv)
    inv.add_argument("--snr", type=float, default=None, help="noise as SNR in dB (instead of --sigma)")
    inv.add_argument(
        "--methods",
        nargs="+",
        choices=names,
        metavar="METHOD",
        default=default_methods,
        help=f"methods to run, any of: {', '.join(names)} (default: {' '.join(default_methods)})",
    )
    inv.add_argument("--out", default="out/invert", help="output folder for results.json and PNGs (default out/invert)")
    inv.set_defaults(func=cmd_invert)

    cer = sub.add_parser("certify", help="per-layer invertibility certificate statistics", epilog=EPILOG)
    cer.add_argument("--generator", default="mnist", help="generator spec (default mnist)")
    corruption(cer)
    cer.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cer.set_defaults(func=cmd_certify)

    swp = sub.add_parser("sweep", help="run a named experiment or a custom sweep", epilog=EPILOG)
    from geninv.presets import PRESETS
    from geninv.sweeps import MEASUREMENT_KINDS, VARIABLES

    swp.add_argument("preset", nargs="?", help=", ".join(PRESETS))
    swp.add_argument("--generator", default="random:20-128-392-784", help="generator spec for a custom sweep")
    swp.add_argument("--variable", choices=list(VARIABLES), help="custom sweep variable")
    swp.add_argument(
        "--measurement",
        choices=list(MEASUREMENT_KINDS),
        default="gaussian",
        help="operator of a 'measurements' sweep (default gaussian; the values are m)",
    )
    swp.add_argument("--values", type=float, nargs="+", help="values of the variable")
    swp.add_argument(
        "--methods",
        nargs="+",
        choices=[*names, ORACLE],
        metavar="METHOD",
        help=f"methods, any of: {', '.join([*names, ORACLE])} (default: the preset's)",
    )
    swp.add_argument("--trials", type=int, default=None, help="signals per value (default: the preset's)")
    swp.add_argument("--seed", type=int, default=None, help="seed (default: the preset's)")
    swp.add_argument("--workers", type=int, default=1, help="local worker processes (default 1: inline)")
    swp.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://127.0.0.1:8786")
    swp.add_argument(
        "--resume", action="store_true", help="continue from OUT/NAME.records.jsonl (else a fresh sweep replaces it)"
    )
    swp.add_argument("--out", default="out/sweeps", help="output folder (default out/sweeps)")
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
    except (GeninvError, ValueError, OSError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        sys.stderr.write(f"{_end_bar()}geninv: error: {message[:500]}\n")
        return 2
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        sys.stderr.write(
            f"{_end_bar()}geninv: error: this machine ran out of memory partway through; "
            "ask for fewer signals or a smaller generator.\n"
        )
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{_end_bar()}geninv: interrupted\n")
        return 130


def _out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, or torch's (a RuntimeError on the CPU, OutOfMemoryError
    on a GPU)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return "can't allocate memory" in text or "out of memory" in text.lower()


def _end_bar() -> str:
    """A newline that ends a progress bar drawn in place on a terminal (nothing in a log file)."""
    return "\n" if sys.stderr.isatty() else ""


if __name__ == "__main__":
    raise SystemExit(main())
