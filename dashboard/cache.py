"""Caching over geninv's API: generators (one per spec or upload, shared) and runs (per session)."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

import numpy as np
import streamlit as st

from geninv import certify, demo, digits, io, limits, masks, session

MAX_RUNS = 8


@st.cache_resource(max_entries=4, show_spinner="Loading the generator…")
def generator(spec: str):
    """The generator a spec names, in float64 (exact inversion needs it); never one past the server's budget."""
    limits.budget().check_spec(spec)
    return io.generator_from_spec(spec).double()


@st.cache_resource(max_entries=4, show_spinner="Checking the uploaded model…")
def uploaded_generator(digest: str, _arch: bytes, _weights: bytes):
    """An uploaded model (validated by geninv.io, its size by the budget before the weights are read);
    ``digest`` keys the cache (the files are not hashed again)."""
    return io.load_generator_bytes(_arch, _weights, limits=limits.budget()).double()


def digest(*blobs: bytes) -> str:
    h = hashlib.sha1()
    for b in blobs:
        h.update(hashlib.sha1(b).digest())
    return h.hexdigest()[:12]


@st.cache_data(max_entries=64, show_spinner=False)
def sample(_generator, generator_key: str, latent_seed: int):
    """The clean output G(z) of the sample with this seed, as numpy."""
    z = _generator.sample_latent(1, seed=latent_seed)
    return _generator.generate(z)[0].detach().cpu().double().numpy()


@st.cache_data(max_entries=32, show_spinner=False)
def measurements_preview(_generator, generator_key: str, spec: str, x: np.ndarray):
    """``(y, A^T y)``: the noise-free measurements of ``x`` under a measurement spec and their back-projection."""
    return demo.preview_measurements(_generator, spec, x)


def digit_image(k: int):
    """A shipped real MNIST digit (784 values in [0, 1])."""
    return digits.digit(k)


def run(generator_obj, generator_key: str, experiment: session.Experiment, progress=None) -> demo.Outcome:
    """Run an experiment, or give back this session's stored outcome of the same one."""
    store: OrderedDict[str, Any] = st.session_state.setdefault("_runs", OrderedDict())
    key = generator_key + json.dumps(experiment.to_query(), sort_keys=True)
    if key in store:
        store.move_to_end(key)
        return store[key]
    outcome = demo.run(generator_obj, experiment, progress=progress)
    store[key] = outcome
    while len(store) > MAX_RUNS:
        store.popitem(last=False)
    return outcome


@st.cache_data(max_entries=32, show_spinner=False)
def certificate_summary(
    spec: str, samples: int, missing: float, seed: int = 0, sigma: float = 0.0
) -> list[dict[str, Any]]:
    """Certificate summary of ``samples`` latents of a generator spec, with a random mask and noise level
    ``sigma``; the "all" row adds the median predicted oracle error at ``sigma``."""
    g = generator(spec)
    mask = masks.random_pixels(g.output_dim, missing, seed=seed) if missing > 0 else None
    cert = certify(g, g.sample_latent(samples, seed=seed), mask=mask, noise_sigma=sigma, spark_budget=200)
    rows = cert.summary()
    rows[-1]["predicted_error_median"] = float(np.median(cert.predicted_error(sigma)))
    rows[-1]["observed"] = int(g.output_dim if mask is None else mask.sum())
    return rows


@st.cache_data(max_entries=16, show_spinner=False)
def expansion_curve(ratios: tuple[float, ...], samples: int, seed: int = 0) -> list[dict[str, Any]]:
    """Per expansion ratio r: fractions of samples for which each verdict holds at every step."""
    rows = []
    for r in ratios:
        widths = "-".join(str(round(20 * r**k)) for k in range(4))
        summary = certificate_summary(f"random:{widths}:seed={seed}", samples, 0.0, seed)
        overall = next(s for s in summary if s["layer"] == "all")
        rows.append({"ratio": r, "widths": widths} | overall)
    return rows
