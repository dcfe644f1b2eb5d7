"""geninv.limits: one budget for untrusted work, checked before anything is built."""

from __future__ import annotations

import dataclasses

import pytest

import geninv
from geninv import limits, session
from geninv.errors import BudgetError, InvalidValueError, ModelFormatError
from geninv.sweeps import SweepConfig


def test_budget_from_env_changes_named_limits_only():
    assert limits.Budget.from_env({}) == limits.Budget()
    b = limits.Budget.from_env({limits.ENV: "max_cost=1e13, max_width=16384"})
    assert b.max_cost == 1e13 and b.max_width == 16384 and isinstance(b.max_width, int)
    assert b.max_layers == limits.Budget().max_layers


@pytest.mark.parametrize(
    "text, match",
    [
        ("max_widht=10", "names among"),
        ("max_width", "name=value"),
        ("max_width=lots", "'max_width' must be a number"),
        ("max_width=2.5", "whole number"),
        ("max_cost=-1", "positive finite"),
        ("max_cost=inf", "whole number|positive finite"),
    ],
)
def test_a_bad_budget_setting_is_named(text, match):
    with pytest.raises(InvalidValueError, match=match):
        limits.Budget.from_env({limits.ENV: text})


def test_budget_reads_the_environment(monkeypatch):
    monkeypatch.setenv(limits.ENV, "max_width=100")
    with pytest.raises(BudgetError, match=r"layer of 784 units.*at most 100 \(limit 'max_width'\).*GENINV_BUDGET"):
        limits.budget().check_spec("random:20-128-392-784")
    monkeypatch.delenv(limits.ENV)
    assert limits.budget().check_spec("random:20-128-392-784") == (20, 128, 392, 784)


@pytest.mark.parametrize(
    "widths, limit",
    [
        ((20, 31623, 31623), "max_width"),
        ((2,) * 12, "max_layers"),
        ((20, 4000, 4000), "max_parameters"),
    ],
)
def test_generator_size_limits(widths, limit):
    with pytest.raises(BudgetError, match=f"limit '{limit}'"):
        limits.Budget().check_widths(widths)


