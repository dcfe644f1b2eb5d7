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
from geninv.observation import Observation, measurement_operator, observe
from geninv.viz import image_shape

MASKS = ("none", "random", "box", "half", "custom")
MEASUREMENTS = ("gaussian", "dct")
"""Measurement operators an experiment may use instead of pixels (compressed sensing; see :func:`measurement_spec`)."""
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
    "gen", "z", "digit", "methods", "seed", "mask", "mask_seed", "missing", "box", "half", "custom",
    "noise", "noise_seed", "level", "options", "meas",
)  # fmt: skip
DIGIT_PIXELS = 784
"""Output size a generator needs to take a real MNIST digit as its signal."""
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
    measurements : str
        Measure through an operator instead of pixels (compressed sensing): ``"gaussian:M[:seed=S]"``
        (``M`` random Gaussian measurements) or ``"dct:M[:seed=S]"`` (``M`` random 2-D DCT coefficients);
        ``""`` (default) measures pixels, through the mask. Stored as ``"kind:M:seed=S"``. The operator
        replaces the mask, so ``mask`` must then be ``"none"``.
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
    measurements: str = ""

    def __post_init__(self) -> None:
        check_choice("mask", self.mask, MASKS)
        if not isinstance(self.measurements, str):
            fail(
                "measurements", "a measurement spec such as 'gaussian:100:seed=1', or '' for pixels", self.measurements
            )
        if self.measurements:
            object.__setattr__(self, "measurements", measurement_spec(self.measurements))
            if self.mask != "none":
                fail(
                    "mask",
                    "'none' with a measurement operator (it replaces the pixel mask: use one or the other)",
                    self.mask,
                )
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
    """A reproducible run: generator, signal, corruption, methods and options, seed.

    The signal is the generator's sample ``G(z)`` with ``z`` drawn from ``latent_seed``, or, with
    ``digit`` set, a real MNIST test digit (:mod:`geninv.digits`; generators of 784 outputs), which
    is not in the generator's range: its reference latent is its projection onto the range. The
    signal is measured through the corruption's mask, or through its measurement operator
    (``corruption.measurements``: compressed sensing, ``y = A G(z) + e`` with ``m`` rows).
    """

    generator: str = "mnist"
    latent_seed: int = 0
    corruption: Corruption = field(default_factory=Corruption)
    methods: tuple[str, ...] = ("gd", "latent-pursuit")
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    digit: int | None = None

    def __post_init__(self) -> None:
        from geninv.inversion import methods as registered
        from geninv.inversion.registry import make_config

        if self.generator != UPLOAD:
            from geninv.io import parse_spec

            parse_spec(self.generator)
        check_int("latent_seed", self.latent_seed, low=0, high=SEED_MAX)
        check_int("seed", self.seed, low=0, high=SEED_MAX)
        if self.digit is not None:
            from geninv.digits import count

            check_int("digit", self.digit, low=0, high=count() - 1)
            object.__setattr__(self, "latent_seed", 0)  # unused with a real digit: equal experiments compare equal
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
        if self.digit is not None:
            query = {"gen": self.generator, "digit": str(self.digit), "methods": query["methods"]}
        query["seed"] = str(self.seed)
        if c.mask != "none":
            query["mask"] = c.mask
            query |= {
                "random": {"missing": _float_text(c.missing), "mask_seed": str(c.mask_seed)},
                "box": {"box": ",".join(map(str, c.box))},
                "half": {"half": c.half},
                "custom": {"custom": c.custom},
            }[c.mask]
        if c.measurements:
            query["meas"] = c.measurements
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
        meas = _link_measurements(q["meas"]) if "meas" in q else ""
        if meas and mask != "none":
            fail(
                "mask", "absent with meas (a measurement operator replaces the pixel mask: use one or the other)", mask
            )
        used = {
            "random": ("missing", "mask_seed"),
            "box": ("box",),
            "half": ("half",),
            "custom": ("custom",),
            "none": (),
        }[mask] + (("level", "noise_seed") if noise != "none" else ())
        fields: dict[str, Any] = {"mask": mask, "noise": noise, "measurements": meas}
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
        digit = None
        if "digit" in q:
            from geninv.digits import count

            digit = _link_int("digit", q["digit"], high=count() - 1)
            if "z" in q:
                fail("z", "absent with a real digit (the signal is the digit, not a sample)", q["z"])
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
            digit=digit,
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
            exp.check_signal(widths[-1])
            limits.check_experiment(exp, widths)
        return exp

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_signal(self, output_dim: int) -> None:
        """A real digit needs a generator of :data:`DIGIT_PIXELS` outputs; a measurement operator at most
        ``output_dim`` rows (and, for the DCT, an image output)."""
        if self.digit is not None and output_dim != DIGIT_PIXELS:
            fail("digit", f"a generator of {DIGIT_PIXELS} outputs (28 x 28 images)", f"one of {output_dim}")
        spec = self.corruption.measurements
        if spec:
            parsed = parse_measurements(spec)
            if parsed["m"] > output_dim:
                fail("meas", f"at most {output_dim} measurements (the generator's output size)", spec)
            if parsed["kind"] == "dct" and image_shape(output_dim) is None:
                fail("meas", f"'gaussian:M' (the DCT needs an image; this output has {output_dim} values)", spec)

    def operator(self, generator: Generator) -> Any:
        """The measurement operator (a :class:`~geninv.operators.LinearOperator`), or None for pixels."""
        if not self.corruption.measurements:
            return None
        self.check_signal(generator.output_dim)
        return measurement_operator(self.corruption.measurements, generator)

    def observation(self, generator: Generator) -> Observation:
        """The corrupted measurement of this experiment's signal (ground truth kept).

        For a real digit the "truth" is its projection onto the generator's range: ``z_true`` is the
        projection's latent and ``trace_true`` its forward pass, while ``y`` measures the digit itself.
        """
        c = self.corruption
        self.check_signal(generator.output_dim)
        mask = c.mask_array(generator.output_dim)
        if mask is not None and not mask.any():
            fail("mask", "at least one observed pixel", "a mask that hides everything")
        sigma = c.sigma if c.noise == "sigma" else None
        snr = c.snr_db if c.noise == "snr" else None
        op = self.operator(generator)
        if self.digit is None:
            z = generator.sample_latent(1, seed=self.latent_seed)
            return observe(generator, z, mask=mask, operator=op, noise_sigma=sigma, snr_db=snr, seed=c.noise_seed)
        return self._digit_observation(generator, mask, op, sigma, snr)

    def _digit_observation(
        self, generator: Generator, mask: Any, operator: Any, sigma: float | None, snr: float | None
    ) -> Observation:
        from geninv.digits import digit, project, stored_projection
        from geninv.observation import GaussianNoise, _make_operator, snr_to_sigma

        x = torch.as_tensor(np.array(digit(self.digit)), dtype=generator.dtype, device=generator.device).unsqueeze(0)
        stored = stored_projection(self.digit, self.generator)
        if stored is None:
            z_ref = project(generator, x, seed=self.seed)
        else:
            z_ref = torch.as_tensor(np.array(stored), dtype=generator.dtype, device=generator.device).unsqueeze(0)
        op = _make_operator(generator, mask, operator)
        clean = op.forward(x)
        if snr is not None:
            noise_sigma = snr_to_sigma(clean, snr)
        else:
            noise_sigma = torch.full((1,), float(sigma or 0.0), dtype=clean.dtype, device=clean.device)
        y = clean
        if bool((noise_sigma > 0).any()):
            e = GaussianNoise(noise_sigma).sample(
                clean.shape, seed=self.corruption.noise_seed, dtype=clean.dtype, device=clean.device
            )
            y = clean + e
        return Observation(y=y, operator=op, noise_sigma=noise_sigma, z_true=z_ref, trace_true=generator.trace(z_ref))


