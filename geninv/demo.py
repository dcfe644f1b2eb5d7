"""One experiment on one signal, or on a batch of signals, as the dashboard shows it.

:func:`run` executes an :class:`~geninv.session.Experiment` and returns an :class:`Outcome` made of
plain numpy arrays and dicts (picklable, JSON-exportable: :meth:`Outcome.to_json`,
:meth:`Outcome.to_npz`): reconstructions, metrics, per-layer supports, convergence histories,
replay frames and the certificate. :func:`run_batch` runs it on ``n`` samples and returns a
:class:`BatchOutcome` (success rates with their intervals). :func:`preview_measurements` shows a
measurement operator before a run. The experiment spec and its URL codec live in
:mod:`geninv.session`, the words and formulas in :mod:`geninv.explain`; ``Experiment`` and
``Corruption`` are also importable from here. Nothing here imports Streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geninv._validation import check_int, fail
from geninv.errors import GeninvError
from geninv.explain import THRESHOLD, verdict_words
from geninv.generator import Generator
from geninv.observation import Observation, measurement_operator, observe
from geninv.session import Corruption, Experiment, _plain, measurement_spec, parse_measurements
from geninv.viz import image_shape

__all__ = [
    "MAX_FRAMES",
    "ORACLE",
    "SPARK_BUDGET",
    "BatchOutcome",
    "Corruption",
    "Experiment",
    "MethodOutcome",
    "Outcome",
    "batch_observation",
    "forward_from",
    "oracle_result",
    "preview_measurements",
    "run",
    "run_batch",
    "support_map",
]

MAX_FRAMES = 120
"""Replay frames kept per iterative method (evenly spaced over its records)."""
SPARK_BUDGET = 2000
"""Column subsets the certificate of one experiment may search for the exact spark."""


# --------------------------------------------------------------------------- the outcome
@dataclass
class MethodOutcome:
    """One method on the experiment's signal, as plain arrays.

    ``layers`` holds per hidden layer: relative error, support precision / recall / F1 and the
    support map (0 = inactive in both, 1 = true positive, 2 = miss, 3 = false alarm).
    ``history`` (iterative methods): iterations, loss and latent error per restart, and replay
    frames (the output at sampled iterations). ``steps`` (layer-wise methods): per step the layer,
    rows, residual, solver, relative error of the layer and the output that estimate implies.
    """

    method: str
    error: str | None = None
    x_hat: np.ndarray | None = None
    z_hat: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = float("nan")
    forward_passes: float = float("nan")
    status: str = ""
    layers: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


ORACLE = "oracle"
"""Name of the extra row of a noisy run: least squares on the true activation pattern."""


@dataclass
class Outcome:
    """Everything the dashboard shows about one experiment.

    ``network`` is the whole-network certificate of the sample (verdict, identifiability, gains,
    the oracle's predicted error at the run's noise level; see :meth:`geninv.Certificate.network_records`)
    plus ``observed`` and ``saturated`` (observed pixels that give no equation). A noisy run also has
    an ``"oracle"`` entry in ``methods`` (least squares on the true activation pattern). With a real
    digit, ``digit`` holds the digit, its projection onto the range and the projection's error, and
    ``z`` / ``true_layers`` are the projection's.

    With a measurement operator (compressed sensing) ``measurements`` holds its spec, kind, ``m``
    (rows), ``n`` (the output size) and the measurements ``y`` themselves; ``observed`` is then the
    back-projection ``A^T y`` (an image, not the measurements), and ``mask`` is None.
    ``layer_shapes[k]`` is the shape of ``x_k`` (0 = z): ``(C, H, W)`` where a convolution produces
    or reads it (draw its support as C feature maps), else ``(n_k,)``.
    """

    experiment: Experiment
    widths: tuple[int, ...]
    image_shape: tuple[int, int] | None
    z: np.ndarray
    x_true: np.ndarray
    observed: np.ndarray  # A^T y: the measurements placed on the full output (hidden entries 0)
    mask: np.ndarray | None
    sigma: float
    true_layers: list[np.ndarray]
    true_supports: list[np.ndarray]
    certificate: list[dict[str, Any]]
    methods: dict[str, MethodOutcome]
    network: dict[str, Any] = field(default_factory=dict)
    digit: dict[str, Any] | None = None
    threshold: float = THRESHOLD
    measurements: dict[str, Any] | None = None
    layer_shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def verdict(self) -> tuple[str, str]:
        """The whole-network verdict in words: (headline, explanation)."""
        return verdict_words(self.network, measured="pixels" if self.measurements is None else "measurements")

    def table(self) -> list[dict[str, Any]]:
        """One row per method (the oracle last): status, recovered?, latent error, PSNR, errors, time, cost."""
        rows = []
        for name, m in self.methods.items():
            row: dict[str, Any] = {"method": name}
            if m.error:
                row["error"] = m.error
            else:
                latent = m.metrics.get("latent_error")
                row |= {
                    "status": m.status,
                    "recovered": bool(latent is not None and latent <= self.threshold),
                    "latent_error": latent,
                    "psnr_db": m.metrics.get("psnr"),
                    "signal_error": m.metrics.get("signal_error"),
                    "observed_residual": m.metrics.get("observed_residual"),
                    "seconds": m.seconds,
                    "forward_passes": m.forward_passes,
                }
                if self.digit is not None:
                    row["digit_error"] = m.metrics.get("digit_error")
            rows.append(row)
        return rows

    def layer_table(self) -> list[dict[str, Any]]:
        """Per recovery step: the certificate beside each method's error and support scores there."""
        rows = []
        for cert in self.certificate:
            layer = cert["layer"]
            row = dict(cert)
            for name, m in self.methods.items():
                if m.error:
                    continue
                if layer == 0:
                    row[f"{name}: error"] = m.metrics.get("latent_error")
                else:
                    info = m.layers[layer - 1]
                    row[f"{name}: error"] = info["error"]
                    row[f"{name}: precision"] = info["precision"]
                    row[f"{name}: recall"] = info["recall"]
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly export: the experiment, the certificate, metrics and estimates."""
        return _jsonable(
            {
                "experiment": self.experiment.to_dict(),
                "query": self.experiment.to_query(),
                "widths": list(self.widths),
                "layer_shapes": [list(s) for s in self.layer_shapes],
                "measurements": self.measurements,
                "z_true": self.z,
                "sigma": self.sigma,
                "network": self.network,
                "verdict": list(self.verdict),
                "digit": None if self.digit is None else {k: v for k, v in self.digit.items() if k != "image"},
                "certificate": self.certificate,
                "methods": {
                    name: {
                        "error": m.error,
                        "status": m.status,
                        "metrics": m.metrics,
                        "seconds": m.seconds,
                        "forward_passes": m.forward_passes,
                        "options": m.options,
                        "z_hat": m.z_hat,
                        "layers": [{k: v for k, v in info.items() if k != "map"} for info in m.layers],
                        "steps": [
                            {k: v for k, v in s.items() if k not in ("estimate", "image", "truth", "map")}
                            for s in m.steps
                        ],
                    }
                    for name, m in self.methods.items()
                },
            }
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the run, flat-keyed (``"gd/history/loss"``, ``"truth/x1"``...), for :meth:`to_npz`."""
        out: dict[str, np.ndarray] = {
            "truth/z": self.z,
            "truth/x": self.x_true,
            "observed": self.observed,
            "sigma": np.array(self.sigma),
            "widths": np.array(self.widths),
        }
        if self.mask is not None:
            out["mask"] = self.mask
        if self.measurements is not None:
            out["measurements"] = self.measurements["y"]
        for i, (layer, support) in enumerate(zip(self.true_layers, self.true_supports, strict=True)):
            out[f"truth/x{i + 1}"] = layer
            out[f"truth/support{i + 1}"] = support
        if self.digit is not None:
            out["digit/image"] = self.digit["image"]
            out["digit/projection"] = self.digit["projection"]
        for key in ("noise_gain", "condition", "predicted_error", "step_gain_product", "sigma_min", "sigma_max"):
            if key in self.network:
                out[f"certificate/{key}"] = np.array(self.network[key], dtype=np.float64)
        for rec in self.certificate:
            for key in ("rows", "cardinality", "support_rank", "support_sigma_min", "noise_gain"):
                out[f"certificate/step_x{rec['layer']}/{key}"] = np.array(rec[key], dtype=np.float64)
        for name, m in self.methods.items():
            if m.error:
                continue
            out[f"{name}/z_hat"] = m.z_hat
            out[f"{name}/x_hat"] = m.x_hat
            for key, value in m.metrics.items():
                out[f"{name}/metrics/{key}"] = np.array(value, dtype=np.float64)
            for info in m.layers:
                out[f"{name}/support_map{info['layer']}"] = info["map"]
            for key, value in m.history.items():
                if isinstance(value, np.ndarray):
                    out[f"{name}/history/{key}"] = value
                elif isinstance(value, list):  # per hidden layer
                    for i, arr in enumerate(value):
                        out[f"{name}/history/{key}{i + 1}"] = arr
            for k, step in enumerate(m.steps):
                for key in ("estimate", "truth", "image", "map"):
                    if step.get(key) is not None:
                        out[f"{name}/step{k + 1}_x{step['layer']}/{key}"] = step[key]
        return {k: np.asarray(v) for k, v in out.items() if v is not None}

    def to_npz(self) -> bytes:
        """Every array of the run (:meth:`arrays`: truth, estimates, full histories, per-step states, support
        maps, certificate numbers) as a compressed NPZ file; ``np.load(..., allow_pickle=False)`` reads it."""
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, **self.arrays())
        return buffer.getvalue()


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def forward_from(generator: Generator, layer: int, x: torch.Tensor) -> torch.Tensor:
    """The output implied by an estimate of layer ``layer`` (0 = z): the rest of the forward pass."""
    out = x.to(generator.dtype)
    for i in range(layer, generator.n_layers):
        out = generator.activation(i)(generator.pre_activation(i, out))
    return out


