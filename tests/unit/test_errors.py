"""Every bad input raises a GeninvError subclass naming the argument."""

import numpy as np
import pytest
import torch

import geninv
from geninv import Generator


@pytest.fixture
def G():
    return Generator.random([4, 12, 30], seed=0)


def test_fewer_than_two_widths():
    with pytest.raises(geninv.ShapeError, match="'widths'.*at least two"):
        Generator.random([20], seed=0)


def test_widths_must_be_positive_integers():
    with pytest.raises(geninv.InvalidValueError, match=r"'widths\[1\]'"):
        Generator.random([20, 0], seed=0)
    with pytest.raises(geninv.ShapeError, match="'widths'"):
        Generator.random("20-40", seed=0)


def test_unknown_activation():
    with pytest.raises(geninv.InvalidValueError, match="'activation'.*'softplus'"):
        Generator.random([2, 4], seed=0, output="softplus")
    with pytest.raises(geninv.InvalidValueError, match="'hidden'"):
        Generator.random([2, 4, 8], seed=0, hidden="tanh")


def test_weights_chain_must_connect():
    with pytest.raises(geninv.ShapeError, match=r"'weights\[1\]'.*\(n_out, 5\)"):
        Generator.from_weights([np.ones((5, 3)), np.ones((4, 6))])


def test_nan_weights():
    w = np.ones((5, 3))
    w[0, 0] = np.nan
    with pytest.raises(geninv.InvalidValueError, match=r"'weights\[0\]'.*finite"):
        Generator.from_weights([w])


def test_latent_shape_dtype_and_nan(G):
    with pytest.raises(geninv.ShapeError, match="'z'.*\\(B, 4\\)"):
        G.trace(torch.zeros(2, 5))
    with pytest.raises(geninv.ShapeError, match="'z'"):
        G.trace(torch.zeros(2, 4, 1))
    with pytest.raises(geninv.InvalidValueError, match="'z'.*finite"):
        G.trace(torch.tensor([[np.nan, 0, 0, 0]]))
    with pytest.raises(geninv.InvalidValueError, match="'z'.*real numbers"):
        G.trace(torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError):  # also a ValueError
        G.trace(torch.zeros(2, 5))


def test_masks(G):
    z = G.sample_latent(2, seed=0)
    with pytest.raises(geninv.InvalidMaskError, match="hides every coordinate"):
        geninv.observe(G, z, mask=np.zeros(30, dtype=bool))
    with pytest.raises(geninv.InvalidMaskError, match="of size 30"):
        geninv.observe(G, z, mask=np.ones(31, dtype=bool))
    with pytest.raises(geninv.InvalidMaskError, match="0/1"):
        geninv.masks.from_array(np.full(30, 0.5))
    with pytest.raises(geninv.InvalidValueError, match="'missing'"):
        geninv.masks.random_pixels(30, 1.0)


def test_negative_sigma_and_both_noise_options(G):
    z = G.sample_latent(2, seed=0)
    with pytest.raises(geninv.InvalidValueError, match="'noise_sigma'.*\\[0, inf\\)"):
        geninv.observe(G, z, noise_sigma=-0.1)
    with pytest.raises(geninv.InvalidValueError, match="'snr_db'"):
        geninv.observe(G, z, noise_sigma=0.1, snr_db=10)


def test_invert_bad_method_and_options(G):
    obs = geninv.observe(G, G.sample_latent(2, seed=0))
    with pytest.raises(geninv.InvalidValueError, match="'method'.*'gd'"):
        geninv.invert(G, obs, method="magic")
    with pytest.raises(geninv.InvalidValueError, match="Unknown option.*'learning_rate'.*gd"):
        geninv.invert(G, obs, method="gd", learning_rate=0.1)
    with pytest.raises(geninv.InvalidValueError, match="'lr'.*\\(0, inf\\)"):
        geninv.invert(G, obs, method="gd", lr=-1.0)
    with pytest.raises(geninv.InvalidValueError, match="'observation'"):
        geninv.invert(G, obs.y, method="gd")


