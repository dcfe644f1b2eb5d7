"""A shared link is untrusted: every value is used exactly as written or refused, naming it, cheaply."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geninv
from geninv import session
from geninv.errors import BudgetError, GeninvError

NESTED = "[" * 5000 + "]" * 5000
INJECTION = "![x](https://host/p.png) [Click here](https://host)"

# (query, a fragment the message must contain: the parameter or the limit)
HOSTILE_LINKS = [
    ({"gen": "random:20-31623-31623", "methods": "latent-pursuit"}, "max_width"),
    ({"gen": "random:20-1000000-1000000"}, "hard limit 'max_parameters'"),
    ({"gen": "random:20-20000-20000", "methods": "lp"}, "max_width"),
    ({"gen": "random:" + "-".join(["20"] * 10)}, "max_layers"),
    ({"gen": "random:" + "-".join(["2"] * 50_000)}, "'gen'"),
    ({"options": '{"gd":{"n_iter":1000000000,"tol":0,"restarts":64}}'}, "max_iterations"),
    ({"options": '{"gd":{"restarts":5000,"record_every":1}}'}, "max_restarts"),
    ({"options": '{"gd":{"n_iter":50000,"restarts":32,"record_every":1}}'}, "max_history_mb"),
    ({"gen": "random:20-500-2000-784", "options": '{"gd":{"n_iter":50000,"restarts":32}}'}, "max_cost"),
    ({"methods": "gd,gd"}, "'methods'"),
    ({"methods": "gd,,latent-pursuit"}, "'methods'"),
    ({"methods": "gd,latent-pursuit,"}, "'methods'"),
    ({"mask": "random", "missing": "0.99"}, "'missing'"),
    ({"noise": "snr", "level": "-40"}, "'level'"),
    ({"noise": "snr", "level": "5000"}, "'level'"),
    ({"noise": "sigma", "level": "1e300"}, "'level'"),
    ({"noise": "sigma", "level": "nan"}, "'level'"),
    ({"methods": "latent-pursuit", "options": '{"latent-pursuit":{"inequalities":1}}'}, "'inequalities'"),
    ({"z": "\u00b2"}, "'z'"),  # a superscript digit
    ({"z": "\u0663"}, "'z'"),  # an Arabic-Indic digit, which int() would take
    ({"seed": " 3"}, "'seed'"),
    ({"gen": "random:20-40:seed=\u00b2"}, "seed="),
    ({"options": NESTED}, "'options'"),
    ({"options": '{"gd":{"n_iter":' + "9" * 5000 + "}}"}, "'options'"),
    ({"z": "1e20"}, "'z'"),
    ({"z": "100000000000000000000"}, "'z'"),
    ({"z": "1000001"}, "'z'"),
    ({"seed": "1000001"}, "'seed'"),
    ({"gen": "random:20-40:seed=1000001"}, "gen seed"),
    ({"mask": "box", "box": "100,100,5,5"}, "'box'"),
    ({"mask": "box", "box": "20,20,10,10"}, "'box'"),
    ({"mask": "box", "box": "0,0,0,5"}, "'box'"),
    ({"mask": "box", "box": "1,2,3"}, "'box'"),
    ({"gen": "random:-5-10"}, "Widths"),
    ({"gen": "random:5--10"}, "Widths"),
    ({"gen": "random:5-10:bias=yes"}, "bias=yes"),
    ({"gen": "random:5-10:seed=1:seed=2"}, "twice"),
    ({"gen": "random:5-10:hidden=leaky-relu"}, "gen hidden"),
    ({"gen": INJECTION}, "Unknown generator spec"),
    ({"mask": "half", "mask_seed": "3"}, "'mask_seed'"),
    ({"level": "0.1"}, "'level'"),
    ({"missing": "0.3"}, "'missing'"),
    ({"utm_source": "mail"}, "unknown key"),
    ({"z": ["1", "2"]}, "'z'"),
    ({"methods": "gd", "options": '{"lp":{"inequalities":false}}'}, "'options'"),
    ({"methods": "plugin", "options": '{"plugin":{"eta":0.1}}'}, "eta"),
    ({"options": '{"gd":{"optimizer":"sgd"}}'}, "optimizer"),
    ({"options": '{"gd":{"lr":[1]}}'}, "'lr'"),
    ({"options": '["gd"]'}, "'options'"),
    ({"custom": "x" * 30_000, "mask": "custom"}, "'custom'"),
    ({"mask": "custom", "custom": session.pack_mask(np.ones(10, bool))}, "'custom'"),  # 10 pixels, not 784
    ({"gen": "random:6-24-96", "mask": "half"}, "non-image output"),
    ({"mask": "box", "box": "0,0,28,28"}, "hides every coordinate"),
    ({"meas": "blur:sigma=1:stride=2"}, "'meas'"),  # a real operator, not one the dashboard offers
    ({"meas": "subsample:100"}, "'meas'"),
    ({"meas": "wavelet:100"}, "'meas'"),
    ({"meas": "gaussian"}, "'meas'"),
    ({"meas": "gaussian:0"}, "'meas'"),
    ({"meas": "gaussian:-3"}, "'meas'"),
    ({"meas": "gaussian:785"}, "at most 784 measurements"),
    ({"meas": "gaussian:999999999"}, "'meas'"),  # refused from the text, before any matrix is drawn
    ({"meas": "gaussian:\u0663\u0660"}, "'meas'"),
    ({"meas": "gaussian:100:seed=1:seed=2"}, "'meas'"),
    ({"meas": "gaussian:100:seed=1000001"}, "'meas seed'"),
    ({"meas": "gaussian:100:sigma=2"}, "'meas'"),
    ({"meas": " gaussian:100"}, "'meas'"),
    ({"meas": "dct:100", "mask": "half"}, "replaces the pixel mask"),
    ({"meas": "dct:100", "missing": "0.3"}, "'missing'"),
    ({"gen": "random:6-24-96", "meas": "dct:50"}, "the DCT needs an image"),
    ({"gen": "random:6-24-96", "meas": "gaussian:97"}, "at most 96 measurements"),
    ({"meas": INJECTION}, "'meas'"),
]


@pytest.mark.parametrize("query, names", HOSTILE_LINKS, ids=range(len(HOSTILE_LINKS)))
def test_hostile_link_is_refused_naming_it_before_anything_is_built(query, names, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("a generator was built for a refused link")

    monkeypatch.setattr(geninv.Generator, "__init__", no_build)
    tracemalloc.start()
    try:
        with pytest.raises(GeninvError) as info:
            session.Experiment.from_query({"gen": "mnist"} | query)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert names in message
    assert len(message) < 700 and "\n" not in message
    assert peak < 2_000_000  # bytes: a refusal parses, it does not allocate


def test_refusals_past_the_budget_are_budget_errors_with_the_setting():
    with pytest.raises(BudgetError, match="GENINV_BUDGET='max_width=...'"):
        session.Experiment.from_query({"gen": "random:20-31623-31623"})


def test_a_lab_budget_accepts_what_the_default_refuses():
    query = {"gen": "random:20-9000-20", "methods": "latent-pursuit"}
    with pytest.raises(BudgetError):
        session.Experiment.from_query(query)
    exp = session.Experiment.from_query(query, limits=geninv.limits.Budget(max_width=10_000))
    assert exp.generator == "random:20-9000-20"


@pytest.mark.parametrize(
    "query",
    [
        {"gen": "mnist", "z": "3", "mask": "half", "half": "left", "methods": "gd,latent-pursuit"},
        {"gen": "mnist", "mask": "half", "mask_seed": "0"},  # a link from an earlier version: harmless default
        {"gen": "random:10-40-160:seed=3", "mask": "random", "missing": "0.123456789", "mask_seed": "7"},
        {"gen": "random:10-40-160", "noise": "sigma", "level": "0.0123456789", "noise_seed": "1000000"},
        {"gen": "mnist", "noise": "snr", "level": "27.5"},
        {"gen": "mnist", "mask": "box", "box": "0,0,27,28"},
        {"gen": "mnist", "methods": "gd", "options": '{"gd":{"n_iter":300,"lr":1,"optimizer":"momentum"}}'},
        {"gen": "mnist", "z": "007"},
        {"gen": "mnist", "meas": "gaussian:100:seed=1", "methods": "hybrid"},
        {"gen": "mnist-conv", "meas": "dct:200", "noise": "sigma", "level": "0.01"},
        {"gen": "random:10-40-160", "meas": "gaussian:160:seed=1000000"},
    ],
)
def test_good_links_keep_every_value_exactly(query):
    exp = session.Experiment.from_query(query)
    again = exp.to_query()
    assert session.Experiment.from_query(again) == exp
    _assert_same_values(query, exp)


def _assert_same_values(query, exp):
    """Every value the link gave is the one the experiment uses (no substitute)."""
    c = exp.corruption
    used = {
        "gen": exp.generator,
        "z": exp.latent_seed,
        "seed": exp.seed,
        "methods": list(exp.methods),
        "mask": c.mask,
        "noise": c.noise,
        "missing": c.missing,
        "mask_seed": c.mask_seed,
        "box": list(c.box),
        "half": c.half,
        "custom": c.custom,
        "noise_seed": c.noise_seed,
        "level": c.sigma if c.noise == "sigma" else c.snr_db,
        "meas": c.measurements,
    }
    for key, text in query.items():
        text = text[-1] if isinstance(text, list) else text
        if key == "options":
            for method, opts in json.loads(text).items():
                make = geninv.inversion.registry.make_config
                assert make(method, **exp.options.get(method, {})) == make(method, **opts)
        elif key == "methods":
            assert used[key] == text.split(",")
        elif key == "box":
            assert used[key] == [int(v) for v in text.split(",")]
        elif key in ("z", "seed", "mask_seed", "noise_seed"):
            assert used[key] == int(text)
        elif key in ("missing", "level"):
            assert used[key] == float(text)
        elif key == "meas":  # stored in its canonical spelling: the same operator
            assert geninv.operators.parse_spec(used[key]) == geninv.operators.parse_spec(text)
        else:
            assert used[key] == text


# ----------------------------------------------------------------------------- property: any link at all
_DIGITS = st.integers(0, 2_000_000).map(str)
_JUNK = st.text(max_size=12)
_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.decimals(-100, 100).map(str))
_VALUES = {
    "gen": st.one_of(
        st.sampled_from(["mnist", "random:6-24-96", "random:4-16-48:seed=3:bias", "random:6-24-96:output=sigmoid"]),
        st.builds(lambda ws: "random:" + "-".join(map(str, ws)), st.lists(st.integers(-3, 40_000), max_size=5)),
        _JUNK,
    ),
    "z": st.one_of(_DIGITS, _JUNK),
    "seed": st.one_of(_DIGITS, _JUNK),
    "methods": st.one_of(
        st.lists(st.sampled_from([*geninv.methods(), "warp", ""]), min_size=1, max_size=4).map(",".join), _JUNK
    ),
    "mask": st.one_of(st.sampled_from(session.MASKS), _JUNK),
    "mask_seed": st.one_of(_DIGITS, _JUNK),
    "missing": st.one_of(_FLOATS, _JUNK),
    "box": st.one_of(st.lists(st.integers(-2, 40), min_size=3, max_size=5).map(lambda v: ",".join(map(str, v))), _JUNK),
    "half": st.one_of(st.sampled_from(session.HALVES), _JUNK),
    "custom": st.one_of(st.just(session.pack_mask(np.arange(784) % 3 > 0)), _JUNK),
    "noise": st.one_of(st.sampled_from(session.NOISES), _JUNK),
    "noise_seed": st.one_of(_DIGITS, _JUNK),
    "level": st.one_of(_FLOATS, _JUNK),
    "meas": st.one_of(
        st.builds(
            lambda kind, m, seed: f"{kind}:{m}" + ("" if seed is None else f":seed={seed}"),
            st.sampled_from(["gaussian", "dct", "subsample", "blur", ""]),
            st.integers(-2, 2000),
            st.one_of(st.none(), st.integers(0, 2_000_000)),
        ),
        _JUNK,
    ),
    "options": st.one_of(
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(), st.text(max_size=8)),
            lambda inner: st.one_of(
                st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
            ),
            max_leaves=8,
        ).map(json.dumps),
        st.fixed_dictionaries(
            {
                "gd": st.dictionaries(
                    st.sampled_from(["n_iter", "lr", "restarts", "tol", "optimizer"]), st.integers(-5, 10**6)
                )
            }
        ).map(json.dumps),
        _JUNK,
    ),
}


@st.composite
def _links(draw):
    keys = draw(st.lists(st.sampled_from(list(_VALUES)), unique=True, max_size=8))
    query = {key: draw(_VALUES[key]) for key in keys}
    if draw(st.booleans()):
        query[draw(st.text(min_size=1, max_size=6))] = draw(_JUNK)
    return query


@given(_links())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_link_is_refused_with_a_geninv_error_or_used_exactly(query):
    try:
        exp = session.Experiment.from_query(query)
    except GeninvError as exc:
        assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 700
        return
    assert session.Experiment.from_query(exp.to_query()) == exp
    _assert_same_values({k: v for k, v in query.items() if _applies(k, exp)}, exp)


def _applies(key: str, exp: session.Experiment) -> bool:
    """Keys the experiment uses (a harmless default for an unused one is accepted, not used)."""
    c = exp.corruption
    used = {"random": {"missing", "mask_seed"}, "box": {"box"}, "half": {"half"}, "custom": {"custom"}}.get(
        c.mask, set()
    )
    used |= {"level", "noise_seed"} if c.noise != "none" else set()
    return key in used or key in ("gen", "z", "seed", "methods", "mask", "noise", "options", "meas")


def test_floats_keep_their_exact_value_through_the_link():
    for x in (0.1, 1 / 3, 0.123456789012345, 5e-324, 0.95):
        c = session.Corruption(mask="random", missing=x)
        query = session.Experiment(corruption=c).to_query()
        assert float(query["missing"]) == x and session.Experiment.from_query(query).corruption.missing == x
    assert not math.isnan(session.Experiment.from_query({"noise": "sigma", "level": "0"}).corruption.sigma)
