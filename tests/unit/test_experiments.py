import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import geninv
from geninv.charts import figure
from geninv.errors import GeninvError
from geninv.experiments import run_methods
from geninv.presets import PRESETS
from geninv.sweeps import SweepConfig, _generator_for, _observation, run_sweep, summarize, write_results

ROOT = Path(__file__).resolve().parents[2]

TINY = SweepConfig(
    generator="random:4-16-48",
    variable="missing",
    values=(0.0, 0.5),
    methods=("gd", "latent-pursuit"),
    trials=3,
    method_options={"gd": {"n_iter": 300, "restarts": 1}},
)
COLUMNS = {
    "variable",
    "value",
    "method",
    "trial",
    "latent_error",
    "signal_error",
    "psnr",
    "success",
    "seconds",
    "status",
}


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "forward_passes")} for r in records]


def test_records_columns_counts_and_ranges():
    records = run_sweep(dataclasses.replace(TINY, certificate=True))
    assert len(records) == 2 * 2 * 3
    assert COLUMNS <= set(records[0])
    assert all(r["latent_error"] >= 0 and r["seconds"] >= 0 for r in records)
    lp = [r for r in records if r["method"] == "latent-pursuit"]
    assert sum(r["identifiable"] for r in lp) >= 4
    assert all(r["success"] for r in lp if r["identifiable"])  # exact wherever the certificate says so
    summary = summarize(records)
    assert {(s["value"], s["method"]) for s in summary} == {(v, m) for v in TINY.values for m in TINY.methods}
    fig = figure(records)
    assert {t.name for t in fig.data} == set(TINY.methods)
    assert list(fig.data[0].x) == [0.0, 0.5]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_at_tiny_size(name, tmp_path):
    preset = PRESETS[name]
    # compressed sensing: the largest m (few measurements send the hybrid to its long gd stage)
    values = preset.values[-2:] if preset.variable == "measurements" else preset.values[:2]
    methods = tuple(m for m in preset.methods if m not in ("gd", "lbp"))[:2] or preset.methods[:1]
    config = dataclasses.replace(preset, trials=2, values=values, methods=methods)
    records = run_sweep(config)
    assert len(records) == 2 * len(values) * len(methods)
    assert all(0 <= r["latent_error"] or np.isnan(r["latent_error"]) for r in records)
    if config.certificate:
        assert {"identifiable", "paper_unique", "lbp_guaranteed"} <= set(records[0])
    payload = write_results(records, config, tmp_path, name)
    assert (tmp_path / f"{name}.csv").exists() and (tmp_path / f"{name}.html").exists()
    assert json.loads((tmp_path / f"{name}.json").read_text())["key"] == payload["key"]


def test_resume_after_interruption(tmp_path):
    path = tmp_path / "rec.jsonl"
    calls = []

    def stop_after_two(frac, msg):
        calls.append(msg)
        return len(calls) < 2

    partial = run_sweep(TINY, progress=stop_after_two, records_path=path)
    assert len(partial) == 2 * 3  # two tasks of three signals
    seen = []
    full = run_sweep(TINY, progress=lambda f, m: seen.append(m), records_path=path)
    assert len(seen) == 2  # only the two missing tasks ran
    assert _strip(full) == _strip(run_sweep(TINY))


@pytest.mark.slow
def test_dask_local_cluster_matches_local_run():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            remote = run_sweep(TINY, scheduler=client)
    assert _strip(remote) == _strip(run_sweep(TINY))


def test_bad_sweep_configs():
    with pytest.raises(geninv.InvalidValueError, match="'variable'"):
        SweepConfig(variable="temperature")
    with pytest.raises(geninv.InvalidValueError, match="'methods'.*'magic'"):
        SweepConfig(methods=("magic",))
    with pytest.raises(geninv.ModelFormatError, match="Unknown generator spec"):
        SweepConfig(generator="resnet")
    with pytest.raises(geninv.InvalidValueError, match="'values'"):
        SweepConfig(values=(1.5,))


def test_run_methods_keeps_failures_apart():
    G = geninv.Generator.random([4, 16, 48], seed=0, output="sigmoid")
    obs = geninv.observe(G, G.sample_latent(2, seed=0), operator=geninv.GaussianMatrix(30, 48))
    # the pure layer-wise pass (no joint refit) has no output step for A sigmoid(W x + b): it refuses
    options = {"latent-pursuit": {"refit_iter": 0}, "gd": {"n_iter": 50}}
    out = run_methods(G, obs, ["latent-pursuit", "gd"], options=options)
    assert isinstance(out["latent-pursuit"], geninv.UnsupportedError)
    assert out["gd"].z_hat.shape == (2, 4)