_CORRUPTION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Corruption)}
_INT = re.compile(r"[0-9]{1,20}", re.ASCII)
_MEAS = re.compile(r"(?:gaussian|dct):[0-9]{1,9}(?::seed=[0-9]{1,20})?", re.ASCII)
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


def parse_measurements(spec: str) -> dict[str, Any]:
    """``{"kind", "m", "seed"}`` of a measurement spec an experiment may use (:data:`MEASUREMENTS`).

    Raises InvalidValueError naming ``measurements`` for anything else (another kind, no ``M``, a
    malformed option); the range of ``M`` is checked against the generator by
    :meth:`Experiment.check_signal`.
    """
    from geninv.operators import parse_spec

    expected = "'gaussian:M[:seed=S]' or 'dct:M[:seed=S]' with M a positive number of measurements"
    try:
        parsed = parse_spec(spec)
    except InvalidValueError:
        fail("measurements", expected, spec)
    if parsed["kind"] not in MEASUREMENTS:
        fail("measurements", expected, spec)
    check_int("measurements seed", parsed["seed"], low=0, high=SEED_MAX)
    return parsed


def measurement_spec(spec: str) -> str:
    """The canonical spelling ``"kind:M:seed=S"`` of a measurement spec (see :func:`parse_measurements`)."""
    parsed = parse_measurements(spec)
    return f"{parsed['kind']}:{parsed['m']}:seed={parsed['seed']}"


