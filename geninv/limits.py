"""One budget for untrusted work: what a link, a widget or an upload may ask this server to do.

Whatever serves geninv to people it does not know (the dashboard, :meth:`geninv.session.Experiment.from_query`)
checks every request against a :class:`Budget` *before* it builds a generator or runs anything:
the generator's size, each method's iterations, restarts and stored history, the batch, the size
of a sweep, and the estimated cost of the whole request in multiply-adds. A request past a limit
raises :class:`~geninv.errors.BudgetError`, whose message names the limit and how to raise it.

The library API itself is not budgeted (a script on a lab machine may run what it likes); spec
strings only meet the much larger :data:`HARD_LIMITS`, which no machine could serve.

A server operator changes the budget with the environment variable ``GENINV_BUDGET``, a
comma-separated list of ``name=value`` (the field names of :class:`Budget`), for example
``GENINV_BUDGET="max_cost=5e13,max_width=16384"``.

The cost model is deliberately rough and pessimistic (an upper bound, not a prediction): an
iterative method is charged for every iteration it may run (most stop far earlier), a layer-wise
method for dense solves on every layer. Per signal, with ``F = sum(n_i n_{i+1})`` the multiply-adds
of one forward pass and ``L = sum(n_{i+1} n_i (n_i + n_{i+1}))`` those of dense solves on every layer:
gd and plugin ``3 F n_iter restarts``; latent-pursuit ``4 L``; lbp ``30 L``; lp ``25 L``; hybrid
``4 L``; each layer-wise method plus its joint refit, the hybrid plus its gradient stage; the oracle
``L``; the certificate ``2 L`` plus its spark search. The factors come from the forward-pass
equivalents measured by benchmarks/.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from geninv.errors import BudgetError, InvalidValueError

ENV = "GENINV_BUDGET"
"""Environment variable a server operator sets to change the :class:`Budget`."""

LAYERWISE_FACTOR = {"latent-pursuit": 4.0, "lbp": 30.0, "lp": 25.0, "hybrid": 4.0, "oracle": 1.0}
"""Multiples of ``L`` (dense solves on every layer, per signal) that each layer-wise method is charged."""
UNKNOWN_LAYERWISE_FACTOR = 30.0
CERTIFICATE_FACTOR = 2.0
ITERATION_FIELDS = ("n_iter", "gd_iter", "refit_iter")
RESTART_FIELDS = ("restarts", "gd_restarts")


@dataclass(frozen=True)
class Budget:
    """Limits on one request from an untrusted source.

    Parameters
    ----------
    max_width : int
        Units in any layer (latent and output included).
    max_layers : int
        Weight layers.
    max_parameters : int
        Weights and biases in all (float64: 8 bytes each).
    max_batch : int
        Signals inverted at once (a sweep's trials).
    max_iterations : int
        Any iteration count of a method (gd's ``n_iter``, the hybrid's ``gd_iter``, ...).
    max_restarts : int
        Any restart count of a method.
    max_history_mb : float
        Iterates and losses an iterative method stores (``n_iter / record_every`` records).
    max_sweep_values : int
        Values of a sweep's variable.
    max_sweep_runs : int
        ``values x methods x trials`` of a sweep.
    max_cost : float
        Estimated multiply-adds of the whole request (see the module's cost model).
    max_upload_mb : float
        An uploaded weights file.
    """

    max_width: int = 8192
    max_layers: int = 8
    max_parameters: int = 4_000_000
    max_batch: int = 500
    max_iterations: int = 50_000
    max_restarts: int = 32
    max_history_mb: float = 256.0
    max_sweep_values: int = 50
    max_sweep_runs: int = 20_000
    max_cost: float = 5e12
    max_upload_mb: float = 40.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
                raise InvalidValueError(f"The budget's '{f.name}' must be a positive finite number. Got {value!r}.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Budget:
        """The default budget, changed by ``GENINV_BUDGET="name=value,..."`` when set."""
        text = (os.environ if environ is None else environ).get(ENV, "").strip()
        if not text:
            return cls()
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for item in text.split(","):
            name, sep, value = (part.strip() for part in item.partition("="))
            if not sep or name not in kinds:
                raise InvalidValueError(
                    f"{ENV} must be comma-separated name=value pairs with names among {', '.join(kinds)}. "
                    f"Got {item.strip()[:60]!r}."
                )
            try:
                number = float(value)
            except ValueError:
                raise InvalidValueError(f"{ENV}: '{name}' must be a number. Got {value[:40]!r}.") from None
            if kinds[name] in (int, "int"):
                if not math.isfinite(number) or number != int(number):
                    raise InvalidValueError(f"{ENV}: '{name}' must be a whole number. Got {value[:40]!r}.")
                number = int(number)
            changes[name] = number
        return cls(**changes)

    # ------------------------------------------------------------------ shape of the work
    def check_widths(self, widths: Sequence[int], *, what: str = "The generator", hard: bool = False) -> None:
        """Refuse a generator larger than the budget (before it is built); ``hard``: these are hard limits."""
        widths = [int(w) for w in widths]
        layers = len(widths) - 1
        if layers > self.max_layers:
            _refuse(f"{what} has {layers} weight layers", "max_layers", self.max_layers, hard)
        widest = max(widths)
        if widest > self.max_width:
            _refuse(f"{what} has a layer of {widest} units", "max_width", self.max_width, hard)
        params = parameters(widths)
        if params > self.max_parameters:
            _refuse(f"{what} has {_num(params)} weights", "max_parameters", self.max_parameters, hard)

    def check_spec(self, spec: str) -> tuple[int, ...]:
        """Widths of a generator spec, refused past the budget without building anything."""
        from geninv.io import spec_widths

        widths = spec_widths(spec)
        self.check_widths(widths, what=f"The generator {spec[:60]!r}")
        return widths

    def check_upload(self, label: str, n_bytes: int) -> None:
        """Refuse an uploaded weights file above ``max_upload_mb`` (before it is read)."""
        if n_bytes > self.max_upload_mb * 1e6:
            _refuse(f"The {label} is {n_bytes / 1e6:.1f} MB", "max_upload_mb", self.max_upload_mb)

    def check_method(self, method: str, config: Any, *, batch: int, latent_dim: int) -> None:
        """Refuse iteration counts, restarts or a stored history past the budget."""
        for name in ITERATION_FIELDS:
            value = getattr(config, name, None)
            if isinstance(value, int) and value > self.max_iterations:
                _refuse(f"{method}'s '{name}' is {_num(value)}", "max_iterations", self.max_iterations)
        for name in RESTART_FIELDS:
            value = getattr(config, name, None)
            if isinstance(value, int) and value > self.max_restarts:
                _refuse(f"{method}'s '{name}' is {_num(value)}", "max_restarts", self.max_restarts)
        mb = history_bytes(config, batch=batch, latent_dim=latent_dim) / 1e6
        if mb > self.max_history_mb:
            _refuse(
                f"{method} would store {mb:.0f} MB of iterates (n_iter / record_every records per restart and signal)",
                "max_history_mb",
                self.max_history_mb,
            )

    def check_batch(self, batch: int, *, what: str = "The batch") -> None:
        if batch > self.max_batch:
            _refuse(f"{what} has {_num(batch)} signals", "max_batch", self.max_batch)

    def check_cost(self, cost: Cost, *, what: str = "This run") -> Cost:
        if cost.total > self.max_cost:
            parts = ", ".join(f"{k} {_num(v)}" for k, v in sorted(cost.parts.items(), key=lambda kv: -kv[1])[:4])
            _refuse(
                f"{what} would cost about {_num(cost.total)} multiply-adds ({parts}); lower the iterations, "
                "restarts, trials or the generator's size",
                "max_cost",
                self.max_cost,
            )
        return cost

    # ------------------------------------------------------------------ whole requests
    def check_experiment(self, experiment: Any, widths: Sequence[int] | None = None, *, batch: int = 1) -> Cost:
        """Check a :class:`geninv.session.Experiment` (its methods, the oracle when noisy, the certificate and,
        for a real digit without a stored projection, the projection) on ``batch`` samples; returns its cost.
        A measurement operator of ``m`` rows is charged as one more dense layer ``n_L -> m``.

        ``widths`` is needed for an uploaded generator (its spec does not say); otherwise it is read from
        the spec, so that nothing is built before the check.
        """
        from geninv.demo import SPARK_BUDGET
        from geninv.inversion.registry import make_config
        from geninv.session import UPLOAD

        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidValueError(f"The 'batch' parameter must be a positive integer. Got {batch!r}.")
        self.check_batch(batch, what="The batch of samples")
        if widths is None:
            if experiment.generator == UPLOAD:
                raise InvalidValueError("The widths of an uploaded generator are needed to check its budget.")
            widths = self.check_spec(experiment.generator)
        else:
            self.check_widths(widths)
        spec = getattr(experiment.corruption, "measurements", "")
        if spec:  # charged as one more dense layer: an upper bound (the DCT is cheaper than a matrix)
            from geninv.session import parse_measurements

            widths = (*widths, parse_measurements(spec)["m"])
            self.check_widths(widths, what="The generator with its measurement operator")
        parts: dict[str, float] = {}
        for method in experiment.methods:
            config = make_config(method, **experiment.options.get(method, {}))
            self.check_method(method, config, batch=batch, latent_dim=widths[0])
            parts[method] = method_cost(method, config, widths, batch=batch)
        if experiment.corruption.noise != "none":
            parts["oracle"] = LAYERWISE_FACTOR["oracle"] * layerwise_macs(widths) * batch
        if getattr(experiment, "digit", None) is not None and experiment.generator != "mnist":
            from geninv.digits import PROJECTION_METHODS

            parts["projection"] = sum(method_cost(m, make_config(m), widths, batch=1) for m in PROJECTION_METHODS)
        parts["certificate"] = certificate_cost(widths, batch=batch, spark_budget=SPARK_BUDGET)
        return self.check_cost(Cost(parts), what="This run" if batch == 1 else f"This batch of {batch} samples")

    def check_sweep(self, config: Any) -> Cost:
        """Check a :class:`geninv.sweeps.SweepConfig` (every value, method and trial); returns its cost."""
        from geninv.sweeps import sweep_widths

        if len(config.values) > self.max_sweep_values:
            _refuse(f"The sweep has {len(config.values)} values", "max_sweep_values", self.max_sweep_values)
        runs = len(config.values) * len(config.methods) * config.trials
        if runs > self.max_sweep_runs:
            what = f"The sweep has {_num(runs)} runs (values x methods x trials)"
            _refuse(what, "max_sweep_runs", self.max_sweep_runs)
        self.check_batch(config.trials, what="Each task of the sweep")
        parts: dict[str, float] = {}
        for value in config.values:
            widths = sweep_widths(config, value)
            self.check_widths(widths, what=f"The generator at {config.variable}={value:g}")
            if config.variable == "measurements":  # the operator, charged as one more dense layer
                widths = (*widths, int(value))
            self._add_methods(parts, config, widths)
            if config.certificate:
                cert = certificate_cost(widths, batch=config.trials, spark_budget=20000)
                parts["certificate"] = parts.get("certificate", 0.0) + cert
        return self.check_cost(Cost(parts), what="This sweep")

    def _add_methods(self, parts: dict[str, float], config: Any, widths: Sequence[int]) -> None:
        """Check each of a sweep's or phase map's methods on ``widths`` and add its cost to ``parts``."""
        from geninv.inversion.registry import make_config
        from geninv.sweeps import ORACLE

        for method in config.methods:
            if method == ORACLE:
                cost = LAYERWISE_FACTOR[ORACLE] * layerwise_macs(widths) * config.trials
            else:
                cfg = make_config(method, **config.method_options.get(method, {}))
                self.check_method(method, cfg, batch=config.trials, latent_dim=widths[0])
                cost = method_cost(method, cfg, widths, batch=config.trials)
            parts[method] = parts.get(method, 0.0) + cost

    def check_phase(self, config: Any) -> Cost:
        """Check a :class:`geninv.phases.PhaseConfig` (every cell, method, trial and certificate)."""
        from geninv.phases import PHASE_SPARK_BUDGET

        for axis, values in (("x", config.x_values), ("y", config.y_values)):
            if len(values) > self.max_sweep_values:
                _refuse(f"The phase map has {len(values)} {axis} values", "max_sweep_values", self.max_sweep_values)
        runs = config.cells * len(config.methods) * config.trials
        if runs > self.max_sweep_runs:
            what = f"The phase map has {_num(runs)} runs (cells x methods x trials)"
            _refuse(what, "max_sweep_runs", self.max_sweep_runs)
        self.check_batch(config.trials, what="Each cell of the phase map")
        parts: dict[str, float] = {}
        for x in config.x_values:
            for y in config.y_values:
                widths = config.widths(x, y)
                self.check_widths(widths, what=f"The generator at {config.x_variable}={x:g}")
                self._add_methods(parts, config, widths)
                cert = certificate_cost(widths, batch=config.trials, spark_budget=PHASE_SPARK_BUDGET)
                parts["certificate"] = parts.get("certificate", 0.0) + cert
        return self.check_cost(Cost(parts), what="This phase map")


HARD_LIMITS = Budget(max_width=10**6, max_layers=1000, max_parameters=10**10)
"""What a spec string may name at all, on any machine (checked by :func:`geninv.io.parse_spec`)."""

MAX_KERNEL = 32
"""Largest side of a convolution kernel a generator file may declare."""
MAX_STRIDE = 16
MAX_CHANNELS = 4096


def check_conv_geometry(geometry: dict[str, Any], *, what: str = "A convolution") -> None:
    """Refuse a convolution layer's shape parameters that no generator needs (a file's ``layers`` entry).

    Kernel side 1 to :data:`MAX_KERNEL`, stride 1 to :data:`MAX_STRIDE`, channels 1 to
    :data:`MAX_CHANNELS`, padding below the kernel, output padding below the stride, a non-empty
    image. The layer's size itself is bounded by the widths (:meth:`Budget.check_widths`): a
    convolution is materialised as a dense matrix by the solvers, so it costs what a dense layer of
    the same widths costs.
    """
    from geninv.errors import ModelFormatError

    def bad(key: str, expected: str) -> None:
        raise ModelFormatError(f"{what}: '{key}' must be {expected}. Got {geometry.get(key)!r}.")

    k = geometry.get("kernel", 0)
    if not 1 <= k <= MAX_KERNEL:
        bad("kernel", f"from 1 to {MAX_KERNEL}")
    if not 1 <= geometry.get("stride", 0) <= MAX_STRIDE:
        bad("stride", f"from 1 to {MAX_STRIDE}")
    for key in ("in_channels", "out_channels"):
        if not 1 <= geometry.get(key, 0) <= MAX_CHANNELS:
            bad(key, f"from 1 to {MAX_CHANNELS}")
    for key in ("in_height", "in_width"):
        if not 1 <= geometry.get(key, 0) <= HARD_LIMITS.max_width:
            bad(key, f"from 1 to {HARD_LIMITS.max_width}")
    if not 0 <= geometry.get("padding", -1) < k:
        bad("padding", f"from 0 to {k - 1} (below the kernel size)")
    if "output_padding" in geometry and not 0 <= geometry["output_padding"] < geometry["stride"]:
        bad("output_padding", f"from 0 to {geometry['stride'] - 1} (below the stride)")
    if geometry.get("type") == "conv2d":
        if geometry["in_height"] + 2 * geometry["padding"] < k or geometry["in_width"] + 2 * geometry["padding"] < k:
            bad("kernel", "no larger than the padded image")
    elif (geometry["in_height"] - 1) * geometry["stride"] + k - 2 * geometry["padding"] < 1:
        bad("padding", "small enough to leave a non-empty output")


def budget() -> Budget:
    """This server's budget: the defaults, changed by ``GENINV_BUDGET``."""
    return Budget.from_env()


# ---------------------------------------------------------------------- this machine's memory
RECORD_BYTES = 2048
"""Bytes kept per record row (one signal, one method: a dict of ~20 fields, in a sweep or the CLI's
report), an upper bound."""


def machine_memory() -> int | None:
    """This machine's physical memory in bytes; None where the system does not say."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return total if total > 0 else None


def held_bytes(
    widths: Sequence[int], configs: Mapping[str, Any], *, batch: int, measurements: int | None = None
) -> float:
    """Bytes a run on ``batch`` signals keeps until it ends, in float64, whatever the memory budget (an
    upper bound, checked against real runs by the tests): the latents, the observations and every layer's
    true pre-activation and activation; for each method of ``configs`` (method -> config) its latent,
    every layer's estimate and its record of the steps, and its stored iterates at their most
    (:func:`history_bytes`; gd stops storing when its restarts settle). The solvers' working memory comes
    on top, in chunks of the memory budget (:mod:`geninv._memory`)."""
    latent = int(widths[0])
    m = int(widths[-1]) if measurements is None else int(measurements)
    units = sum(int(w) for w in widths[1:])
    total = 8.0 * batch * (latent + 2 * m + 2 * units)
    for config in configs.values():
        total += 8.0 * batch * (latent + 2 * units) + history_bytes(config, batch=batch, latent_dim=latent)
    return total


def check_memory(
    what: str,
    n_bytes: float,
    *,
    holds: str = "signals, estimates, stored iterates and the solvers' working memory",
    solvers: bool = True,
    advice: str = "ask for fewer signals",
) -> None:
    """Refuse work that would hold more than this machine's physical memory before it starts: it could
    only fail partway through, or have the process killed without a word. ``n_bytes``: what the work
    keeps (e.g. :func:`held_bytes`), which ``holds`` names; ``solvers``: add the solvers' memory budget;
    ``advice``: the message's last words.
    Nothing is refused where the system does not report its memory."""
    from geninv import _memory

    total = machine_memory()
    need = float(n_bytes) + (_memory.budget() if solvers else 0)
    if total is not None and need > total:
        raise BudgetError(
            f"{what} would hold up to {_gib(need)} in memory ({holds}), more than this machine's "
            f"{_gib(total)}; {advice}."
        )


def _gib(n_bytes: float) -> str:
    """``'23.5 GiB'``, ``'4,890 GiB'``."""
    gib = n_bytes / 2**30
    return f"{gib:.3g} GiB" if gib < 100 else f"{gib:,.0f} GiB"


@dataclass(frozen=True)
class Cost:
    """Estimated multiply-adds of a request, per part (method, certificate)."""

    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))

    def describe(self, limits: Budget | None = None) -> str:
        """E.g. ``'about 1.7e+10 multiply-adds (0.3% of this server's budget)'``."""
        text = f"about {_num(self.total)} multiply-adds"
        if limits is not None:
            text += f" ({100 * self.total / limits.max_cost:.2g}% of this server's budget)"
        return text


