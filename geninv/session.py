"""The dashboard's experiment spec: what to run, and the link that reproduces it.

An :class:`Experiment` is everything needed to reproduce a run (generator spec, latent seed,
:class:`Corruption`, methods and their options, seed); it round-trips through a URL query so that a
link reproduces the run. A link is untrusted input: :meth:`Experiment.from_query` reads every value
exactly as written or refuses it with an error naming the parameter (never a substitute), keeps
to the ranges the dashboard's widgets allow (:data:`LINK_RANGES`), and checks the whole request
against the server's :class:`~geninv.limits.Budget` before anything is built. Also here: packed
masks (:func:`pack_mask`), measurement specs (:func:`parse_measurements`) and the options a form
shows for a method (:func:`method_options`). :func:`geninv.demo.run` runs an experiment. Nothing
here imports Streamlit.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geninv import masks
from geninv._validation import check_choice, check_int, check_real, fail
from geninv.errors import InvalidValueError
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


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))