# ----------------------------------------------------------------------------- inputs a caller got wrong
def test_invert_checks_the_observation_against_the_generator(G):
    from geninv.observation import Observation

    obs = geninv.observe(G, G.sample_latent(2, seed=0))
    other = geninv.Generator.random([4, 12, 31], seed=0)
    with pytest.raises(geninv.ShapeError, match="'observation.operator'.*31 outputs"):
        geninv.invert(other, obs, method="latent-pursuit")
    empty = Observation(y=obs.y[:0], operator=obs.operator, noise_sigma=obs.noise_sigma[:0])
    with pytest.raises(geninv.ShapeError, match="'observation.y'.*at least one signal"):
        geninv.invert(G, empty, method="gd")
    nan = Observation(y=obs.y.clone().fill_(float("nan")), operator=obs.operator, noise_sigma=obs.noise_sigma)
    with pytest.raises(geninv.InvalidValueError, match="'observation.y'.*finite"):
        geninv.invert(G, nan, method="lbp")
    huge = Observation(y=obs.y * 1e300, operator=obs.operator, noise_sigma=obs.noise_sigma)
    with pytest.raises(geninv.InvalidValueError, match="finite squared norm"):
        geninv.invert(G, huge, method="gd")
    single = Observation(y=obs.y.float(), operator=obs.operator, noise_sigma=obs.noise_sigma)
    with pytest.raises(geninv.InvalidValueError, match="'observation.y'.*dtype torch.float64"):
        geninv.invert(G, single, method="gd")
    elsewhere = Observation(y=obs.y.to("meta"), operator=obs.operator, noise_sigma=obs.noise_sigma)
    with pytest.raises(geninv.InvalidValueError, match="on the generator's device cpu. Got 'a tensor on meta'"):
        geninv.invert(G, elsewhere, method="gd")  # the meta device stands in for a GPU on a CPU-only machine
    wrong_truth = Observation(y=obs.y, operator=obs.operator, noise_sigma=obs.noise_sigma, z_true=obs.z_true[:, :3])
    with pytest.raises(geninv.ShapeError, match="'observation.z_true'"):
        geninv.invert(G, wrong_truth, method="gd")
    negative = Observation(y=obs.y, operator=obs.operator, noise_sigma=-obs.noise_sigma - 1)
    with pytest.raises(geninv.InvalidValueError, match="'observation.noise_sigma'"):
        geninv.invert(G, negative, method="gd")


def test_invert_refuses_a_method_that_is_not_a_name_and_seeds_past_torchs_range(G):
    obs = geninv.observe(G, G.sample_latent(1, seed=0))
    with pytest.raises(geninv.InvalidValueError, match="'method'"):
        geninv.invert(G, obs, method=["gd"])
    with pytest.raises(geninv.InvalidValueError, match="'seed'"):
        geninv.invert(G, obs, method="latent-pursuit", seed=2**64)
    assert geninv.invert(G, obs, method="gd", seed=2**64 - 1, n_iter=5).z_hat.shape == (1, 4)


@pytest.mark.parametrize("dtype", [torch.int8, torch.float16, torch.bfloat16, torch.complex64])
def test_generator_dtypes_other_than_float32_and_float64_are_refused(dtype):
    with pytest.raises(geninv.InvalidValueError, match="'dtype'.*float32 or torch.float64"):
        Generator.random([4, 8], seed=0, dtype=dtype)
    with pytest.raises(geninv.InvalidValueError, match="'dtype'"):
        Generator.from_weights([torch.ones(8, 4, dtype=torch.float16)])


@pytest.mark.parametrize("method", ["latent-pursuit", "lp"])
def test_bool_options_of_layerwise_methods_raise_a_geninv_error(G, method):
    obs = geninv.observe(G, G.sample_latent(1, seed=0))
    with pytest.raises(geninv.InvalidValueError, match="'inequalities' parameter must be a bool. Got 1"):
        geninv.invert(G, obs, method=method, inequalities=1)


def test_demo_experiments_refuse_repeats_and_options_of_methods_not_run():
    from geninv import session

    with pytest.raises(geninv.InvalidValueError, match="'methods'.*gd more than once"):
        session.Experiment(methods=("gd", "gd"))
    with pytest.raises(geninv.InvalidValueError, match="'options'"):
        session.Experiment(methods=("gd",), options={"lp": {"inequalities": False}})
    with pytest.raises(geninv.InvalidValueError, match="'options\\['gd'\\]\\['n_iter'\\]'"):
        session.Experiment(methods=("gd",), options={"gd": {"n_iter": [300]}})
    with pytest.raises(geninv.InvalidValueError, match="'latent_seed'"):
        session.Experiment(latent_seed=2**64)
    same = session.Experiment(methods=("gd",), options={"gd": {"n_iter": 8000, "lr": 1}})
    assert same.options == {"gd": {"lr": 1.0}}  # the default dropped, an int read as the float it means
