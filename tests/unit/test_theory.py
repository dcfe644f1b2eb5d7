import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import geninv
from geninv import theory


def _brute_spark(m: np.ndarray) -> float:
    n = m.shape[1]
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            if np.linalg.matrix_rank(m[:, cols]) < k:
                return k
    return math.inf


def _brute_coherence(m: np.ndarray) -> float:
    best = 0.0
    for j, k in itertools.combinations(range(m.shape[1]), 2):
        a, b = m[:, j], m[:, k]
        best = max(best, abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return best


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(2, 7), seed=st.integers(0, 10_000), dup=st.booleans())
def test_coherence_spark_rank_against_brute_force(rows, cols, seed, dup):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(rows, cols))
    if dup:
        m[:, -1] = 2.0 * m[:, 0]  # a dependent pair: spark 2
    assert math.isclose(float(theory.mutual_coherence(m)), _brute_coherence(m), rel_tol=1e-9)
    assert theory.spark(m) == _brute_spark(m)
    assert theory.matrix_rank(m) == np.linalg.matrix_rank(m)
    assert float(theory.spark_lower_bound(m)) <= _brute_spark(m) + 1e-9


def test_spark_budget_gives_none():
    m = np.random.default_rng(0).normal(size=(10, 12))
    assert theory.spark(m, max_subsets=10) is None
    assert theory.spark(m) == 11  # generic: any 11 columns in R^10 are dependent, no 10 are


def test_zero_column_has_spark_one():
    m = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert theory.spark(m) == 1 and float(theory.spark_lower_bound(m)) == 1.0


def test_hand_built_unique_and_failing_cases():
    # Unique: an identity-like first layer and an expansive orthogonal second layer.
    w1 = np.vstack([np.eye(2), -np.eye(2)])  # relu keeps z's positive and negative parts
    w2 = np.vstack([np.eye(4), np.eye(4)])
    G = geninv.Generator.from_weights([w1, w2], hidden="relu", output="identity", dtype=torch.float64)
    cert = geninv.certify(G, torch.tensor([[1.0, -2.0]], dtype=torch.float64))
    assert list(cert.paper_unique) == ["holds"] and bool(cert.identifiable[0])
    # Provably not unique: two hidden units are the same function of z, so their duplicated columns
    # in W_2 are dependent (spark 2 <= 2 s).
    w1 = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    w2 = np.array([[1.0, 1.0, 0.0], [2.0, 2.0, 1.0]])
    G = geninv.Generator.from_weights([w1, w2], hidden="relu", output="identity", dtype=torch.float64)
    cert = geninv.certify(G, torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    last = cert.layers[0]
    assert last.spark[0] == 2 and last.paper_unique[0] == "fails" and not last.identifiable[0]
    assert not cert.identifiable[0]


def test_random_expansive_generator_certified_on_most_samples():
    G = geninv.Generator.random([20, 80, 320], seed=0)
    cert = geninv.certify(G, G.sample_latent(50, seed=1))
    assert cert.identifiable.mean() >= 0.9
    summary = cert.summary()
    assert summary[-1]["layer"] == "all" and summary[-1]["identifiable"] >= 0.9
    assert {"paper_unique_holds", "lbp_guaranteed", "coherence_median"} <= set(summary[0])


def test_non_expansive_generator_certified_on_none():
    G = geninv.Generator.random([20, 20, 20], seed=0)
    cert = geninv.certify(G, G.sample_latent(50, seed=1))
    assert cert.identifiable.sum() == 0
    assert (cert.paper_unique == "holds").sum() == 0


def test_mask_reduces_rows_and_records_are_json_friendly():
    import json

    G = geninv.Generator.random([20, 128, 392, 784], seed=0)
    z = G.sample_latent(4, seed=1)
    m = geninv.masks.random_pixels(784, 0.6, seed=2)
    clean, masked = geninv.certify(G, z), geninv.certify(G, z, mask=m)
    assert (clean.layers[0].rows == 784).all() and (masked.layers[0].rows == 314).all()
    assert masked.identifiable.all()  # 60% missing: identifiable although rows < unknowns
    assert (masked.layers[0].rows < masked.layers[0].unknowns).all()
    json.dumps(masked.to_records())


def test_sigmoid_saturation_removes_rows():
    G = geninv.Generator.random([4, 30, 60], seed=0, output="sigmoid")
    z = 40 * G.sample_latent(3, seed=0)  # huge latents saturate the output
    cert = geninv.certify(G, z)
    assert (cert.layers[0].rows < 60).all()
    with pytest.raises(ValueError, match="'noise_sigma'"):
        geninv.certify(G, z, noise_sigma=-1.0)