# ---------------------------------------------------------------------- the cost model
def parameters(widths: Sequence[int]) -> int:
    """Weights and biases of a fully connected generator."""
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def forward_macs(widths: Sequence[int]) -> float:
    """Multiply-adds of one forward pass of one signal."""
    return float(sum(a * b for a, b in itertools.pairwise(widths)))


def layerwise_macs(widths: Sequence[int]) -> float:
    """Multiply-adds of dense solves on every layer for one signal: ``sum n_out n_in (n_in + n_out)``."""
    return float(sum(b * a * (a + b) for a, b in itertools.pairwise(widths)))


def history_bytes(config: Any, *, batch: int, latent_dim: int) -> float:
    """Bytes an iterative method stores: per record, every restart's iterate, loss and error."""
    n_iter = getattr(config, "n_iter", None) or getattr(config, "gd_iter", None)
    if not isinstance(n_iter, int):
        return 0.0
    restarts = getattr(config, "restarts", None) or getattr(config, "gd_restarts", 1) + 1
    records = n_iter // getattr(config, "record_every", 10) + 2
    return 8.0 * records * batch * restarts * (latent_dim + 2)


def method_cost(method: str, config: Any, widths: Sequence[int], *, batch: int) -> float:
    """Estimated multiply-adds of ``method`` with ``config`` on ``batch`` signals (an upper bound)."""
    f, lw = forward_macs(widths), layerwise_macs(widths)
    n0, m = widths[0], widths[-1]
    per_signal = 0.0
    if hasattr(config, "n_iter") and method not in LAYERWISE_FACTOR:  # gd, plugin and other iterative methods
        per_signal = 3.0 * f * config.n_iter * getattr(config, "restarts", 1)
        if getattr(config, "negation_check", False):
            per_signal += 2.0 * f * (config.n_iter // getattr(config, "record_every", 1) + 1) * config.restarts
    else:
        per_signal = LAYERWISE_FACTOR.get(method, UNKNOWN_LAYERWISE_FACTOR) * lw
    if hasattr(config, "refit_iter"):  # the layer-wise methods' joint refit of z
        per_signal += config.refit_iter * (n0 * f + m * n0 * n0)
    if hasattr(config, "gd_iter"):
        per_signal += 3.0 * f * config.gd_iter * (getattr(config, "gd_restarts", 1) + 1)
    return per_signal * batch


def certificate_cost(widths: Sequence[int], *, batch: int, spark_budget: int) -> float:
    """Estimated multiply-adds of :func:`geninv.certify` on ``batch`` samples."""
    spark = spark_budget * float(sum(a * a for a in widths[:-1]))
    return batch * (CERTIFICATE_FACTOR * layerwise_macs(widths) + spark)


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e6 else f"{x:.2g}"


def _refuse(what: str, limit: str, value: float, hard: bool = False) -> None:
    if hard:
        raise BudgetError(f"{what}; geninv builds at most {_num(value)} on any machine (hard limit '{limit}').")
    raise BudgetError(
        f"{what}; this server allows at most {_num(value)} (limit '{limit}'). "
        f"An operator can raise it with the environment variable {ENV}='{limit}=...'."
    )