def _fake_records(variable, values, methods, trials=4):
    """Hand-made records (no inversion): errors grow with the value, the first method always succeeds."""
    rows = []
    for i, value in enumerate(values):
        for j, method in enumerate(methods):
            for t in range(trials):
                err = 1e-12 if j == 0 else 10.0 ** (i - 4) * (t + 1)
                rows.append(
                    {
                        "variable": variable,
                        "value": value,
                        "method": method,
                        "trial": t,
                        "latent_error": err,
                        "success": err <= 1e-3,
                        "seconds": 0.01,
                    }
                )
    return rows


def test_noise_figure_puts_clean_first_as_a_category():
    from geninv.sweeps import CLEAN_DB

    records = _fake_records("noise_db", (CLEAN_DB, 40.0, 10.0), ("gd", "oracle"))
    fig = figure(records, "median_error")
    assert fig.layout.xaxis.type == "category"
    assert list(fig.data[0].x) == ["clean", "40 dB", "10 dB"]
    assert fig.data[1].line.dash == "dash"  # the oracle
    exact = [dict(r, latent_error=0.0) if r["value"] == CLEAN_DB else r for r in records]
    assert figure(exact, "median_error").data[0].y[0] is None  # no 0 on a log axis


def test_every_method_has_its_palette_colour_dash_and_marker_in_sweep_figures():
    from geninv.viz import METHOD_COLORS, METHOD_DASHES, METHOD_SYMBOLS

    methods = ("gd", "latent-pursuit", "hybrid", "oracle")
    fig = figure(_fake_records("missing", (0.0, 0.5), methods), "median_error", threshold=1e-3)
    assert sorted(t.name for t in fig.data) == sorted(methods)
    for trace in fig.data:
        method = trace.name
        assert trace.line.color == METHOD_COLORS[method] and trace.marker.color == METHOD_COLORS[method]
        assert trace.line.dash == METHOD_DASHES[method] and trace.marker.symbol == METHOD_SYMBOLS[method]
    # Lines that coincide stay visible: earlier ones wider, and no two methods share colour and marker.
    widths = [t.line.width for t in fig.data]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == len(widths)
    assert len({(t.line.color, t.marker.symbol) for t in fig.data}) == len(methods)
    assert any(s.y0 == 1e-3 and s.y1 == 1e-3 for s in fig.layout.shapes)  # the success threshold
    assert next(a for a in fig.layout.annotations if "threshold" in a.text).y == -3  # labelled at log10
    assert not figure(_fake_records("missing", (0.0, 0.5), methods), "median_error").layout.shapes


def test_palette_is_okabe_ito_and_distinct():
    from geninv.viz import METHOD_COLORS, OKABE_ITO, method_color

    assert set(METHOD_COLORS.values()) <= set(OKABE_ITO.values())
    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)
    assert set(geninv.methods()) <= set(METHOD_COLORS)  # every registered method has a colour
    assert method_color("unknown") == "#777777"


def test_certificate_records_carry_the_whole_network_verdict():
    config = dataclasses.replace(TINY, certificate=True, methods=("latent-pursuit",), method_options={})
    records = run_sweep(config)
    assert all(isinstance(r["identifiable_network"], bool) for r in records)
    # The layer-by-layer test is sufficient: where it holds, the whole network is identifiable too.
    assert all(r["identifiable_network"] for r in records if r["identifiable"])
    rates = summarize(records)[0]
    assert 0 <= rates["identifiable_network_rate"] <= 1
    names = {t.name for t in figure(records, "identifiable_rate").data}
    assert "identifiable (whole network)" in names and "layer-by-layer rank test" in names


