"""Sweeps that reproduce the paper's claims: configuration, running, records files, workers, summaries.

A sweep varies one parameter (noise level, fraction missing, box size, the expansion ratio of
random generators, or the number of compressed-sensing measurements), runs every method on the same
signals at each value and returns tidy records, one per signal x method x value. Work units are
(value, method) tasks; they run inline, on a local process pool, or on a Dask cluster, and with a
records file a sweep resumes where it stopped. :func:`summarize` and :func:`write_results` turn
records into a table and files (CSV, JSON, and the chart of :mod:`geninv.charts` as HTML).

A records file is JSON lines, one finished task per line, appended with one ``write`` of a whole
line (``O_APPEND``, never through a symbolic link). Reading it back checks every line against the
sweep's configuration: a torn last line (a writer killed mid-line) is dropped with a
:class:`~geninv.errors.RecordsWarning`, a task recorded twice counts once, and any other line that
does not fit (wrong shape, keys, values, trial indices, a success flag that contradicts the error)
raises an error naming the file and the line.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geninv import masks
from geninv._random import derive
from geninv._validation import check_choice, check_int, check_real, fail
from geninv.errors import BudgetError, InvalidValueError, RecordsWarning
from geninv.generator import Generator
from geninv.io import generator_from_spec, parse_spec
from geninv.observation import SNR_DB_RANGE, Observation, measurement_operator, observe

VARIABLES = ("noise_db", "missing", "box", "expansion", "measurements")
MEASUREMENT_KINDS = ("gaussian", "dct", "subsample")
"""Operators a "measurements" sweep can use (see :func:`geninv.operators.from_spec`)."""
ORACLE = "oracle"
CLEAN_DB = 1000.0  # "noise_db" value that means no noise
SEED_MAX = 2**63 - 1
"""Sweep seeds are offset per value (``seed + 1000 * index``) and must stay within torch's range."""


