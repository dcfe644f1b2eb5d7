"""The shipped real MNIST digits and their projections onto the MNIST generator's range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import geninv
from geninv import demo, digits, session
from geninv.errors import GeninvError


def test_the_shipped_digits_load_from_the_package_and_are_credited():
    d = digits.load_digits()
    assert len(d) == digits.count() == 40
    assert d.images.shape == (40, 784) and d.images.min() >= 0 and d.images.max() <= 1
    assert sorted(np.bincount(d.labels).tolist()) == [4] * 10  # four of each class
    assert np.all(np.diff(d.indices) > 0)  # the first ones of the test set, in file order
    assert not d.images.flags.writeable
    assert "LeCun" in digits.CREDIT and "CC BY-SA 3.0" in digits.CREDIT
    assert d.describe(0).startswith(f"a {d.labels[0]} (MNIST test digit #")
    with pytest.raises(GeninvError, match="digit"):
        digits.digit(40)


def test_stored_projections_belong_to_the_shipped_weights_and_are_not_in_the_range():
    d = digits.load_digits()
    assert d.generator_sha256 == digits.shipped_sha256("mnist")  # rewrite them when the weights change
    assert digits.stored_projection(0, "random:20-128-392-784") is None
    G = geninv.load_generator("mnist").double()
    with torch.no_grad():
        fit = G(torch.as_tensor(np.array(d.projections)))
    x = torch.as_tensor(np.array(d.images))
    error = ((fit - x).norm(dim=1) / x.norm(dim=1)).numpy()
    assert np.all(error > 0.05) and np.all(error < 0.6)  # a real digit is never an output exactly


@pytest.mark.slow
def test_a_fresh_projection_does_not_beat_the_stored_one():
    G = geninv.load_generator("mnist").double()
    d = digits.load_digits()
    k = [0, 5]
    x = torch.as_tensor(np.array(d.images[k]))
    with torch.no_grad():
        fresh = (G(digits.project(G, x, seed=1)) - x).norm(dim=1)
        stored = (G(torch.as_tensor(np.array(d.projections[k]))) - x).norm(dim=1)
    assert torch.all(stored <= fresh * 1.01)


def test_a_digit_experiment_measures_the_digit_against_its_projection():
    G = geninv.load_generator("mnist").double()
    exp = session.Experiment(digit=2, corruption=session.Corruption(mask="half"), methods=("latent-pursuit",))
    assert session.Experiment.from_query(exp.to_query()) == exp
    assert exp.to_query()["digit"] == "2" and "z" not in exp.to_query()
    obs = exp.observation(G)
    x = digits.digit(2)
    np.testing.assert_allclose(obs.y[0].numpy(), x[obs.mask])  # the digit itself, half of it
    np.testing.assert_allclose(obs.z_true[0].numpy(), digits.load_digits().projections[2])
    out = demo.run(G, exp)
    assert out.digit["label"] == digits.load_digits().labels[2]
    np.testing.assert_allclose(out.x_true, x)
    assert 0.05 < out.digit["projection_error"] < 0.6
    row = out.table()[0]
    assert row["digit_error"] >= out.digit["projection_error"] * 0.5  # nothing fits the digit much better
    assert "oracle" not in out.methods  # a real digit has no true supports


@pytest.mark.parametrize(
    "query, name",
    [
        ({"gen": "mnist", "digit": "40"}, "digit"),
        ({"gen": "mnist", "digit": "3", "z": "1"}, "'z'"),
        ({"gen": "random:20-40-100", "digit": "3"}, "784"),
        ({"gen": "mnist", "digit": "-1"}, "digit"),
    ],
)
def test_bad_digit_links_are_refused(query, name):
    with pytest.raises(GeninvError, match=name):
        session.Experiment.from_query(query)
