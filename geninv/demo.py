"""One experiment on one signal, as the dashboard shows it.

An :class:`Experiment` is everything needed to reproduce a run (generator spec, latent seed,
corruption, methods and their options, seed); it round-trips through a URL query so that a link
reproduces the run. A link is untrusted input: :meth:`Experiment.from_query` reads every value
exactly as written or refuses it with an error naming the parameter (never a substitute), keeps
to the ranges the dashboard's widgets allow (:data:`LINK_RANGES`), and checks the whole request
against the server's :class:`~geninv.limits.Budget` before anything is built. :func:`run` executes
it and returns an :class:`Outcome` made of plain numpy arrays and dicts (picklable,
JSON-exportable): reconstructions, metrics, per-layer supports, convergence histories, replay
frames and the certificate. Nothing here imports Streamlit.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geninv import masks
from geninv._validation import check_choice, check_int, check_real, fail
from geninv.errors import GeninvError, InvalidValueError
from geninv.generator import Generator
from geninv.limits import Budget
from geninv.observation import Observation, observe
from geninv.viz import image_shape

MASKS = ("none", "random", "box", "half", "custom")
NOISES = ("none", "sigma", "snr")
HALVES = ("bottom", "top", "left", "right")
UPLOAD = "upload"
"""Generator spec of a model the user uploaded (not reproducible from a link)."""

MAX_FRAMES = 120
"""Replay frames kept per iterative method (evenly spaced over its records)."""
SPARK_BUDGET = 2000
"""Column subsets the certificate of one experiment may search for the exact spark."""
SEED_MAX = 2**64 - 1
"""Largest seed torch's random generators take."""

