"""Independent random streams: whatever integers a user picks, no two purposes share a draw."""

import pytest
import torch

import geninv
from geninv._random import PURPOSES, derive, torch_generator
from geninv.inversion.gradient import GradientDescentConfig, _initial
from geninv.sweeps import SweepConfig, run_sweep


@pytest.mark.parametrize("k", [0, 1, 7, 123])
def test_latent_seed_k_and_run_seed_k_start_gd_far_from_z(k):
    G = geninv.Generator.random([20, 60, 180], seed=k)
    z = G.sample_latent(4, seed=k)
    obs = geninv.observe(G, z)
    start = _initial(G, obs, GradientDescentConfig(restarts=3), seed=k).reshape(4, 3, 20)
    dist = (start - z.unsqueeze(1)).norm(dim=-1) / z.norm(dim=-1, keepdim=True)
    assert float(dist.min()) > 0.3, dist


@pytest.mark.parametrize("k", [0, 3])
def test_latent_not_aligned_with_weights_of_the_same_seed(k):
    G = geninv.Generator.random([20, 60, 180], seed=k)
    z = G.sample_latent(1, seed=k)[0]
    w = G.weight(0)
    cos = (w @ z).abs() / (w.norm(dim=1) * z.norm())
    assert float(cos.max()) < 0.9


def test_every_purpose_gives_a_different_stream():
    draws = {p: torch.randn(8, generator=torch_generator(5, p)) for p in PURPOSES}
    values = list(draws.values())
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert not torch.allclose(values[i], values[j])
    assert len({derive(5, p) for p in PURPOSES}) == len(PURPOSES)
    assert derive(5, "latent") == derive(5, "latent")  # reproducible


def test_huge_seeds_work_and_stay_distinct():
    a, b = derive(2**70, "latent"), derive(2**70 + 1, "latent")
    assert a != b and 0 <= a < 2**63
    with pytest.raises(geninv.InvalidValueError, match="'seed'"):
        derive(-1, "latent")


def test_sweep_trial_zero_does_not_start_at_the_truth():
    config = SweepConfig(
        generator="random:10-40-160",
        variable="missing",
        values=(0.0,),
        methods=("gd",),
        trials=4,
        method_options={"gd": {"n_iter": 1, "restarts": 1}},
    )
    records = run_sweep(config)
    assert min(r["latent_error"] for r in records) > 0.1
