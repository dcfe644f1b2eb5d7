"""One experiment on one signal, as the dashboard shows it.

An :class:`Experiment` is everything needed to reproduce a run (generator spec, latent seed,
corruption, methods and their options, seed); it round-trips through a URL query so that a link
reproduces the run. :func:`run` executes it and returns an :class:`Outcome` made of plain numpy
arrays and dicts (picklable, JSON-exportable): reconstructions, metrics, per-layer supports,
convergence histories, replay frames and the certificate. Nothing here imports Streamlit.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geninv import masks
from geninv._validation import check_choice, check_int, check_real, fail
from geninv.errors import GeninvError, InvalidValueError
from geninv.generator import Generator
from geninv.observation import Observation, observe
from geninv.viz import image_shape

MASKS = ("none", "random", "box", "half", "custom")
NOISES = ("none", "sigma", "snr")
HALVES = ("bottom", "top", "left", "right")
UPLOAD = "upload"
"""Generator spec of a model the user uploaded (not reproducible from a link)."""

MAX_FRAMES = 120
"""Replay frames kept per iterative method (evenly spaced over its records)."""

FORMULAS: dict[str, str] = {
    "gd": r"z^{k+1} = z^k - \eta\,\mathrm{Adam}\big(\nabla_z \tfrac12 \|A\,G(z^k) - y\|_2^2\big)",
    "plugin": r"z^{k+1} = z^k - \eta\, W_1^\top \cdots W_L^\top \big(A^\top(A\,G(z^k) - y)\big)",
    "latent-pursuit": r"\hat x_i = \arg\min_{x \ge 0} \tfrac12 \|W_{i+1}[S]\,x + b[S] - \hat x_{i+1}[S]\|_2^2"
    r" + \lambda \|x\|_1 \ \text{s.t.}\ W_{i+1}[S^c]\,x + b[S^c] \le 0",
    "lbp": r"\hat x_i = \arg\min_{x} \tfrac12 \|W_{i+1}[S]\,x + b[S] - \hat x_{i+1}[S]\|_2^2 + \lambda \|x\|_1",
    "lp": r"\text{find } x \ge 0:\ W_{i+1}[S]\,x + b[S] = \hat x_{i+1}[S],\ W_{i+1}[S^c]\,x + b[S^c] \le 0",
    "hybrid": r"\text{latent-pursuit} \;\to\; \text{refit on the found patterns} \;\to\;"
    r" \min_z \|A\,G(z) - y\|_2^2 \text{ from there when noisy}",
}
Z_STEP = r"\hat z = \arg\min_{z} \|W_1[S]\,z + b[S] - \hat x_1[S]\|_2^2"


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Corruption:
    """How the clean output is corrupted: a mask (True = observed) and Gaussian noise.

    Parameters
    ----------
    mask : {'none', 'random', 'box', 'half', 'custom'}
    missing : float
        Fraction of pixels hidden by the ``random`` mask.
    box : tuple of int
        ``(top, left, height, width)`` of the hidden box (images only).
    half : {'bottom', 'top', 'left', 'right'}
        Which half is hidden.
    custom : str
        A drawn or uploaded mask, packed with :func:`pack_mask`.
    noise : {'none', 'sigma', 'snr'}
    sigma : float
    snr_db : float
    mask_seed : int
    noise_seed : int
    """

    mask: str = "none"
    missing: float = 0.5
    box: tuple[int, int, int, int] = (8, 8, 12, 12)
    half: str = "bottom"
    custom: str = ""
    noise: str = "none"
    sigma: float = 0.05
    snr_db: float = 20.0
    mask_seed: int = 0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        check_choice("mask", self.mask, MASKS)
        check_choice("noise", self.noise, NOISES)
        check_choice("half", self.half, HALVES)
        check_real("missing", self.missing, low=0.0, high=1.0, high_open=True)
        check_real("sigma", self.sigma, low=0.0)
        check_real("snr_db", self.snr_db)
        check_int("mask_seed", self.mask_seed, low=0)
        check_int("noise_seed", self.noise_seed, low=0)
        box = tuple(int(v) for v in self.box)
        if len(box) != 4 or min(box) < 0:
            fail("box", "four non-negative integers (top, left, height, width)", self.box)
        object.__setattr__(self, "box", box)

    def mask_array(self, n: int) -> np.ndarray | None:
        """The bool mask over ``n`` outputs (True = observed), or None when nothing is hidden."""
        shape = image_shape(n)
        if self.mask == "none":
            return None
        if self.mask == "random":
            return masks.random_pixels(n, self.missing, seed=self.mask_seed)
        if self.mask == "custom":
            if not self.custom:
                fail("custom", "a drawn or uploaded mask", "nothing")
            return unpack_mask(self.custom, n)
        if shape is None:
            fail("mask", f"'none', 'random' or 'custom' for a non-image output of {n} values", self.mask)
        if self.mask == "box":
            top, left, height, width = self.box
            return masks.box(shape, top=top, left=left, height=height, width=width)
        return masks.half(shape, hide=self.half)


@dataclass(frozen=True)
class Experiment:
    """A reproducible run: generator, sample, corruption, methods and options, seed."""

    generator: str = "mnist"
    latent_seed: int = 0
    corruption: Corruption = field(default_factory=Corruption)
    methods: tuple[str, ...] = ("gd", "latent-pursuit")
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        from geninv.inversion import methods as registered
        from geninv.inversion.registry import make_config

        if self.generator != UPLOAD:
            from geninv.io import parse_spec

            parse_spec(self.generator)
        check_int("latent_seed", self.latent_seed, low=0)
        check_int("seed", self.seed, low=0)
        object.__setattr__(self, "methods", tuple(self.methods))
        if not self.methods:
            fail("methods", "at least one method", "none")
        for m in self.methods:
            check_choice("methods", m, registered())
        for m, opts in self.options.items():
            check_choice("options", m, registered())
            make_config(m, **opts)

    def to_query(self) -> dict[str, str]:
        """URL query parameters (strings) that :meth:`from_query` turns back into this experiment."""
        c = self.corruption
        query = {"gen": self.generator, "z": str(self.latent_seed), "methods": ",".join(self.methods)}
        query["seed"] = str(self.seed)
        if c.mask != "none":
            query["mask"] = c.mask
            query["mask_seed"] = str(c.mask_seed)
            query |= {
                "random": {"missing": f"{c.missing:g}"},
                "box": {"box": ",".join(map(str, c.box))},
                "half": {"half": c.half},
                "custom": {"custom": c.custom},
            }[c.mask]
        if c.noise != "none":
            query["noise"] = c.noise
            query["noise_seed"] = str(c.noise_seed)
            query["level"] = f"{c.sigma:g}" if c.noise == "sigma" else f"{c.snr_db:g}"
        options = {m: o for m, o in self.options.items() if o and m in self.methods}
        if options:
            query["options"] = json.dumps(options, separators=(",", ":"), sort_keys=True)
        return query

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> Experiment:
        """Parse URL query parameters; a bad value raises a :class:`GeninvError` naming it."""
        q = {k: (v[-1] if isinstance(v, list) else v) for k, v in query.items()}

        def number(key: str, default: Any, kind: type = int) -> Any:
            if key not in q:
                return default
            try:
                return kind(q[key])
            except ValueError:
                fail(key, "an integer" if kind is int else "a number", q[key])

        c = Corruption()
        noise = q.get("noise", "none")
        corruption = Corruption(
            mask=q.get("mask", "none"),
            missing=number("missing", c.missing, float),
            box=tuple(_ints("box", q["box"])) if "box" in q else c.box,
            half=q.get("half", c.half),
            custom=q.get("custom", ""),
            noise=noise,
            sigma=number("level", c.sigma, float) if noise == "sigma" else c.sigma,
            snr_db=number("level", c.snr_db, float) if noise == "snr" else c.snr_db,
            mask_seed=number("mask_seed", 0),
            noise_seed=number("noise_seed", 0),
        )
        try:
            options = json.loads(q.get("options", "{}"))
        except json.JSONDecodeError:
            fail("options", "JSON of {method: {option: value}}", q.get("options"))
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            fail("options", "JSON of {method: {option: value}}", q.get("options"))
        methods = tuple(m for m in q.get("methods", "gd,latent-pursuit").split(",") if m)
        return cls(
            generator=q.get("gen", "mnist"),
            latent_seed=number("z", 0),
            corruption=corruption,
            methods=methods,
            options=options,
            seed=number("seed", 0),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def observation(self, generator: Generator) -> Observation:
        """The corrupted measurement of this experiment's sample (ground truth kept)."""
        z = generator.sample_latent(1, seed=self.latent_seed)
        c = self.corruption
        mask = c.mask_array(generator.output_dim)
        if mask is not None and not mask.any():
            fail("mask", "at least one observed pixel", "a mask that hides everything")
        sigma = c.sigma if c.noise == "sigma" else None
        snr = c.snr_db if c.noise == "snr" else None
        return observe(generator, z, mask=mask, noise_sigma=sigma, snr_db=snr, seed=c.noise_seed)