# --------------------------------------------------------------------------- sweeps
@dataclass(frozen=True)
class SweepConfig:
    """A sweep: ``trials`` signals per value, every method on the same signals.

    Parameters
    ----------
    generator : str
        A generator spec (``"mnist"``, ``"random:20-128-392-784"``...). For ``variable="expansion"``
        only its seed is used: widths are ``[20, 20r, 20r^2, 20r^3]``.
    variable : {'noise_db', 'missing', 'box', 'expansion', 'measurements'}
    values : tuple of float
        SNR in dB (``1000`` = clean), fraction of random pixels missing, side of a centred hidden
        box (images), expansion ratio r, or number of measurements m (compressed sensing).
    methods : tuple of str
        Registered method names, and ``"oracle"`` (least squares that knows the true supports).
    trials : int
    seed : int
    threshold : float
        Success = relative latent error at or below this.
    certificate : bool
        Add the certificate's verdicts to every record.
    method_options : dict
        ``{method: {option: value}}``.
    measurement : {'gaussian', 'dct', 'subsample'}
        The operator of a ``"measurements"`` sweep: ``m`` i.i.d. Gaussian rows, ``m`` random 2-D DCT
        coefficients, or ``m`` random pixels; drawn afresh for each value from the sweep's seed.
    """

    generator: str = "random:20-128-392-784"
    variable: str = "missing"
    values: tuple[float, ...] = (0.0, 0.3, 0.6)
    methods: tuple[str, ...] = ("gd", "latent-pursuit", "hybrid")
    trials: int = 20
    seed: int = 0
    threshold: float = 1e-3
    certificate: bool = False
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    measurement: str = "gaussian"

    def __post_init__(self) -> None:
        from geninv.inversion import methods as registered
        from geninv.inversion.registry import make_config
        from geninv.limits import HARD_LIMITS

        parse_spec(self.generator)
        check_choice("variable", self.variable, VARIABLES)
        for name in ("values", "methods"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, tuple | list):
                fail(name, "a list", value)
        object.__setattr__(self, "values", tuple(check_real("values", v) for v in self.values))
        object.__setattr__(self, "methods", tuple(self.methods))
        if not self.values:
            fail("values", "a non-empty list of numbers", self.values)
        if not self.methods:
            fail("methods", "a non-empty list of method names", self.methods)
        for m in self.methods:
            check_choice("methods", m, (*registered(), ORACLE))
        for name, items in (("values", self.values), ("methods", self.methods)):
            twice = sorted({str(v) for v in items if items.count(v) > 1})
            if twice:
                fail(name, "distinct entries", f"{', '.join(twice)} more than once")
        check_int("trials", self.trials, low=1)
        check_int("seed", self.seed, low=0, high=SEED_MAX - 1000 * len(self.values))
        check_real("threshold", self.threshold, low=0.0)
        if not isinstance(self.certificate, bool):
            fail("certificate", "a bool", self.certificate)
        for v in self.values:
            if self.variable == "missing":
                check_real("values", v, low=0.0, high=1.0, high_open=True)
            elif self.variable == "box":
                check_real("values", v, low=0.0)
                if v != int(v):
                    fail("values", "whole numbers of pixels for variable 'box'", v)
            elif self.variable == "measurements":
                n = sweep_widths(self, v)[-1]
                check_real("values", v, low=1.0, high=float(n))
                if v != int(v):
                    fail("values", "whole numbers of measurements for variable 'measurements'", v)
            elif self.variable == "expansion":
                check_real("values", v, low=1.0)
                try:
                    HARD_LIMITS.check_widths(sweep_widths(self, v), hard=True)
                except BudgetError:
                    fail("values", "expansion ratios whose widths 20, 20r, 20r², 20r³ can be built", v)
            elif v != CLEAN_DB:
                check_real("values", v, low=SNR_DB_RANGE[0], high=SNR_DB_RANGE[1])
        check_choice("measurement", self.measurement, MEASUREMENT_KINDS)
        if not isinstance(self.method_options, dict):
            fail("method_options", "a dict {method: {option: value}}", self.method_options)
        for m, opts in self.method_options.items():
            check_choice("method_options", m, tuple(x for x in self.methods if x != ORACLE))
            if not isinstance(opts, dict):
                fail(f"method_options[{m!r}]", "a dict {option: value}", opts)
            make_config(m, **opts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def key(self) -> str:
        """Short hash of the whole configuration (records carry it).

        ``measurement`` enters only for a "measurements" sweep, so that the other sweeps keep the keys
        their records files already carry.
        """
        payload = self.to_dict()
        if self.variable != "measurements":
            payload.pop("measurement")
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def versions() -> dict[str, str]:
    import geninv

    return {
        "geninv": geninv.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def sweep_widths(config: SweepConfig, value: float) -> tuple[int, ...]:
    """Widths of the generator a sweep uses at ``value`` (without building it)."""
    if config.variable == "expansion":
        return (20, *(max(1, round(20 * value**k)) for k in (1, 2, 3)))
    from geninv.io import spec_widths

    return spec_widths(config.generator)


@functools.lru_cache(maxsize=4)
def _cached_generator(spec: str, widths: tuple[int, ...] | None) -> Generator:
    """A few generators kept between the tasks of a sweep (bounded: a server runs many sweeps)."""
    if widths is not None:
        return Generator.random(list(widths), seed=parse_spec(spec).get("seed", 0))
    gen = generator_from_spec(spec)
    return gen.double() if gen.dtype != torch.float64 else gen


def _generator_for(config: SweepConfig, value: float) -> Generator:
    widths = sweep_widths(config, value) if config.variable == "expansion" else None
    return _cached_generator(config.generator, widths)


def _observation(config: SweepConfig, gen: Generator, value: float, index: int) -> Observation:
    # Each value gets its own signals, mask and noise; every stream is derived from (seed, purpose, value).
    seed = derive(config.seed, "sweep", index)
    z = gen.sample_latent(config.trials, seed=seed)
    n = gen.output_dim
    if config.variable == "missing":
        mask = masks.random_pixels(n, value, seed=seed) if value > 0 else None
        return observe(gen, z, mask=mask)
    if config.variable == "box":
        mask = masks.center_box(n, int(value)) if value > 0 else None
        return observe(gen, z, mask=mask)
    if config.variable == "noise_db":
        snr = None if value >= CLEAN_DB else value
        return observe(gen, z, snr_db=snr, seed=seed)
    if config.variable == "measurements":
        spec = f"{config.measurement}:{int(value)}:seed={derive(seed, 'measurement') % 2**31}"
        return observe(gen, z, operator=measurement_operator(spec, gen))
    return observe(gen, z)


def run_task(config_dict: dict[str, Any], value: float, method: str) -> list[dict[str, Any]]:
    """One (value, method) unit of a sweep; module level so that process pools and Dask can ship it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # many small tasks: one thread each; restored for the rest of the process
    try:
        return _run_task(SweepConfig(**config_dict), value, method)
    finally:
        torch.set_num_threads(before)


def _run_task(config: SweepConfig, value: float, method: str) -> list[dict[str, Any]]:
    from geninv.inversion import invert
    from geninv.inversion.oracle import oracle_latent
    from geninv.metrics import latent_error, psnr, relative_error
    from geninv.theory import certify

    index = config.values.index(value)
    gen = _generator_for(config, value)
    obs = _observation(config, gen, value, index)
    start = time.perf_counter()
    status: list[str]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == ORACLE:
            z_hat = oracle_latent(gen, obs)
            status, fwd = ["converged"] * config.trials, 0.0
        else:
            try:
                res = invert(gen, obs, method, seed=config.seed, **config.method_options.get(method, {}))
                z_hat, status, fwd = res.z_hat, [str(s) for s in res.statuses], res.forward_passes
            except Exception as exc:  # a method that cannot run here: record it, keep sweeping
                z_hat = torch.full_like(obs.z_true, float("nan"))
                status, fwd = [f"error: {type(exc).__name__}"] * config.trials, float("nan")
    seconds = (time.perf_counter() - start) / config.trials
    x_hat = gen(z_hat) if bool(torch.isfinite(z_hat).all()) else torch.full_like(obs.x_true, float("nan"))
    lat = latent_error(z_hat, obs.z_true).numpy()
    sig = relative_error(x_hat, obs.x_true).numpy()
    ps = psnr(x_hat, obs.x_true).numpy()
    cert = certify(gen, obs.z_true, operator=obs.operator) if config.certificate else None
    out = []
    for b in range(config.trials):
        row = {
            "config": config.key,
            "variable": config.variable,
            "value": value,
            "method": method,
            "trial": b,
            "latent_error": float(lat[b]),
            "signal_error": float(sig[b]),
            "psnr": float(ps[b]),
            "success": bool(lat[b] <= config.threshold),
            "seconds": seconds,
            "forward_passes": float(fwd),
            "status": status[b],
            "widths": "-".join(map(str, gen.widths)),
        }
        if cert is not None:
            row |= {
                "identifiable_network": bool(cert.identifiable_network[b]),
                "identifiable": bool(cert.identifiable[b]),
                "paper_unique": str(cert.paper_unique[b]),
                "lbp_guaranteed": bool(cert.lbp_guaranteed[b]),
            }
        out.append(row)
    return out


def _task_key(value: float, method: str) -> str:
    return f"{value!r}|{method}"


def run_sweep(
    config: SweepConfig,
    *,
    progress: Callable[[float, str], Any] | None = None,
    records_path: str | Path | None = None,
    scheduler: Any = None,
    n_workers: int | None = 1,
) -> list[dict[str, Any]]:
    """Run a sweep and return its records (also appended to ``records_path`` as JSON lines).

    Parameters
    ----------
    config : SweepConfig
    progress : callable, optional
        ``progress(fraction, message)``; returning False stops after the tasks in flight, and the
        records so far are returned (and kept in ``records_path`` for a resume).
    records_path : path, optional
        JSON-lines file; tasks already recorded there are skipped (resume). Lines are checked
        against ``config`` (see the module's notes); a symbolic link is refused.
    scheduler : str or distributed.Client, optional
        Run the tasks on a Dask cluster.
    n_workers : int or None
        Local processes; 1 runs inline (default), None uses up to 2. An interrupt (Ctrl-C) stops
        the workers at once; finished tasks stay in ``records_path``.

    Raises
    ------
    InvalidValueError
        A line of ``records_path`` that does not belong to this sweep (naming the file and line).
    """
    if not isinstance(config, SweepConfig):
        fail("config", "a SweepConfig", config)
    if n_workers is not None:
        check_int("n_workers", n_workers, low=1)
    path = Path(records_path) if records_path is not None else None
    done = _read_tasks(config, path, repair=True)
    tasks = [(v, m) for v in config.values for m in config.methods if _task_key(v, m) not in done]
    total = len(config.values) * len(config.methods)
    cfg = config.to_dict()
    finished = total - len(tasks)

    def record(value, method, rows) -> bool:
        nonlocal finished
        done[_task_key(value, method)] = rows
        finished += 1
        if path is not None:
            entry = {"config": config.key, "task": _task_key(value, method), "records": rows}
            append_line(path, json.dumps(entry))
        if progress is not None:
            return progress(finished / total, f"{config.variable}={value:g}, {method}") is not False
        return True

    if scheduler is not None:
        _run_dask(scheduler, cfg, tasks, record)
    elif n_workers == 1 or len(tasks) <= 1:
        for value, method in tasks:
            if not record(value, method, run_task(cfg, value, method)):
                break
    else:
        _run_pool(n_workers or 2, cfg, tasks, record)
    ordered = []
    for v in config.values:
        for m in config.methods:
            ordered.extend(done.get(_task_key(v, m), []))
    return ordered


def append_line(path: str | Path, line: str) -> None:
    """Append one line with a single ``write`` (O_APPEND: concurrent writers never interleave a line).

    The file is created with mode 0600 and never opened through a symbolic link.
    """
    data = (line.rstrip("\n") + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(f"{path}: only {written} of {len(data)} bytes of a record were written (disk full?)")


def _read_text(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise InvalidValueError(f"Cannot read the records file {path}: {exc.strerror}.") from None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidValueError(f"The records file {path} is not UTF-8 text.") from None


_ROW_TYPES: dict[str, tuple[type, ...]] = {
    "config": (str,),
    "variable": (str,),
    "value": (int, float),
    "method": (str,),
    "trial": (int,),
    "latent_error": (int, float),
    "signal_error": (int, float),
    "psnr": (int, float),
    "success": (bool,),
    "seconds": (int, float),
    "forward_passes": (int, float),
    "status": (str,),
    "widths": (str,),
}
_CERT_TYPES: dict[str, tuple[type, ...]] = {
    "identifiable_network": (bool,),
    "identifiable": (bool,),
    "paper_unique": (str,),
    "lbp_guaranteed": (bool,),
}


def _read_tasks(config: SweepConfig, path: Path | None, *, repair: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The tasks of ``config`` recorded in ``path``, checked line by line.

    With ``repair``, a torn last line is also cut off the file, so that the next append starts a new line.
    """
    done: dict[str, list[dict[str, Any]]] = {}
    if path is None or not (path.exists() or path.is_symlink()):
        return done
    text = _read_text(path)
    lines = text.split("\n")
    tasks = {_task_key(v, m): (v, m) for v in config.values for m in config.methods}
    cut = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = number == len(lines)  # no newline after it: a writer stopped mid-line
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            if not torn:
                raise InvalidValueError(f"{path}, line {number}: not a JSON record.") from None
            warnings.warn(f"{path}, line {number}: an incomplete last line was dropped.", RecordsWarning, stacklevel=3)
            if repair:
                _truncate(path, len(text.encode("utf-8")) - len(line.encode("utf-8")))
                cut = True
            break
        if not isinstance(entry, dict) or set(entry) != {"config", "task", "records"}:
            raise InvalidValueError(f"{path}, line {number}: a record must have exactly 'config', 'task', 'records'.")
        if entry["config"] != config.key:
            continue  # another sweep sharing the file
        if not isinstance(entry["task"], str) or entry["task"] not in tasks:
            raise InvalidValueError(f"{path}, line {number}: task {str(entry['task'])[:60]!r} is not in this sweep.")
        if entry["task"] in done:
            warnings.warn(
                f"{path}, line {number}: task {entry['task']!r} recorded again; counted once.",
                RecordsWarning,
                stacklevel=3,
            )
            continue
        value, method = tasks[entry["task"]]
        problem = _rows_problem(config, value, method, entry["records"])
        if problem:
            raise InvalidValueError(f"{path}, line {number}: {problem}.")
        done[entry["task"]] = entry["records"]
    if repair and text.strip() and not text.endswith("\n") and not cut:
        append_line(path, "")  # a complete last line without its newline: end it before the next append
    return done


def _rows_problem(config: SweepConfig, value: float, method: str, rows: Any) -> str | None:
    """Why ``rows`` cannot be the records of task (value, method) of ``config``, or None."""
    if not isinstance(rows, list) or len(rows) != config.trials:
        return f"'records' must be a list of {config.trials} rows (one per trial)"
    types = _ROW_TYPES | (_CERT_TYPES if config.certificate else {})
    trials = set()
    for row in rows:
        if not isinstance(row, dict) or set(row) != set(types):
            return "a row must have exactly the keys " + ", ".join(types)
        for key, kinds in types.items():
            if not isinstance(row[key], kinds) or (bool not in kinds and isinstance(row[key], bool)):
                return f"'{key}' must be of type {' or '.join(k.__name__ for k in kinds)}"
        expected = {"config": config.key, "variable": config.variable, "value": value, "method": method}
        for key, want in expected.items():
            if row[key] != want:
                return f"'{key}' is {str(row[key])[:40]!r} where the task has {want!r}"
        error = float(row["latent_error"])
        if not (math.isnan(error) or error >= 0) or row["success"] != bool(error <= config.threshold):
            return f"'success' {row['success']} does not follow from latent_error {error:g}"
        trials.add(row["trial"])
    if trials != set(range(config.trials)):
        return f"the trials must be 0 to {config.trials - 1}, each once"
    return None


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def read_records(config: SweepConfig, records_path: str | Path) -> list[dict[str, Any]]:
    """The records of ``config`` already in ``records_path`` (a stopped sweep's partial results)."""
    done = _read_tasks(config, Path(records_path))
    return [row for v in config.values for m in config.methods for row in done.get(_task_key(v, m), [])]


def _run_pool(n_workers: int, cfg, tasks, record) -> None:
    """Tasks on local processes; a stop, an error or Ctrl-C cancels the queue and ends the workers at once."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context("spawn"))
    finished = False
    try:
        futures = {pool.submit(run_task, cfg, v, m): (v, m) for v, m in tasks}
        for fut in as_completed(futures):
            v, m = futures[fut]
            if not record(v, m, fut.result()):
                break
        else:
            finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:
            _stop_pool(pool)


def _stop_pool(pool: Any) -> None:
    """Cancel queued tasks and end the worker processes now (shutdown alone waits for running tasks)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)
        if proc.is_alive():  # still starting up, or ignoring SIGTERM
            proc.kill()
            proc.join(timeout=5)


def connect(address: str, *, timeout: float = 10.0) -> Any:
    """A Dask client for ``address`` (``tcp://host:port``), or an error within ``timeout`` seconds."""
    from distributed import Client

    if not isinstance(address, str) or "://" not in address:
        fail("scheduler", "a Dask scheduler address such as tcp://127.0.0.1:8786", address)
    try:
        return Client(address, timeout=timeout)
    except Exception as exc:  # whatever answers there (nothing, a timeout, another protocol)
        raise InvalidValueError(f"Cannot reach the Dask scheduler at {address[:80]} ({type(exc).__name__}).") from None


def _run_dask(scheduler: Any, cfg, tasks, record) -> None:
    from distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else connect(scheduler)
    futures = []
    try:
        futures = [client.submit(run_task, cfg, v, m, pure=False) for v, m in tasks]
        keys = {f.key: t for f, t in zip(futures, tasks)}
        for fut in as_completed(futures):
            v, m = keys[fut.key]
            if not record(v, m, fut.result()):
                break
    finally:
        client.cancel([f for f in futures if not f.done()])
        if client is not scheduler:
            client.close()


# --------------------------------------------------------------------------- summaries and reports
def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (value, method): trials, success rate, error quantiles, time; plus certificate rates."""
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["value"], r["method"]), []).append(r)
    out = []
    for (value, method), rows in groups.items():
        err = np.array([r["latent_error"] for r in rows], dtype=float)
        row = {
            "value": value,
            "method": method,
            "trials": len(rows),
            "success_rate": float(np.mean([r["success"] for r in rows])),
            "median_error": float(np.nanmedian(err)) if np.isfinite(err).any() else math.nan,
            "q25_error": float(np.nanquantile(err, 0.25)) if np.isfinite(err).any() else math.nan,
            "q75_error": float(np.nanquantile(err, 0.75)) if np.isfinite(err).any() else math.nan,
            "seconds_per_signal": float(np.mean([r["seconds"] for r in rows])),
        }
        if "identifiable" in rows[0]:
            row["identifiable_rate"] = float(np.mean([r["identifiable"] for r in rows]))
            row["paper_unique_rate"] = float(np.mean([r["paper_unique"] == "holds" for r in rows]))
            row["lbp_guaranteed_rate"] = float(np.mean([r["lbp_guaranteed"] for r in rows]))
            if "identifiable_network" in rows[0]:
                row["identifiable_network_rate"] = float(np.mean([r["identifiable_network"] for r in rows]))
        out.append(row)
    return sorted(out, key=lambda r: (r["method"], r["value"]))


def write_results(records: Sequence[dict[str, Any]], config: SweepConfig, out_dir: str | Path, name: str) -> dict:
    """Write ``name.csv``, ``name.json`` (config, versions, summary, records) and ``name.html``."""
    import csv

    from geninv.charts import figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{name}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    payload = {"config": config.to_dict(), "key": config.key, "versions": versions(), "summary": summarize(records)}
    (out / f"{name}.json").write_text(json.dumps(payload | {"records": list(records)}, indent=1) + "\n")
    metric = (
        "identifiable_rate"
        if config.certificate
        else ("median_error" if config.variable == "noise_db" else "success_rate")
    )
    # plotly.min.js is written once beside the HTML files, so that they work offline.
    figure(records, metric, title=name).write_html(out / f"{name}.html", include_plotlyjs="directory")
    return payload
