"""geninv.demo: the shareable experiment spec and the plain-array outcome the dashboard shows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import geninv
from geninv import demo
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
    text = demo.pack_mask(mask)
    assert text.isascii() and "&" not in text and "=" not in text
    np.testing.assert_array_equal(demo.unpack_mask(text, mask.size), mask)


def test_unpack_mask_rejects_garbage_and_wrong_size():
    with pytest.raises(GeninvError, match="custom"):
        demo.unpack_mask("not a mask")
    with pytest.raises(GeninvError):
        demo.unpack_mask(demo.pack_mask(np.ones(10, bool)), 12)


@pytest.mark.parametrize(
    "experiment",
    [
        demo.Experiment(),
        demo.Experiment(
            generator="random:6-24-96:seed=4:bias:hidden=leaky_relu:output=sigmoid",
            latent_seed=7,
            corruption=demo.Corruption(mask="random", missing=0.35, mask_seed=3, noise="snr", snr_db=25, noise_seed=2),
            methods=("gd", "hybrid"),
            options={"gd": {"n_iter": 50, "optimizer": "momentum"}},
            seed=5,
        ),
        demo.Experiment(corruption=demo.Corruption(mask="box", box=(1, 2, 3, 4), noise="sigma", sigma=0.125)),
        demo.Experiment(corruption=demo.Corruption(mask="half", half="left")),
        demo.Experiment(corruption=demo.Corruption(mask="custom", custom=demo.pack_mask(np.arange(784) % 3 > 0))),
    ],
)
def test_experiment_round_trips_through_the_url_query(experiment):
    query = experiment.to_query()
    assert all(isinstance(v, str) for v in query.values())
    assert demo.Experiment.from_query(query) == experiment
    assert demo.Experiment.from_query({k: [v] for k, v in query.items()}) == experiment  # list-valued params


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
    ],
)
def test_bad_query_raises_an_error_naming_the_value(query, names):
    with pytest.raises(GeninvError, match=names):
        demo.Experiment.from_query(query)


def test_box_and_half_need_an_image_output():
    with pytest.raises(GeninvError, match="non-image"):
        demo.Corruption(mask="half").mask_array(96)
    assert demo.Corruption(mask="half").mask_array(100).sum() == 50


def test_mask_that_hides_everything_is_refused(small):
    exp = demo.Experiment(
        generator="random:6-24-96:seed=2",
        corruption=demo.Corruption(mask="custom", custom=demo.pack_mask(np.zeros(96, bool))),
    )
    with pytest.raises(GeninvError, match="observed"):
        exp.observation(small)


def test_run_gives_real_numbers_for_every_method(small):
    exp = demo.Experiment(
        generator="random:6-24-96:seed=2",
        latent_seed=1,
        corruption=demo.Corruption(mask="random", missing=0.3),
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
    restarts = demo.method_options("gd")[[o["name"] for o in demo.method_options("gd")].index("restarts")]["default"]
    assert h["loss"].shape == (len(h["iterations"]), restarts) and h["latent_error"].shape == h["loss"].shape
    assert h["frames"].shape == (len(h["frame_iterations"]), 96)
    assert h["frame_errors"][-1] == pytest.approx(gd.metrics["latent_error"], rel=1e-6)
    layers = out.layer_table()
    assert [r["layer"] for r in layers] == [1, 0] and "hybrid: precision" in layers[0]
    payload = json.loads(json.dumps(out.to_json()))
    assert payload["query"] == exp.to_query()
    assert payload["methods"]["hybrid"]["metrics"]["latent_error"] < 1e-8


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
    opts = {o["name"]: o for o in demo.method_options("gd")}
    assert opts["optimizer"]["choices"] == ("adam", "momentum") and opts["n_iter"]["kind"] == "int"
    assert "z_init" not in opts  # arrays are not form fields
    assert {o["name"] for o in demo.method_options("plugin")}.isdisjoint({"eta"})  # automatic step size
