"""geninv.demo: the shareable experiment spec and the plain-array outcome the dashboard shows."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import geninv
from geninv import demo, explain, session
from geninv.errors import GeninvError


@pytest.fixture(scope="module")
def small():
    return geninv.Generator.random([6, 24, 96], seed=2)


@given(st.lists(st.booleans(), min_size=1, max_size=300))
@settings(max_examples=60, deadline=None)
def test_pack_mask_round_trips(bits):
    mask = np.array(bits)
    if not mask.any():
        mask[0] = True
    text = session.pack_mask(mask)
    assert text.isascii() and "&" not in text and "=" not in text
    np.testing.assert_array_equal(session.unpack_mask(text, mask.size), mask)


def test_unpack_mask_rejects_garbage_and_wrong_size():
    with pytest.raises(GeninvError, match="custom"):
        session.unpack_mask("not a mask")
    with pytest.raises(GeninvError):
        session.unpack_mask(session.pack_mask(np.ones(10, bool)), 12)


@pytest.mark.parametrize(
    "experiment",
    [
        session.Experiment(),
        session.Experiment(
            generator="random:6-24-96:seed=4:bias:hidden=leaky_relu:output=sigmoid",
            latent_seed=7,
            corruption=session.Corruption(
                mask="random", missing=0.35, mask_seed=3, noise="snr", snr_db=25, noise_seed=2
            ),
            methods=("gd", "hybrid"),
            options={"gd": {"n_iter": 50, "optimizer": "momentum"}},
            seed=5,
        ),
        session.Experiment(corruption=session.Corruption(mask="box", box=(1, 2, 3, 4), noise="sigma", sigma=0.125)),
        session.Experiment(corruption=session.Corruption(mask="half", half="left")),
        session.Experiment(
            corruption=session.Corruption(mask="custom", custom=session.pack_mask(np.arange(784) % 3 > 0))
        ),
        session.Experiment(corruption=session.Corruption(measurements="gaussian:100:seed=1"), methods=("hybrid",)),
        session.Experiment(
            generator="mnist-conv",
            corruption=session.Corruption(measurements="dct:200:seed=7", noise="sigma", sigma=0.01, noise_seed=3),
            digit=4,
        ),
    ],
)
def test_experiment_round_trips_through_the_url_query(experiment):
    query = experiment.to_query()
    assert all(isinstance(v, str) for v in query.values())
    assert session.Experiment.from_query(query) == experiment
    assert session.Experiment.from_query({k: [v] for k, v in query.items()}) == experiment  # list-valued params


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({"gen": "random:6-x-96"}, "6-x-96"),
        ({"gen": "mnist", "methods": "gd,warp"}, "warp"),
        ({"gen": "mnist", "z": "minus one"}, "'z'"),
        ({"gen": "mnist", "mask": "random", "missing": "1.5"}, "missing"),
        ({"gen": "mnist", "options": "{bad json"}, "options"),
        ({"gen": "mnist", "options": '{"gd": {"n_iters": 5}}'}, "n_iters"),
        ({"gen": "mnist", "noise": "sigma", "level": "-1"}, "'level'"),
        ({"gen": "mnist", "mask": "box", "box": "1,2,3"}, "box"),
        ({"gen": "mnist", "meas": "blur:sigma=1"}, "'meas'"),
        ({"gen": "mnist", "meas": "gaussian:0"}, "'meas'"),
        ({"gen": "mnist", "meas": "gaussian:785"}, "at most 784 measurements"),
        ({"gen": "mnist", "meas": "gaussian:100", "mask": "half"}, "replaces the pixel mask"),
        ({"gen": "random:6-24-96", "meas": "dct:10"}, "the DCT needs an image"),
    ],
)
def test_bad_query_raises_an_error_naming_the_value(query, names):
    with pytest.raises(GeninvError, match=names):
        session.Experiment.from_query(query)


def test_box_and_half_need_an_image_output():
    with pytest.raises(GeninvError, match="non-image"):
        session.Corruption(mask="half").mask_array(96)
    assert session.Corruption(mask="half").mask_array(100).sum() == 50


def test_mask_that_hides_everything_is_refused(small):
    exp = session.Experiment(
        generator="random:6-24-96:seed=2",
        corruption=session.Corruption(mask="custom", custom=session.pack_mask(np.zeros(96, bool))),
    )
    with pytest.raises(GeninvError, match="observed"):
        exp.observation(small)


def test_run_gives_real_numbers_for_every_method(small):
    exp = session.Experiment(
        generator="random:6-24-96:seed=2",
        latent_seed=1,
        corruption=session.Corruption(mask="random", missing=0.3),
        methods=("gd", "latent-pursuit", "hybrid"),
        options={"gd": {"n_iter": 300}},
    )
    out = demo.run(small, exp)
    assert out.widths == (6, 24, 96) and out.image_shape is None
    assert out.mask is not None and out.mask.sum() == round(0.7 * 96)
    np.testing.assert_allclose(out.observed[~out.mask], 0)
    np.testing.assert_allclose(out.observed[out.mask], out.x_true[out.mask])
    table = {row["method"]: row for row in out.table()}
    assert table["latent-pursuit"]["latent_error"] < 1e-8 and table["hybrid"]["latent_error"] < 1e-8
    assert 0 < table["gd"]["seconds"] and table["gd"]["forward_passes"] > 0
    lp = out.methods["latent-pursuit"]
    assert [s["layer"] for s in lp.steps] == [1, 0]  # output -> x1, then x1 -> z
    np.testing.assert_allclose(lp.steps[-1]["image"], lp.x_hat, atol=1e-10)  # z step implies the output
    info = lp.layers[0]
    assert info["precision"] == 1.0 and info["recall"] == 1.0
    truth = out.true_supports[0]
    np.testing.assert_array_equal(info["map"], np.where(truth, 1, 0))  # all found, no false alarm
    gd = out.methods["gd"]
    h = gd.history
    restarts = session.method_options("gd")[[o["name"] for o in session.method_options("gd")].index("restarts")][
        "default"
    ]
    assert h["loss"].shape == (len(h["iterations"]), restarts) and h["latent_error"].shape == h["loss"].shape
    assert h["frames"].shape == (len(h["frame_iterations"]), 96)
    assert h["frame_errors"][-1] == pytest.approx(gd.metrics["latent_error"], rel=1e-6)
    layers = out.layer_table()
    assert [r["layer"] for r in layers] == [1, 0] and "hybrid: precision" in layers[0]
    payload = json.loads(json.dumps(out.to_json()))
    assert payload["query"] == exp.to_query()
    assert payload["methods"]["hybrid"]["metrics"]["latent_error"] < 1e-8


def test_measurement_spec_is_canonical_and_replaces_the_mask():
    c = session.Corruption(measurements="gaussian:100")
    assert c.measurements == "gaussian:100:seed=0"
    assert session.Experiment.from_query({"meas": "gaussian:100"}) == session.Experiment.from_query(
        {"meas": "gaussian:100:seed=0"}
    )
    assert session.Experiment(corruption=c).to_query()["meas"] == "gaussian:100:seed=0"
    assert "meas" not in session.Experiment().to_query()  # pixel links stay as they were
    with pytest.raises(GeninvError, match="replaces the pixel mask"):
        session.Corruption(mask="random", measurements="dct:50")
    with pytest.raises(GeninvError, match="'measurements'"):
        session.Corruption(measurements="subsample:50")
    with pytest.raises(GeninvError, match="'measurements'"):
        session.Corruption(measurements=50)


def test_compressed_sensing_run_is_exact_and_reports_its_measurements(small):
    exp = session.Experiment(
        generator="random:6-24-96:seed=2",
        corruption=session.Corruption(measurements="gaussian:40:seed=1"),
        methods=["hybrid"],
    )
    out = demo.run(small, exp)
    assert out.mask is None and out.measurements["m"] == 40 and out.measurements["n"] == 96
    assert out.measurements["y"].shape == (40,) and out.network["observed"] == 40
    A = geninv.measurement_operator("gaussian:40:seed=1", small).dense().numpy()
    np.testing.assert_allclose(out.measurements["y"], A @ out.x_true, atol=1e-12)
    np.testing.assert_allclose(out.observed, A.T @ out.measurements["y"], atol=1e-12)  # the back-projection
    assert out.methods["hybrid"].metrics["latent_error"] < 1e-6
    assert "measurements" in out.verdict[1]
    assert json.loads(json.dumps(out.to_json()))["measurements"]["m"] == 40
    assert out.arrays()["measurements"].shape == (40,)
    batch = demo.run_batch(small, exp, 3)
    assert batch.errors["hybrid"]["latent_error"].max() < 1e-6


def test_preview_measurements_match_the_operator(small):
    x = small.generate(small.sample_latent(1, seed=0))[0].numpy()
    y, back = demo.preview_measurements(small, "gaussian:30", x)
    A = geninv.measurement_operator("gaussian:30:seed=0", small).dense().numpy()
    np.testing.assert_allclose(y, A @ x, atol=1e-12)
    np.testing.assert_allclose(back, A.T @ y, atol=1e-12)


def test_outcome_carries_the_layer_shapes_of_a_convolutional_generator():
    G = geninv.Generator.random_conv(4, [3, 2], size=3)  # dense 4 -> 3x3x3, convT -> 2x6x6
    exp = session.Experiment(generator=session.UPLOAD, methods=["hybrid"])
    out = demo.run(G, exp)
    assert out.layer_shapes == ((4,), (3, 3, 3), (2, 6, 6))
    assert out.methods["hybrid"].layers[0]["map"].shape == (27,)  # flat, in (channel, row, column) order
    dense = demo.run(geninv.Generator.random([6, 24, 96], seed=2), exp)
    assert dense.layer_shapes == ((6,), (24,), (96,))


def test_measurements_are_charged_as_one_more_layer():
    from geninv.limits import Budget

    pixels = Budget().check_experiment(session.Experiment(methods=["hybrid"]))
    cs = Budget().check_experiment(
        session.Experiment(corruption=session.Corruption(measurements="gaussian:784"), methods=["hybrid"])
    )
    assert cs.total > pixels.total
    with pytest.raises(geninv.BudgetError, match="measurement operator"):
        Budget(max_parameters=500_000).check_experiment(
            session.Experiment(corruption=session.Corruption(measurements="gaussian:784"))
        )


def test_support_map_codes():
    np.testing.assert_array_equal(
        demo.support_map(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)), [1, 3, 2, 0]
    )


def test_forward_from_a_hidden_layer_continues_the_forward_pass(small):
    z = small.sample_latent(3, seed=0)
    tr = small.trace(z)
    np.testing.assert_allclose(demo.forward_from(small, 1, tr.activations[0]), tr.output, atol=1e-12)
    np.testing.assert_allclose(demo.forward_from(small, 0, z), tr.output, atol=1e-12)


def test_method_options_describe_the_config_fields():
    opts = {o["name"]: o for o in session.method_options("gd")}
    assert opts["optimizer"]["choices"] == ("adam", "momentum") and opts["n_iter"]["kind"] == "int"
    assert "z_init" not in opts  # arrays are not form fields
    assert {o["name"] for o in session.method_options("plugin")}.isdisjoint({"eta"})  # automatic step size


# --------------------------------------------------------------------------- the whole truth
def test_a_noisy_run_reports_the_oracle_and_the_certificate_predicts_it():
    G = geninv.Generator.random([20, 128, 392, 784], seed=1)
    exp = session.Experiment(
        generator="random:20-128-392-784:seed=1",
        latent_seed=3,
        corruption=session.Corruption(noise="snr", snr_db=20.0),
        methods=("latent-pursuit",),
    )
    out = demo.run(G, exp)
    assert list(out.methods) == ["latent-pursuit", "oracle"]
    oracle = out.methods["oracle"]
    assert oracle.status == "converged" and oracle.layers and not oracle.history
    measured, predicted = oracle.metrics["latent_error"], out.network["predicted_error"]
    assert 0.5 * predicted < measured < 2 * predicted  # the certificate predicts the oracle at 20 dB
    assert out.network["identifiable_network"] and out.verdict[0] == "identifiable and stable"
    rows = {r["method"]: r for r in out.table()}
    assert rows["oracle"]["recovered"] is False and rows["latent-pursuit"]["latent_error"] < 3 * measured
    clean = demo.run(G, dataclasses.replace(exp, corruption=session.Corruption()))
    assert "oracle" not in clean.methods and clean.network["predicted_error"] == 0.0


def test_verdict_words_never_say_not_identifiable_from_the_layerwise_test_alone():
    net = {"identifiable_network": True, "identifiable_layerwise": False, "stable": False, "condition": 740.2}
    head, why = explain.verdict_words(net)
    assert head == "identifiable but unstable: noise ×740" and "not identifiable" not in head
    assert "sufficient, not necessary" in why
    assert explain.verdict_words(net | {"stable": True, "identifiable_layerwise": True})[0] == "identifiable and stable"
    assert explain.verdict_words(net | {"identifiable_network": False})[0].startswith("not identifiable")


def test_every_shown_metric_and_verdict_has_a_one_line_definition():
    for key in ("latent_error", "psnr_db", "signal_error", "observed_residual", "recovered", "status", "seconds"):
        assert key in explain.DEFINITIONS
    for key in ("identifiable_network", "noise_gain", "condition", "predicted_error", "oracle", "equations"):
        assert key in explain.DEFINITIONS
    assert all("\n" not in text and len(text) < 250 for text in explain.DEFINITIONS.values())


def test_support_maps_follow_each_pursuit_step_and_each_gd_frame(small):
    exp = session.Experiment(
        generator="random:6-24-96:seed=2",
        latent_seed=1,
        methods=("gd", "latent-pursuit"),
        options={"gd": {"n_iter": 200}},
    )
    out = demo.run(small, exp)
    lp = out.methods["latent-pursuit"]
    hidden = [s for s in lp.steps if s["layer"] > 0]
    assert hidden and all(s["map"].shape == (24,) for s in hidden)
    np.testing.assert_array_equal(hidden[-1]["map"], lp.layers[0]["map"])  # exact: the step found the support
    assert lp.steps[-1]["map"] is None  # z has no support
    frames = out.methods["gd"].history["frame_maps"]
    n_frames = len(out.methods["gd"].history["frame_iterations"])
    assert len(frames) == 1 and frames[0].shape == (n_frames, 24)
    assert set(np.unique(frames[0])) <= {0, 1, 2, 3}
    truth = out.true_supports[0]
    assert (frames[0][:, ~truth] != 1).all() and (frames[0][:, truth] != 3).all()  # codes agree with the truth


def test_npz_export_holds_every_array_and_loads_without_pickle(small):
    import io

    exp = session.Experiment(
        generator="random:6-24-96:seed=2",
        corruption=session.Corruption(mask="random", missing=0.25, noise="sigma", sigma=0.01),
        methods=("gd", "latent-pursuit"),
        options={"gd": {"n_iter": 100}},
    )
    out = demo.run(small, exp)
    data = np.load(io.BytesIO(out.to_npz()), allow_pickle=False)
    np.testing.assert_array_equal(data["truth/z"], out.z)
    np.testing.assert_array_equal(data["mask"], out.mask)
    np.testing.assert_array_equal(data["gd/history/loss"], out.methods["gd"].history["loss"])
    assert data["gd/history/iterates"].shape == (len(out.methods["gd"].history["iterations"]), 6)
    assert "latent-pursuit/step1_x1/estimate" in data and "oracle/z_hat" in data
    assert float(data["certificate/noise_gain"]) == pytest.approx(out.network["noise_gain"])


def test_batch_mode_gives_rates_with_intervals_and_error_distributions():
    G = geninv.Generator.random([8, 32, 128], seed=0)
    exp = session.Experiment(
        generator="random:8-32-128:seed=0",
        corruption=session.Corruption(mask="random", missing=0.5),
        methods=("latent-pursuit", "gd"),
        options={"gd": {"n_iter": 50, "restarts": 1}},
    )
    batch = demo.run_batch(G, exp, 12)
    rows = {r["method"]: r for r in batch.summary()}
    lp, gd = rows["latent-pursuit"], rows["gd"]
    assert lp["samples"] == 12 and lp["recovered"] == 12 and lp["success_rate"] == 1.0
    assert lp["success_low"] < 1.0 == lp["success_high"]  # 12 of 12 is not a certainty
    assert gd["success_low"] <= gd["success_rate"] <= gd["success_high"]
    assert lp["median_low"] <= lp["median_error"] <= lp["median_high"] < 1e-8
    assert batch.errors["gd"]["latent_error"].shape == (12,)
    assert batch.certificate_summary()["identifiable_network"] == 1.0
    assert "oracle" not in batch.errors  # clean
    with pytest.raises(GeninvError, match="digit"):
        demo.run_batch(G, session.Experiment(digit=0), 2)


def test_wilson_and_bootstrap_intervals():
    from geninv.metrics import bootstrap_interval, wilson_interval

    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0] < high - low  # more trials, tighter
    values = np.r_[np.ones(50), 100.0]
    assert bootstrap_interval(values) == (1.0, 1.0)  # the median ignores the outlier
    assert np.isnan(bootstrap_interval([np.nan])[0])
    with pytest.raises(GeninvError):
        wilson_interval(11, 10)


def test_batches_and_oracles_are_in_the_budget():
    from geninv.limits import Budget

    exp = session.Experiment(corruption=session.Corruption(noise="sigma", sigma=0.01))
    one = Budget().check_experiment(exp)
    assert "oracle" in one.parts
    many = Budget().check_experiment(exp, batch=20)
    assert many.total == pytest.approx(20 * one.total, rel=1e-9)
    with pytest.raises(geninv.BudgetError, match="max_batch"):
        Budget(max_batch=10).check_experiment(exp, batch=20)