def support_map(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """0 = inactive in both, 1 = true positive, 2 = miss (true, not found), 3 = false alarm."""
    est, tru = np.asarray(estimate, bool), np.asarray(truth, bool)
    out = np.zeros(est.shape, dtype=np.int8)
    out[est & tru] = 1
    out[~est & tru] = 2
    out[est & ~tru] = 3
    return out


def run(
    generator: Generator,
    experiment: Experiment,
    *,
    progress: Callable[[float, str], Any] | None = None,
) -> Outcome:
    """Run every method of ``experiment`` on its signal; a method that fails keeps its message."""
    from geninv.experiments import run_methods
    from geninv.theory import certify

    if not isinstance(experiment, Experiment):
        fail("experiment", "a geninv.demo.Experiment", experiment)
    obs = experiment.observation(generator)
    trace = obs.trace_true
    mask = obs.mask
    sigma = float(obs.noise_sigma[0])
    spec = experiment.corruption.measurements
    measured = {"operator": obs.operator} if spec else {"mask": mask}
    cert = certify(generator, obs.z_true, noise_sigma=sigma, spark_budget=SPARK_BUDGET, **measured)
    results = run_methods(
        generator, obs, experiment.methods, options=experiment.options, seed=experiment.seed, progress=progress
    )
    if sigma > 0 and experiment.digit is None:  # a real digit has no true supports to give an oracle
        results[ORACLE] = oracle_result(generator, obs)
    outcomes = {name: _method_outcome(generator, obs, name, res) for name, res in results.items()}
    network = cert.network_records()[0]
    n_observed = int(obs.y.shape[1] if spec else generator.output_dim if mask is None else np.asarray(mask).sum())
    network |= {"observed": n_observed, "equations_output": int(cert.layers[0].rows[0])}
    measurements = None
    if spec:
        parsed = parse_measurements(spec)
        measurements = {
            "spec": spec,
            "kind": parsed["kind"],
            "m": int(obs.y.shape[1]),
            "n": int(generator.output_dim),
            "seed": int(parsed["seed"]),
            "y": _np(obs.y[0]),
        }
    digit_info = None
    if experiment.digit is not None:
        from geninv.digits import CREDIT, load_digits
        from geninv.metrics import relative_error

        digits = load_digits()
        x_digit = torch.as_tensor(np.array(digits.images[experiment.digit]), dtype=generator.dtype)
        digit_info = {
            "index": int(digits.indices[experiment.digit]),
            "label": int(digits.labels[experiment.digit]),
            "description": digits.describe(experiment.digit),
            "credit": CREDIT,
            "image": _np(x_digit),
            "projection": _np(obs.x_true[0]),
            "projection_error": float(relative_error(obs.x_true[:1], x_digit.unsqueeze(0))[0]),
            "projection_latent_norm": float(obs.z_true[0].norm()),
        }
        for m in outcomes.values():
            if not m.error and m.x_hat is not None:
                x_hat = torch.as_tensor(m.x_hat).unsqueeze(0)
                m.metrics["digit_error"] = float(relative_error(x_hat, x_digit.unsqueeze(0).to(x_hat))[0])
    return Outcome(
        experiment=experiment,
        widths=generator.widths,
        image_shape=image_shape(generator.output_dim),
        z=_np(obs.z_true[0]),
        x_true=_np(obs.x_true[0]) if digit_info is None else digit_info["image"],
        observed=_np(obs.operator.adjoint(obs.y)[0]),
        mask=None if mask is None else np.asarray(mask, dtype=bool),
        measurements=measurements,
        layer_shapes=tuple(tuple(int(d) for d in generator.layer_shape(k)) for k in range(generator.n_layers + 1)),
        sigma=float(obs.noise_sigma[0]),
        true_layers=[_np(a[0]) for a in trace.activations[:-1]],
        true_supports=[s[0].cpu().numpy() for s in trace.supports[:-1]],
        certificate=[{k: v for k, v in r.items() if k != "sample"} for r in cert.to_records()],
        methods=outcomes,
        network=network,
        digit=digit_info,
    )


def preview_measurements(generator: Generator, spec: str, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """The noise-free measurements ``y = A x`` of an output ``x`` under a measurement spec, and their
    back-projection ``A^T y`` (what the dashboard shows before a run)."""
    op = measurement_operator(measurement_spec(spec), generator)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=generator.dtype, device=generator.device)
    with torch.no_grad():
        y = op.forward(xt.reshape(1, -1))
        back = op.adjoint(y)
    return _np(y[0]), _np(back[0])


@dataclass
class BatchOutcome:
    """One experiment on ``n`` samples at once: per method the error of every sample, and the certificate.

    ``errors[method]`` holds arrays of shape (n,): ``latent_error``, ``signal_error``, ``psnr`` and
    ``status``; ``network`` holds per-sample arrays of the whole-network certificate
    (``identifiable_network``, ``identifiable_layerwise``, ``noise_gain``, ``condition``,
    ``predicted_error``, ``verdict``). A noisy batch has an ``"oracle"`` entry.
    """

    experiment: Experiment
    n: int
    threshold: float
    sigma: np.ndarray
    errors: dict[str, dict[str, np.ndarray]]
    seconds: dict[str, float]
    failed: dict[str, str]
    network: dict[str, np.ndarray]

    def summary(self, *, confidence: float = 0.95) -> list[dict[str, Any]]:
        """Per method: success rate with its Wilson interval, median latent error with a bootstrap
        interval, quartiles, median PSNR and time per signal."""
        from geninv.metrics import bootstrap_interval, wilson_interval

        rows = []
        for name, e in self.errors.items():
            err = e["latent_error"]
            wins = int(np.sum(err <= self.threshold))
            low, high = wilson_interval(wins, self.n, confidence=confidence)
            m_low, m_high = bootstrap_interval(err, confidence=confidence)
            finite = err[np.isfinite(err)]
            rows.append(
                {
                    "method": name,
                    "samples": self.n,
                    "recovered": wins,
                    "success_rate": wins / self.n,
                    "success_low": low,
                    "success_high": high,
                    "median_error": float(np.median(finite)) if finite.size else math.nan,
                    "median_low": m_low,
                    "median_high": m_high,
                    "q25_error": float(np.quantile(finite, 0.25)) if finite.size else math.nan,
                    "q75_error": float(np.quantile(finite, 0.75)) if finite.size else math.nan,
                    "median_psnr": float(np.nanmedian(e["psnr"])),
                    "seconds_per_signal": self.seconds[name] / self.n,
                }
            )
        return rows

    def certificate_summary(self) -> dict[str, Any]:
        """Fractions of samples identifiable (network / layer by layer) and stable, median gains."""
        net = self.network
        return {
            "identifiable_network": float(np.mean(net["identifiable_network"])),
            "identifiable_layerwise": float(np.mean(net["identifiable_layerwise"])),
            "stable": float(np.mean(net["stable"])),
            "median_noise_gain": float(np.median(net["noise_gain"])),
            "median_condition": float(np.median(net["condition"])),
            "median_predicted_error": float(np.median(net["predicted_error"])),
        }

    def to_npz(self) -> bytes:
        """Every per-sample array (errors per method, certificate) as a compressed NPZ file."""
        import io

        arrays: dict[str, np.ndarray] = {"sigma": self.sigma}
        for name, e in self.errors.items():
            for key, value in e.items():
                arrays[f"{name}/{key}"] = np.asarray(value)
        for key, value in self.network.items():
            arrays[f"certificate/{key}"] = np.asarray(value)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()


def batch_observation(generator: Generator, experiment: Experiment, n: int) -> Observation:
    """``n`` samples drawn from the experiment's latent seed, with its mask and noise (one draw per signal)."""
    c = experiment.corruption
    mask = c.mask_array(generator.output_dim)
    if mask is not None and not mask.any():
        fail("mask", "at least one observed pixel", "a mask that hides everything")
    z = generator.sample_latent(n, seed=experiment.latent_seed)
    sigma = c.sigma if c.noise == "sigma" else None
    snr = c.snr_db if c.noise == "snr" else None
    op = experiment.operator(generator)
    return observe(generator, z, mask=mask, operator=op, noise_sigma=sigma, snr_db=snr, seed=c.noise_seed)


def run_batch(
    generator: Generator,
    experiment: Experiment,
    n: int,
    *,
    progress: Callable[[float, str], Any] | None = None,
) -> BatchOutcome:
    """Run every method of ``experiment`` on ``n`` samples (a statistic, not an anecdote).

    The samples are drawn from the experiment's latent seed; mask, noise, methods, options and seed
    are the experiment's. Real digits are not batched (the shipped digits are one signal each).
    """
    from geninv.experiments import run_methods
    from geninv.metrics import latent_error, psnr, relative_error
    from geninv.theory import certify

    if not isinstance(experiment, Experiment):
        fail("experiment", "a geninv.demo.Experiment", experiment)
    n = check_int("n", n, low=1)
    if experiment.digit is not None:
        fail("experiment", "generated samples (a batch of real digits is not offered)", "a real digit")
    obs = batch_observation(generator, experiment, n)
    sigma = obs.noise_sigma.detach().cpu().double().numpy()
    results = run_methods(
        generator, obs, experiment.methods, options=experiment.options, seed=experiment.seed, progress=progress
    )
    if bool(obs.noisy):
        results[ORACLE] = oracle_result(generator, obs)
    errors, seconds, failed = {}, {}, {}
    for name, res in results.items():
        if isinstance(res, GeninvError):
            failed[name] = str(res)
            continue
        with torch.no_grad():
            x_hat = res.x_hat
            errors[name] = {
                "latent_error": _np(latent_error(res.z_hat, obs.z_true)),
                "signal_error": _np(relative_error(x_hat, obs.x_true)),
                "psnr": _np(psnr(x_hat, obs.x_true)),
                "status": np.asarray(res.statuses, dtype=str),
            }
        seconds[name] = float(res.seconds)
    measured = {"operator": obs.operator} if experiment.corruption.measurements else {"mask": obs.mask}
    cert = certify(generator, obs.z_true, noise_sigma=float(np.median(sigma)), spark_budget=SPARK_BUDGET, **measured)
    network = {
        "identifiable_network": np.asarray(cert.identifiable_network, dtype=bool),
        "identifiable_layerwise": np.asarray(cert.identifiable, dtype=bool),
        "stable": np.asarray(cert.stable, dtype=bool),
        "noise_gain": np.asarray(cert.noise_gain, dtype=np.float64),
        "condition": np.asarray(cert.condition_number, dtype=np.float64),
        "predicted_error": np.asarray(cert.predicted_error(sigma), dtype=np.float64),
        "verdict": np.asarray(cert.verdict, dtype=str),
    }
    return BatchOutcome(
        experiment=experiment,
        n=n,
        threshold=THRESHOLD,
        sigma=sigma,
        errors=errors,
        seconds=seconds,
        failed=failed,
        network=network,
    )


def oracle_result(generator: Generator, obs: Observation) -> Any:
    """The oracle (:func:`geninv.inversion.oracle.oracle_latent`: least squares on the true activation
    pattern) as an :class:`~geninv.inversion.InversionResult`, so that it is measured like every method."""
    import time

    from geninv.inversion.oracle import oracle_latent
    from geninv.inversion.result import History, InversionResult
    from geninv.inversion.status import data_fit, statuses

    start = time.perf_counter()
    with torch.no_grad():
        z_hat = oracle_latent(generator, obs)
    seconds = time.perf_counter() - start
    trace = generator.trace(z_hat)
    return InversionResult(
        z_hat=z_hat,
        layers=trace.activations,
        supports=trace.supports,
        history=History(),
        steps=(),
        statuses=statuses(data_fit(generator, obs, z_hat)),
        seconds=seconds,
        forward_passes=float("nan"),
        method=ORACLE,
        options={},
    )


def _estimated_support(estimate: np.ndarray) -> np.ndarray:
    """Active units of a layer estimate: above a tolerance tied to its largest entry (solvers leave
    rounding-level values on true zeros)."""
    est = np.asarray(estimate, dtype=np.float64)
    top = float(np.abs(est).max()) if est.size else 0.0
    return est > max(1e-9 * top, 1e-300)


def _method_outcome(generator: Generator, obs: Observation, name: str, res: Any) -> MethodOutcome:
    from geninv.metrics import evaluate, relative_error

    if isinstance(res, GeninvError):
        return MethodOutcome(method=name, error=str(res))
    per = evaluate(res, obs)
    out = MethodOutcome(
        method=name,
        x_hat=_np(res.x_hat[0]),
        z_hat=_np(res.z_hat[0]),
        metrics={k: float(v[0]) for k, v in per.items()},
        seconds=float(res.seconds),
        forward_passes=float(res.forward_passes),
        status=str(res.status.value),
        options={k: v for k, v in res.options.items() if _plain(v)} if isinstance(res.options, dict) else {},
    )
    truth = obs.trace_true
    for i in range(generator.n_layers - 1):
        out.layers.append(
            {
                "layer": i + 1,
                "error": out.metrics[f"layer{i + 1}_error"],
                "precision": out.metrics[f"layer{i + 1}_precision"],
                "recall": out.metrics[f"layer{i + 1}_recall"],
                "f1": out.metrics[f"layer{i + 1}_f1"],
                "map": support_map(res.supports[i][0].cpu().numpy(), truth.supports[i][0].cpu().numpy()),
            }
        )
    hist = res.history
    if hist.n_records:
        keep = np.unique(np.linspace(0, hist.n_records - 1, min(MAX_FRAMES, hist.n_records)).round().astype(int))
        frames, frame_maps = None, None
        if hist.iterates is not None:
            with torch.no_grad():
                frame_trace = generator.trace(hist.iterates[keep, 0].to(generator.dtype))
            frames = _np(frame_trace.output)
            frame_maps = [
                support_map(est.cpu().numpy(), tru[0].cpu().numpy()[None, :])
                for est, tru in zip(frame_trace.supports[:-1], truth.supports[:-1], strict=True)
            ]
        out.history = {
            "iterations": hist.iterations.astype(int),
            "loss": np.asarray(hist.loss[:, 0, :], dtype=np.float64),
            "latent_error": None if hist.latent_error is None else np.asarray(hist.latent_error[:, 0, :], np.float64),
            "iterates": None if hist.iterates is None else _np(hist.iterates[:, 0]),
            "frame_iterations": hist.iterations[keep].astype(int),
            "frames": frames,
            "frame_errors": None
            if hist.iterates is None
            else _np(relative_error(hist.iterates[keep, 0], obs.z_true.expand(len(keep), -1))),
            "frame_maps": frame_maps,  # per hidden layer: (frames, units) support map codes
        }
    for step in res.steps:
        est = step.estimate[:1]
        truth_layer = obs.z_true if step.layer == 0 else truth.activations[step.layer - 1]
        with torch.no_grad():
            image = _np(forward_from(generator, step.layer, est)[0])
        estimate = _np(est[0])
        out.steps.append(
            {
                "layer": int(step.layer),
                "rows": int(np.asarray(step.rows).reshape(-1)[0]),
                "residual": float(np.asarray(step.residual).reshape(-1)[0]),
                "seconds": float(step.seconds),
                "solver": str(step.solver),
                "error": float(relative_error(est, truth_layer[:1])[0]),
                "estimate": estimate,
                "truth": _np(truth_layer[0]),
                "image": image,
                # the support this step found, against the truth (hidden layers; None for z)
                "map": None
                if step.layer == 0
                else support_map(_estimated_support(estimate), truth.supports[step.layer - 1][0].cpu().numpy()),
            }
        )
    return out