def _link_measurements(text: str) -> str:
    """A link's ``meas``: a spec the dashboard's widgets can show (seed within range), canonically spelled."""
    try:
        if not _MEAS.fullmatch(text):  # exactly as written: no spaces, no option but the seed
            raise InvalidValueError(text)
        parsed = parse_measurements(text)
    except InvalidValueError:
        fail("meas", "'gaussian:M[:seed=S]' or 'dct:M[:seed=S]' (M measurements, 1 to the output size)", text)
    check_int("meas seed", parsed["seed"], low=0, high=LINK_SEED_MAX)
    return measurement_spec(text)


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


ORACLE = "oracle"
"""Name of the extra row of a noisy run: least squares on the true activation pattern."""
THRESHOLD = 1e-3
"""Success: relative latent error at or below this (the dashboard draws it on every error curve)."""
DEFINITIONS: dict[str, str] = {
    "latent_error": "‖ẑ − z‖ / ‖z‖: how far the recovered latent is from the true one (relative).",
    "psnr_db": "Peak signal-to-noise ratio of G(ẑ) against the clean signal, in dB (higher is better; "
    "above ~40 dB the images look identical).",
    "signal_error": "‖G(ẑ) − G(z)‖ / ‖G(z)‖ on every pixel, hidden ones included.",
    "observed_residual": "‖A G(ẑ) − y‖ / ‖y‖: how well the estimate explains the measurements.",
    "digit_error": "‖G(ẑ) − x‖ / ‖x‖ against the real digit x (never 0: the digit is not in the range).",
    "recovered": f"Latent error ≤ {THRESHOLD:g}: the method found z.",
    "status": "converged = the estimate fits the data (to working precision, or to the noise level).",
    "seconds": "Wall time of the method on this machine.",
    "forward_passes": "Cost in forward passes of the generator (a backward pass counts as two).",
    "identifiable_network": "Only one latent near z gives these measurements (the Jacobian J_S of the "
    "observed pixels has full rank).",
    "identifiable_layerwise": "Each layer, on its own, is pinned down by the layer above (sufficient, not necessary).",
    "noise_gain": "1 / σ_min(J_S): how far one unit of pixel noise can move z, at worst.",
    "condition": "σ_max / σ_min of J_S: how much a relative pixel error can be amplified in z.",
    "predicted_error": "σ ‖J_S⁺‖_F / ‖z‖: the relative latent error the best possible method (least squares "
    "on the true pattern) is expected to reach at this noise level.",
    "step_gain_product": "Product of the per-layer gains: what a purely layer-by-layer pass can pay.",
    "oracle": "Least squares on the true activation pattern: it knows the true supports (no method does); "
    "the best error reachable at this noise level.",
    "measurements": "m: rows of the measurement operator A (compressed sensing: y = A G(z) + e, A of shape m × n).",
    "equations": "Usable output rows: observed pixels, minus sigmoid / tanh pixels within 3σ of saturation "
    "(their value says only 'near 0 or 1', not an equation).",
}
"""One-line definition of every metric and verdict the dashboard shows."""


def verdict_words(network: Mapping[str, Any], *, measured: str = "pixels") -> tuple[str, str]:
    """A network certificate record in words a student understands: (headline, one-line explanation).

    ``network`` is one of :meth:`geninv.Certificate.network_records`; ``measured`` names what was
    observed (``"pixels"``, or ``"measurements"`` for a measurement operator). The headline never
    says "not identifiable" from the layer-by-layer test alone.
    """
    cond = float(network.get("condition", math.inf))
    times = _times(cond)
    if not network.get("identifiable_network"):
        return (
            "not identifiable: other latents give the same measurements",
            f"The Jacobian of the observed {measured} is rank deficient on this activation pattern: no method can "
            "tell z apart from its neighbours along a flat direction.",
        )
    layerwise = bool(network.get("identifiable_layerwise"))
    stable = bool(network.get("stable"))
    head = "identifiable and stable" if stable else f"identifiable but unstable: noise ×{times}"
    why = (
        f"Only one latent near z explains the observed {measured}"
        + ("" if stable else f", but a relative error in the {measured} can be amplified up to {times} times in z")
        + "."
    )
    if layerwise:
        why += " Each layer is also determined on its own, so a layer-by-layer method can work."
    else:
        why += (
            " The layer-by-layer test fails at some step (it is sufficient, not necessary): a joint method "
            "(gd, the hybrid's refit) can recover z where a purely layer-wise sweep may not."
        )
    return head, why


def _times(x: float) -> str:
    if not math.isfinite(x):
        return "∞"
    return f"{x:,.0f}" if x < 1e6 else f"{x:.1e}"


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


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))