def _ints(name: str, text: str) -> list[int]:
    try:
        return [int(v) for v in str(text).split(",")]
    except ValueError:
        fail(name, "comma-separated integers", text)


def pack_mask(mask: Any) -> str:
    """A bool mask as a short URL-safe string (bits packed, base64)."""
    bits = np.asarray(mask, dtype=bool).reshape(-1)
    return f"{bits.size}.{base64.urlsafe_b64encode(np.packbits(bits).tobytes()).decode().rstrip('=')}"


def unpack_mask(text: str, n: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack_mask`; checks the size against ``n``."""
    try:
        size_text, data = str(text).split(".", 1)
        size = int(size_text)
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:size].astype(bool)
    except (ValueError, TypeError) as exc:
        raise InvalidValueError(f"Argument 'custom' must be a packed mask 'N.base64', got {str(text)[:40]!r}.") from exc
    if bits.size != size:
        fail("custom", f"a packed mask of {size} bits", f"{bits.size} bits")
    return masks.validate(bits, n, name="custom")


def method_options(method: str) -> list[dict[str, Any]]:
    """The options of a method for a form: name, default, kind ('int', 'float', 'bool', 'choice', 'text')."""
    from geninv.inversion.registry import spec

    out = []
    for f in dataclasses.fields(spec(method).config):
        default = f.default if f.default is not dataclasses.MISSING else None
        if default is None:  # automatic (plugin's step size) or an array (z_init): not a form field
            continue
        choices = _CHOICES.get(f.name)
        kind = {bool: "bool", int: "int", float: "float"}.get(type(default), "choice" if choices else "text")
        out.append(
            {
                "name": f.name,
                "default": default,
                "kind": kind,
                "choices": choices,
            }
        )
    return out


_CHOICES = {"optimizer": ("adam", "momentum"), "init": ("random", "zeros")}


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


@dataclass
class Outcome:
    """Everything the dashboard shows about one experiment."""

    experiment: Experiment
    widths: tuple[int, ...]
    image_shape: tuple[int, int] | None
    z: np.ndarray
    x_true: np.ndarray
    observed: np.ndarray  # the measurements placed on the full output (hidden entries 0)
    mask: np.ndarray | None
    sigma: float
    true_layers: list[np.ndarray]
    true_supports: list[np.ndarray]
    certificate: list[dict[str, Any]]
    methods: dict[str, MethodOutcome]

    def table(self) -> list[dict[str, Any]]:
        """One row per method: status, latent error, PSNR, signal errors, seconds, cost."""
        rows = []
        for name, m in self.methods.items():
            row: dict[str, Any] = {"method": name}
            if m.error:
                row["error"] = m.error
            else:
                row |= {
                    "status": m.status,
                    "latent_error": m.metrics.get("latent_error"),
                    "psnr_db": m.metrics.get("psnr"),
                    "signal_error": m.metrics.get("signal_error"),
                    "observed_residual": m.metrics.get("observed_residual"),
                    "seconds": m.seconds,
                    "forward_passes": m.forward_passes,
                }
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
                "z_true": self.z,
                "sigma": self.sigma,
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
                        "steps": [{k: v for k, v in s.items() if k not in ("estimate", "image")} for s in m.steps],
                    }
                    for name, m in self.methods.items()
                },
            }
        )


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
    cert = certify(generator, obs.z_true, mask=mask, noise_sigma=float(obs.noise_sigma[0]), spark_budget=2000)
    results = run_methods(
        generator, obs, experiment.methods, options=experiment.options, seed=experiment.seed, progress=progress
    )
    outcomes = {name: _method_outcome(generator, obs, name, res) for name, res in results.items()}
    return Outcome(
        experiment=experiment,
        widths=generator.widths,
        image_shape=image_shape(generator.output_dim),
        z=_np(obs.z_true[0]),
        x_true=_np(obs.x_true[0]),
        observed=_np(obs.operator.adjoint(obs.y)[0]),
        mask=None if mask is None else np.asarray(mask, dtype=bool),
        sigma=float(obs.noise_sigma[0]),
        true_layers=[_np(a[0]) for a in trace.activations[:-1]],
        true_supports=[s[0].cpu().numpy() for s in trace.supports[:-1]],
        certificate=[{k: v for k, v in r.items() if k != "sample"} for r in cert.to_records()],
        methods=outcomes,
    )


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
        frames = None
        if hist.iterates is not None:
            with torch.no_grad():
                frames = _np(generator(hist.iterates[keep, 0].to(generator.dtype)))
        out.history = {
            "iterations": hist.iterations.astype(int),
            "loss": np.asarray(hist.loss[:, 0, :], dtype=np.float64),
            "latent_error": None if hist.latent_error is None else np.asarray(hist.latent_error[:, 0, :], np.float64),
            "frame_iterations": hist.iterations[keep].astype(int),
            "frames": frames,
            "frame_errors": None
            if hist.iterates is None
            else _np(relative_error(hist.iterates[keep, 0], obs.z_true.expand(len(keep), -1))),
        }
    for step in res.steps:
        est = step.estimate[:1]
        truth_layer = obs.z_true if step.layer == 0 else truth.activations[step.layer - 1]
        with torch.no_grad():
            image = _np(forward_from(generator, step.layer, est)[0])
        out.steps.append(
            {
                "layer": int(step.layer),
                "rows": int(np.asarray(step.rows).reshape(-1)[0]),
                "residual": float(np.asarray(step.residual).reshape(-1)[0]),
                "seconds": float(step.seconds),
                "solver": str(step.solver),
                "error": float(relative_error(est, truth_layer[:1])[0]),
                "estimate": _np(est[0]),
                "truth": _np(truth_layer[0]),
                "image": image,
            }
        )
    return out


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))