LINK_SEED_MAX = 10**6
LINK_RANGES: dict[str, tuple[float, float]] = {
    "missing": (0.0, 0.95),
    "sigma": (0.0, 10.0),
    "snr_db": (0.0, 60.0),
}
"""What a link may ask for: the ranges of the dashboard's widgets (seeds: 0 to :data:`LINK_SEED_MAX`)."""
LINK_HIDDEN = ("relu", "leaky_relu")
LINK_OUTPUT = ("identity", "sigmoid", "tanh", "relu")
QUERY_KEYS = (
    "gen", "z", "methods", "seed", "mask", "mask_seed", "missing", "box", "half", "custom",
    "noise", "noise_seed", "level", "options",
)  # fmt: skip
MAX_QUERY_VALUE = 20_000
"""Characters of one query value (a packed mask of 8192 pixels takes about 1,400)."""
MAX_OPTION_TEXT = 100

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
        check_int("mask_seed", self.mask_seed, low=0, high=SEED_MAX)
        check_int("noise_seed", self.noise_seed, low=0, high=SEED_MAX)
        if not isinstance(self.custom, str):
            fail("custom", "a packed mask string (see pack_mask)", self.custom)
        expected = "four integers (top, left, height, width), non-negative, height and width at least 1"
        if not isinstance(self.box, tuple | list) or len(self.box) != 4:
            fail("box", expected, self.box)
        box = tuple(check_int("box", v, low=0) for v in self.box)
        if min(box[2:]) < 1:
            fail("box", expected, self.box)
        object.__setattr__(self, "box", box)
        # Fields the chosen mask / noise does not use take their defaults, so that equal experiments compare equal.
        unused = {
            "random": ("box", "half", "custom"),
            "box": ("missing", "mask_seed", "half", "custom"),
            "half": ("missing", "mask_seed", "box", "custom"),
            "custom": ("missing", "mask_seed", "box", "half"),
            "none": ("missing", "mask_seed", "box", "half", "custom"),
        }[self.mask]
        unused += {"none": ("sigma", "snr_db", "noise_seed"), "sigma": ("snr_db",), "snr": ("sigma",)}[self.noise]
        for name in unused:
            object.__setattr__(self, name, _CORRUPTION_DEFAULTS[name])

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
            if top + height > shape[0] or left + width > shape[1]:
                fail("box", f"a box inside the {shape[0]} x {shape[1]} image (top + height, left + width)", self.box)
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
        check_int("latent_seed", self.latent_seed, low=0, high=SEED_MAX)
        check_int("seed", self.seed, low=0, high=SEED_MAX)
        if not isinstance(self.corruption, Corruption):
            fail("corruption", "a geninv.demo.Corruption", self.corruption)
        if isinstance(self.methods, str) or not isinstance(self.methods, tuple | list):
            fail("methods", "a list of method names", self.methods)
        object.__setattr__(self, "methods", tuple(self.methods))
        if not self.methods:
            fail("methods", "at least one method", "none")
        for m in self.methods:
            check_choice("methods", m, registered())
        twice = sorted({m for m in self.methods if self.methods.count(m) > 1})
        if twice:
            fail("methods", "distinct method names", f"{', '.join(twice)} more than once")
        if not isinstance(self.options, dict):
            fail("options", "a dict {method: {option: value}}", self.options)
        options = {}
        for m, opts in self.options.items():
            check_choice("options", m, self.methods)
            if not isinstance(opts, dict) or not all(isinstance(k, str) for k in opts):
                fail(f"options[{m!r}]", "a dict {option: value}", opts)
            for name, value in opts.items():
                if not _plain(value) or value is None:
                    fail(f"options[{m!r}][{name!r}]", "a number, a bool or a short text", value)
            config = make_config(m, **opts)
            default = make_config(m)
            changed = {k: _exact(default, k, v) for k, v in opts.items() if getattr(config, k) != getattr(default, k)}
            if changed:
                options[m] = changed
        object.__setattr__(self, "options", options)

    def to_query(self) -> dict[str, str]:
        """URL query parameters (strings) that :meth:`from_query` turns back into this experiment."""
        c = self.corruption
        query = {"gen": self.generator, "z": str(self.latent_seed), "methods": ",".join(self.methods)}
        query["seed"] = str(self.seed)
        if c.mask != "none":
            query["mask"] = c.mask
            query |= {
                "random": {"missing": _float_text(c.missing), "mask_seed": str(c.mask_seed)},
                "box": {"box": ",".join(map(str, c.box))},
                "half": {"half": c.half},
                "custom": {"custom": c.custom},
            }[c.mask]
        if c.noise != "none":
            query["noise"] = c.noise
            query["noise_seed"] = str(c.noise_seed)
            query["level"] = _float_text(c.sigma if c.noise == "sigma" else c.snr_db)
        options = {m: o for m, o in self.options.items() if o and m in self.methods}
        if options:
            query["options"] = json.dumps(options, separators=(",", ":"), sort_keys=True)
        return query

    @classmethod
    def from_query(cls, query: Mapping[str, Any], *, limits: Budget | None = None) -> Experiment:
        """Parse URL query parameters, exactly as written, and check them against the server's budget.

        Parameters
        ----------
        query : mapping of str to str (or to a list of str, all equal)
        limits : Budget, optional
            Default: :func:`geninv.limits.budget` (the server's).

        Raises
        ------
        GeninvError
            Naming the parameter: an unknown or repeated key, a value that is not exactly a number /
            name of the expected kind, one outside the widgets' ranges (:data:`LINK_RANGES`), a key
            that the chosen mask or noise would not use, options that the dashboard cannot set.
        BudgetError
            The experiment exceeds ``limits``; raised before any generator is built.
        """
        from geninv.limits import budget

        q = _query_values(query)
        unknown = sorted(set(q) - set(QUERY_KEYS))
        if unknown:
            fail("query", "made of the keys " + ", ".join(QUERY_KEYS), f"the unknown key {unknown[0]!r}")
        generator = q.get("gen", "mnist")
        if generator != UPLOAD:
            _check_link_spec(generator)
        mask, noise = q.get("mask", "none"), q.get("noise", "none")
        check_choice("mask", mask, MASKS)
        check_choice("noise", noise, NOISES)
        used = {
            "random": ("missing", "mask_seed"),
            "box": ("box",),
            "half": ("half",),
            "custom": ("custom",),
            "none": (),
        }[mask] + (("level", "noise_seed") if noise != "none" else ())
        fields: dict[str, Any] = {"mask": mask, "noise": noise}
        for key in ("missing", "mask_seed", "box", "half", "custom", "level", "noise_seed"):
            if key not in q:
                continue
            value = _link_value(key, q[key], noise)
            if key not in used:  # an unused key is harmless only when it says what the default would
                if key == "level" or value != _CORRUPTION_DEFAULTS[key]:
                    fail(key, f"absent with mask={mask} and noise={noise} (it would not be used)", q[key])
                continue
            fields[{"level": "sigma" if noise == "sigma" else "snr_db"}.get(key, key)] = value
        options = _link_options(q.get("options"))
        methods = q.get("methods", "gd,latent-pursuit").split(",")
        if any(not m for m in methods):
            fail("methods", "method names separated by single commas", q["methods"])
        exp = cls(
            generator=generator,
            latent_seed=_link_int("z", q.get("z", "0")),
            corruption=Corruption(**fields),
            methods=tuple(methods),
            options=options,
            seed=_link_int("seed", q.get("seed", "0")),
        )
        for method, opts in options.items():
            _check_link_options(method, opts)
        limits = budget() if limits is None else limits
        if generator == UPLOAD:  # its size is checked when it is uploaded; here only the options
            from geninv.inversion.registry import make_config

            for method in exp.methods:
                limits.check_method(method, make_config(method, **exp.options.get(method, {})), batch=1, latent_dim=0)
        else:
            widths = limits.check_spec(generator)
            exp.corruption.mask_array(widths[-1])  # a box inside the image, a custom mask of the right size...
            limits.check_experiment(exp, widths)
        return exp

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