# --------------------------------------------------------------------------- phase maps
def test_phase_map_cells_records_and_certificate_boundary():
    from geninv.phases import PhaseConfig, phase_grid, run_phase

    config = PhaseConfig(
        generator="random:4-16-48:seed=0",
        x_variable="expansion",
        x_values=(1.0, 3.0),
        y_variable="missing",
        y_values=(0.0, 0.5),
        methods=("latent-pursuit",),
        trials=3,
    )
    records = run_phase(config)
    assert len(records) == 2 * 2 * 3
    assert {(r["x"], r["y"]) for r in records} == {(x, y) for x in (1.0, 3.0) for y in (0.0, 0.5)}
    assert {r["widths"] for r in records if r["x"] == 3.0} == {"20-60-180-540"}
    # Exact wherever the layer-by-layer certificate holds, and never where the network is not identifiable.
    assert all(r["success"] for r in records if r["identifiable"])
    assert not any(r["success"] for r in records if not r["identifiable_network"])
    grid = phase_grid(records, "latent-pursuit")
    assert grid["x"] == [1.0, 3.0] and grid["y"] == [0.0, 0.5]
    assert grid["success"].shape == (2, 2) and grid["success"][0, 1] == 1.0  # r = 3, nothing missing
    assert grid["network"][0, 0] == 0.0  # r = 1: 20 -> 20 -> 20 -> 20 with half the units off
    assert grid["boundary_network"][0] == 0.0 and grid["boundary_network"][1] == 0.5


def test_phase_boundary_is_the_first_drop_below_the_level():
    from geninv.phases import phase_boundary

    fractions = np.array([[1.0, 1.0, 0.0, np.nan], [1.0, 0.2, 0.0, np.nan], [0.9, 0.9, 0.0, np.nan]])
    assert phase_boundary(fractions, [0.0, 0.4, 0.8]) == [0.8, 0.2, 0.0, None]


def test_phase_config_checks_its_axes_and_budget():
    from geninv.limits import Budget
    from geninv.phases import PhaseConfig

    with pytest.raises(GeninvError, match="y_variable"):
        PhaseConfig(x_variable="missing", y_variable="missing")
    with pytest.raises(GeninvError, match="y_variable"):
        PhaseConfig(x_variable="missing", y_variable="box", x_values=(0.1,), y_values=(2.0,))
    with pytest.raises(GeninvError, match="values"):
        PhaseConfig(y_values=(0.0, 1.5))
    with pytest.raises(geninv.BudgetError, match="max_sweep_runs"):
        Budget(max_sweep_runs=100).check_phase(PhaseConfig())
    with pytest.raises(geninv.BudgetError, match="max_cost"):
        Budget(max_cost=1e9).check_phase(PhaseConfig(methods=("gd",)))
    assert Budget().check_phase(PhaseConfig()).total > 0


def test_measurement_sweeps_are_validated_and_other_keys_unchanged():
    # the keys the stored results in docs/results carry: adding the 'measurement' field changed none of them
    assert PRESETS["noise"].key == json.loads((ROOT / "docs/results/noise.json").read_text())["key"]
    assert PRESETS["expansion"].key == json.loads((ROOT / "docs/results/expansion.json").read_text())["key"]
    base = {"generator": "random:4-16-48", "variable": "measurements", "methods": ("latent-pursuit",)}
    assert SweepConfig(**base, values=(1.0, 48.0)).measurement == "gaussian"
    with pytest.raises(geninv.InvalidValueError, match="'values'"):
        SweepConfig(**base, values=(49.0,))  # more measurements than outputs
    with pytest.raises(geninv.InvalidValueError, match="whole numbers of measurements"):
        SweepConfig(**base, values=(2.5,))
    with pytest.raises(geninv.InvalidValueError, match="'measurement'"):
        SweepConfig(**base, values=(2.0,), measurement="fourier")
    a = SweepConfig(**base, values=(2.0,), measurement="dct")
    assert a.key != SweepConfig(**base, values=(2.0,), measurement="gaussian").key


def test_a_measurement_sweep_draws_its_operator_per_value():
    config = SweepConfig(
        generator="random:4-16-48", variable="measurements", values=(10.0, 20.0), methods=("latent-pursuit",), trials=2
    )
    gen = _generator_for(config, 10.0)
    obs_10 = _observation(config, gen, 10.0, 0)
    obs_20 = _observation(config, gen, 20.0, 1)
    assert isinstance(obs_10.operator, geninv.GaussianMatrix) and obs_10.y.shape == (2, 10)
    assert obs_20.y.shape == (2, 20)
    again = _observation(config, gen, 10.0, 0)
    torch.testing.assert_close(again.y, obs_10.y)  # reproducible from the seed