def test_shipped_generator_widths_are_read_without_building_it(monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("a generator was built")

    monkeypatch.setattr(geninv.Generator, "__init__", no_build)
    assert limits.Budget().check_spec("mnist") == (20, 128, 392, 784)


def test_method_limits_iterations_restarts_history():
    b = limits.Budget()
    make = geninv.inversion.registry.make_config
    with pytest.raises(BudgetError, match="gd's 'n_iter' is 1e\\+09.*max_iterations"):
        b.check_method("gd", make("gd", n_iter=10**9), batch=1, latent_dim=20)
    with pytest.raises(BudgetError, match="'gd_restarts' is 64.*max_restarts"):
        b.check_method("hybrid", make("hybrid", gd_restarts=64), batch=1, latent_dim=20)
    with pytest.raises(BudgetError, match="'refit_iter'.*max_iterations"):
        b.check_method("lbp", make("lbp", refit_iter=10**6), batch=1, latent_dim=20)
    with pytest.raises(BudgetError, match="MB of iterates.*max_history_mb"):
        b.check_method("gd", make("gd", n_iter=50_000, restarts=32, record_every=1), batch=1, latent_dim=20)
    b.check_method("gd", make("gd"), batch=500, latent_dim=20)  # the defaults fit a full sweep task


def test_cost_model_scales_with_iterations_restarts_batch_and_width():
    make = geninv.inversion.registry.make_config
    w = (20, 128, 392, 784)
    gd = limits.method_cost("gd", make("gd"), w, batch=1)
    assert gd == 3 * limits.forward_macs(w) * 8000 * 2
    assert limits.method_cost("gd", make("gd", n_iter=16000), w, batch=3) == 6 * gd
    lp = limits.method_cost("latent-pursuit", make("latent-pursuit"), w, batch=1)
    refit = 20 * (20 * limits.forward_macs(w) + 784 * 20 * 20)  # its joint refit of z, 20 iterations
    assert lp == 4 * limits.layerwise_macs(w) + refit
    assert limits.method_cost("latent-pursuit", make("latent-pursuit"), (20, 256, 784, 1568), batch=1) > 4 * lp
    hybrid = limits.method_cost("hybrid", make("hybrid"), w, batch=1)
    assert hybrid > lp + 3 * limits.forward_macs(w) * 8000 * 2  # its gradient stage is charged in full


def test_default_experiment_fits_and_reports_its_cost():
    b = limits.Budget()
    cost = b.check_experiment(session.Experiment())
    assert set(cost.parts) == {"gd", "latent-pursuit", "certificate"}
    assert 0 < cost.total < 0.05 * b.max_cost
    assert "multiply-adds" in cost.describe(b) and "% of this server's budget" in cost.describe(b)
    every = dataclasses.replace(session.Experiment(), methods=geninv.methods())
    assert b.check_experiment(every).total < b.max_cost


def test_experiment_past_the_cost_budget_names_the_limit_and_the_setting():
    exp = session.Experiment(
        generator="random:20-500-2000-784", options={"gd": {"n_iter": 50_000, "restarts": 32, "record_every": 100}}
    )
    with pytest.raises(BudgetError) as info:
        limits.Budget().check_experiment(exp)
    text = str(info.value)
    assert "limit 'max_cost'" in text and "GENINV_BUDGET='max_cost=...'" in text and "gd" in text
    assert limits.Budget(max_cost=1e16).check_experiment(exp).total > 5e12  # a lab machine may allow it


def test_sweep_limits():
    b = limits.Budget()
    base = SweepConfig(generator="random:20-128-392-784", values=(0.0, 0.3), methods=("latent-pursuit",), trials=5)
    assert b.check_sweep(base).total > 0
    with pytest.raises(BudgetError, match="max_batch"):
        b.check_sweep(dataclasses.replace(base, trials=501))
    with pytest.raises(BudgetError, match="max_sweep_values"):
        b.check_sweep(dataclasses.replace(base, values=tuple(i / 100 for i in range(51))))
    with pytest.raises(BudgetError, match="max_sweep_runs"):
        limits.Budget(max_sweep_runs=9).check_sweep(base)
    with pytest.raises(BudgetError, match="max_width"):
        b.check_sweep(dataclasses.replace(base, generator="random:20-9000-20"))
    expansion = SweepConfig(generator="random:20-40", variable="expansion", values=(2.0, 20.0), methods=("lbp",))
    with pytest.raises(BudgetError, match=r"expansion=20.*max_width"):
        b.check_sweep(expansion)
    with pytest.raises(BudgetError, match="max_cost"):
        b.check_sweep(dataclasses.replace(base, methods=("gd",), trials=500, values=(0.0, 0.1, 0.2)))


def test_spec_strings_meet_hard_limits_on_any_machine():
    with pytest.raises(ModelFormatError, match="weight layers"):
        geninv.io.parse_spec("random:" + "-".join(["2"] * 1002))
    with pytest.raises(ModelFormatError, match="units"):
        geninv.io.parse_spec("random:20-2000000")
    assert geninv.io.parse_spec("random:20-50000-20")["widths"] == [20, 50000, 20]  # big, but the library may


def test_the_readme_states_the_default_budget():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for f in dataclasses.fields(limits.Budget):
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{f.name}` |"))
        assert float(row.split("|")[2]) == getattr(limits.Budget(), f.name), row


# ----------------------------------------------------------------------------- what this machine can hold
def _nbytes(x, seen: set[int]) -> int:
    """Bytes of every tensor and array reachable from ``x`` (dataclasses, dicts, sequences), each once."""
    import numpy as np
    import torch

    if id(x) in seen:
        return 0
    seen.add(id(x))
    if isinstance(x, torch.Tensor):
        return x.untyped_storage().nbytes()
    if isinstance(x, np.ndarray):
        return x.nbytes
    if isinstance(x, dict):
        return sum(_nbytes(v, seen) for v in x.values())
    if isinstance(x, list | tuple):
        return sum(_nbytes(v, seen) for v in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return sum(_nbytes(getattr(x, f.name), seen) for f in dataclasses.fields(x))
    return 0


@pytest.mark.parametrize("case", ["clean, masked", "noisy"])
def test_held_bytes_bounds_what_a_run_keeps(case):
    """The estimate is an upper bound of what the observation and every method's result really hold."""
    from geninv.experiments import run_methods
    from geninv.inversion.registry import make_config

    widths, batch = [20, 128, 392, 784], 24
    gen = geninv.Generator.random(widths, seed=0)
    z = gen.sample_latent(batch, seed=1)
    if case == "noisy":
        obs = geninv.observe(gen, z, snr_db=20, seed=3)
    else:
        obs = geninv.observe(gen, z, mask=geninv.masks.random_pixels(784, 0.3, seed=2))
    options = {"gd": {"n_iter": 300}, "hybrid": {"gd_iter": 300}}
    results = run_methods(gen, obs, ["gd", "latent-pursuit", "hybrid"], options=options)
    configs = {name: make_config(name, **options.get(name, {})) for name in results}
    kept = _nbytes(obs, set()) + sum(_nbytes(r, set()) for r in results.values())
    estimate = limits.held_bytes(widths, configs, batch=batch, measurements=obs.y.shape[1])
    assert kept <= estimate <= 4 * kept
    assert limits.held_bytes(widths, configs, batch=10 * batch) == pytest.approx(
        10 * limits.held_bytes(widths, configs, batch=batch)
    )


def test_work_past_this_machines_memory_is_refused_in_one_sentence(monkeypatch):
    from geninv import _memory

    monkeypatch.setattr(limits, "machine_memory", lambda: 8 * 2**30)
    _memory.set_budget("1GiB")
    try:
        limits.check_memory("This run", 6.9 * 2**30)  # with the solvers' budget: 7.9 of 8 GiB
        with pytest.raises(BudgetError) as err:
            limits.check_memory("The 'samples' parameter (10 signals)", 7.1 * 2**30)
    finally:
        _memory.set_budget(None)
    message = str(err.value)
    assert "\n" not in message and message.count(". ") == 0
    assert "up to 8.1 GiB" in message and "this machine's 8 GiB" in message and "fewer signals" in message
    monkeypatch.setattr(limits, "machine_memory", lambda: None)
    limits.check_memory("This run", 1e18)  # where the system does not say, nothing is refused


def test_this_machines_memory_is_read():
    total = limits.machine_memory()
    assert total is None or 2**28 < total < 2**50