_CORRUPTION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Corruption)}
_INT = re.compile(r"[0-9]{1,20}", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?", re.ASCII)


def _float_text(x: float) -> str:
    """The shortest text that reads back as exactly ``x`` (``0.35``, ``20``, ``1e-05``)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def _query_values(query: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(query, Mapping):
        fail("query", "a mapping of parameter names to values", query)
    out = {}
    for key, value in query.items():
        values = value if isinstance(value, list | tuple) else [value]
        texts = {v if isinstance(v, str) else str(v) for v in values if isinstance(v, str | int | float)}
        if len(texts) != 1 or len(values) != len([v for v in values if isinstance(v, str | int | float)]):
            fail(str(key)[:40], "given once (or repeated with the same value)", value)
        text = texts.pop()
        if len(text) > MAX_QUERY_VALUE:
            fail(str(key)[:40], f"at most {MAX_QUERY_VALUE} characters", f"{len(text)} characters")
        out[str(key)] = text
    return out


def _link_int(name: str, text: str, high: int = LINK_SEED_MAX) -> int:
    if not _INT.fullmatch(text):
        fail(name, f"an integer from 0 to {high} written in digits", text)
    return check_int(name, int(text), low=0, high=high)


def _link_float(name: str, text: str, low: float, high: float) -> float:
    if not _FLOAT.fullmatch(text):
        fail(name, "a decimal number", text)
    return check_real(name, float(text), low=low, high=high)


def _link_value(key: str, text: str, noise: str) -> Any:
    if key in ("mask_seed", "noise_seed"):
        return _link_int(key, text)
    if key == "missing":
        return _link_float("missing", text, *LINK_RANGES["missing"])
    if key == "level":
        return _link_float("level", text, *LINK_RANGES["sigma" if noise == "sigma" else "snr_db"])
    if key == "box":
        parts = text.split(",")
        if len(parts) != 4 or not all(_INT.fullmatch(p) for p in parts):
            fail("box", "four comma-separated integers top,left,height,width", text)
        return tuple(int(p) for p in parts)
    if key == "half":
        return check_choice("half", text, HALVES)
    return text  # custom: unpacked (and its size checked) against the generator's output


def _check_link_spec(spec: str) -> None:
    """A spec the dashboard's widgets can show exactly: seed within range, widget activation names."""
    from geninv.io import parse_spec

    parsed = parse_spec(spec)
    if parsed["kind"] == "random":
        check_int("gen seed", parsed["seed"], low=0, high=LINK_SEED_MAX)
        check_choice("gen hidden", parsed["hidden"], LINK_HIDDEN)
        check_choice("gen output", parsed["output"], LINK_OUTPUT)


def _link_options(text: str | None) -> dict[str, dict[str, Any]]:
    if text is None:
        return {}
    expected = 'JSON of {method: {option: value}}, e.g. {"gd":{"n_iter":300}}'

    def small_int(digits: str) -> int:
        if len(digits.lstrip("-")) > 18:
            raise ValueError("integer too long")
        return int(digits)

    try:
        options = json.loads(text, parse_int=small_int)
    except (ValueError, RecursionError):
        fail("options", expected, text)
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        fail("options", expected, text)
    return options


def _check_link_options(method: str, opts: dict[str, Any]) -> None:
    """Every option a link sets must be one of the dashboard's fields for the method, of its kind."""
    fields = {o["name"]: o for o in method_options(method)}
    for name, value in opts.items():
        if name not in fields:
            fail(f"options[{method!r}]", "options the dashboard shows: " + ", ".join(fields), name)
        kind, choices = fields[name]["kind"], fields[name]["choices"]
        if kind == "choice" and value not in (choices or ()):
            fail(f"options[{method!r}][{name!r}]", "one of " + ", ".join(map(repr, choices or ())), value)
        if kind == "text" and len(str(value)) > MAX_OPTION_TEXT:
            fail(f"options[{method!r}][{name!r}]", f"at most {MAX_OPTION_TEXT} characters", value)


def _exact(default_config: Any, name: str, value: Any) -> Any:
    """An option's value in its field's type when that is exact (an int for a float field: 1 -> 1.0)."""
    default = getattr(default_config, name)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


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
    sigma = float(obs.noise_sigma[0])
    cert = certify(generator, obs.z_true, mask=mask, noise_sigma=sigma, spark_budget=SPARK_BUDGET)
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
