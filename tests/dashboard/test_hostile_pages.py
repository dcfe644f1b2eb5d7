"""Every page, driven as a hostile visitor would: no traceback, no silent substitute, no heavy work."""

from __future__ import annotations

import json
import logging
import re
import stat
import struct
import zlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from geninv import demo, io, session

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "main.py")
TIMEOUT = 180


def _app(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _plain(markdown: str) -> str:
    """The text a visitor reads: the Markdown escapes (backslashes) removed."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _texts(elements) -> str:
    return " ".join(_plain(e.value) for e in elements)


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture
def built(monkeypatch):
    """The specs the dashboard asked geninv to build while the test ran."""
    specs: list[str] = []
    original = io.generator_from_spec

    def recording(spec, **kwargs):
        specs.append(spec)
        return original(spec, **kwargs)

    monkeypatch.setattr(io, "generator_from_spec", recording)
    return specs


HOSTILE = [
    ({"gen": "random:20-31623-31623", "methods": "latent-pursuit"}, "max_width"),
    ({"gen": "mnist", "options": '{"gd":{"n_iter":1000000000,"tol":0,"restarts":64}}'}, "max_iterations"),
    ({"gen": "mnist", "options": '{"gd":{"restarts":5000,"record_every":1}}'}, "max_restarts"),
    ({"gen": "mnist", "methods": "gd,gd"}, "methods"),
    ({"gen": "mnist", "mask": "random", "missing": "0.99"}, "missing"),
    ({"gen": "mnist", "noise": "snr", "level": "-40"}, "level"),
    ({"gen": "mnist", "noise": "sigma", "level": "1e300"}, "level"),
    ({"gen": "mnist", "methods": "latent-pursuit", "options": '{"latent-pursuit":{"inequalities":1}}'}, "inequalities"),
    ({"gen": "mnist", "z": "\u00b2"}, "z"),
    ({"gen": "mnist", "z": "1000001"}, "z"),
    ({"gen": "mnist", "seed": "99999999999999999999"}, "seed"),
    ({"gen": "mnist", "options": "[" * 3000 + "]" * 3000}, "options"),
    ({"gen": "mnist", "mask": "box", "box": "100,100,5,5"}, "box"),
    ({"gen": "random:-5-10"}, "Widths"),
    ({"gen": "random:20-40:seed=2000000"}, "gen seed"),
    ({"gen": "mnist", "meas": "gaussian:100000"}, "at most 784 measurements"),
    ({"gen": "mnist", "meas": "blur:sigma=1"}, "'meas'"),
    ({"gen": "mnist", "meas": "gaussian:0"}, "'meas'"),
    ({"gen": "mnist", "meas": "gaussian:100", "mask": "half"}, "replaces the pixel mask"),
    ({"gen": "mnist", "meas": "<script>alert(1)</script>"}, "'meas'"),
]


@pytest.mark.parametrize("query, name", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_link_shows_one_short_error_and_runs_nothing(query, name, built):
    at = _app(**query)
    _no_exception(at)
    errors = [_plain(e.value) for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("The link's experiment was not run") and name in errors[0]
    assert len(errors[0]) < 800
    assert "_last" not in at.session_state  # nothing ran
    assert not any(s.startswith("random:20-31623") or s.startswith("random:-5") for s in built)
    assert at.title[0].value == "Invert a generator"  # the page itself works on


def test_markdown_in_a_link_is_shown_as_text():
    at = _app(gen="![x](https://host/p.png) [Click here](https://host)")
    _no_exception(at)
    raw = " ".join(e.value for e in at.error)
    assert "[Click here](" not in raw and "![x](" not in raw  # escaped: drawn as the characters typed
    assert "[Click here](https://host)" in _texts(at.error)


ROUND_TRIPS = [
    {
        "gen": "random:10-40-160:seed=3",
        "z": "2",
        "methods": "latent-pursuit,gd",
        "mask": "random",
        "missing": "0.33",
        "mask_seed": "5",
        "noise": "sigma",
        "level": "0.0123",
        "noise_seed": "4",
        "options": '{"gd":{"n_iter":150,"lr":0.07}}',
    },
    {"gen": "mnist", "z": "999999", "methods": "latent-pursuit", "mask": "box", "box": "3,4,20,7"},
    {"gen": "mnist", "methods": "lp,lbp", "mask": "half", "half": "left", "noise": "snr", "level": "37.5"},
    {
        "gen": "random:6-24-100:seed=1000000:bias:hidden=leaky_relu:output=sigmoid",
        "methods": "lbp",
        "mask": "custom",
        "custom": session.pack_mask([k % 7 != 0 for k in range(100)]),
        "options": '{"lbp":{"lam_scale":1,"threshold":3}}',
    },
]


@pytest.mark.parametrize("query", ROUND_TRIPS, ids=range(len(ROUND_TRIPS)))
def test_a_link_runs_exactly_the_experiment_it_names(query):
    at = _app(**query)
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    ran = at.session_state["_last"][1]
    wanted = session.Experiment.from_query(query)
    assert io.parse_spec(ran.generator) == io.parse_spec(wanted.generator)
    assert ran.to_query() | {"gen": ""} == wanted.to_query() | {"gen": ""}


def test_random_widths_past_the_budget_are_refused_before_building(built):
    at = _app()
    at.radio(key="gen_kind").set_value("Random").run()
    at.text_input(key="rnd_widths").set_value("20-31623-31623").run()
    _no_exception(at)
    assert "max_width" in _texts(at.sidebar.error)
    assert not any("31623" in s for s in built)
    assert any(w.value.startswith("Choose a valid generator") for w in at.warning)


def test_a_run_past_the_cost_budget_is_refused_with_the_estimate_and_the_setting(monkeypatch):
    monkeypatch.setenv("GENINV_BUDGET", "max_cost=1e10")  # the default MNIST run needs about 2e10
    at = _app()
    _no_exception(at)
    refusal = _texts(at.error)
    assert "This run is refused" in refusal and "max_cost" in refusal and "GENINV_BUDGET" in refusal
    next(b for b in at.button if b.label == "Run").click()
    at.run()
    _no_exception(at)
    assert "_last" not in at.session_state
    monkeypatch.delenv("GENINV_BUDGET")
    at.run()
    assert "Estimated cost of a run: about 2e+10 multiply-adds" in _texts(at.sidebar.caption)


def test_an_unexpected_failure_is_a_short_message_and_a_log_line(monkeypatch):
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    logger = logging.getLogger("geninv.dashboard")
    handler = Keep()
    logger.addHandler(handler)
    monkeypatch.setattr(demo, "run", broken)
    try:
        at = _app(gen="random:6-24-96:seed=7", methods="latent-pursuit")
    finally:
        logger.removeHandler(handler)
    _no_exception(at)
    shown = _texts(at.error)
    assert "Something went wrong on this page (reference" in shown and "secret" not in shown
    reference = shown.split("reference ")[1][:8]
    logged = [r for r in records if reference in r.getMessage()]
    assert logged and logged[0].exc_info and "secret internal detail" in str(logged[0].exc_info[1])


# ----------------------------------------------------------------------------- uploads
def _upload_generator(at: AppTest, arch: bytes, weights: bytes) -> AppTest:
    at.radio(key="gen_kind").set_value("Upload").run()
    at.file_uploader(key="up_arch").set_value(("g.json", arch, "application/json"))
    at.file_uploader(key="up_weights").set_value(("g.safetensors", weights, "application/octet-stream"))
    return at.run()


@pytest.mark.parametrize(
    "arch, name",
    [
        (json.dumps({"widths": [3] + [8] * 700_000}).encode(), "65536"),
        (json.dumps({"widths": [20, 31623, 31623]}).encode(), "max_width"),
        (b'{"widths": [3, ' + b"9" * 5000 + b"]}", "digits"),
        (b'{"widths": [3, 8], "name": ' + b"[" * 3000 + b"]" * 3000 + b"}", "JSON"),
        (b'{"widths": [3, 8], "dtype": "float8_e4m3fn"}', "dtype"),
    ],
)
def test_hostile_architecture_uploads_are_refused(arch, name):
    at = _upload_generator(_app(), arch, b"\x00" * 64)
    _no_exception(at)
    errors = _texts(at.sidebar.error)
    assert name in errors and len(errors) < 800


def _bomb_png() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 99))
        + chunk(b"IEND", b"")
    )


def _huge_npy() -> bytes:
    import io as _io

    import numpy as np

    buffer = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|b1", "fortran_order": False, "shape": (10**12,)})
    return buffer.getvalue() + b"\x01" * 64


@pytest.mark.parametrize(
    "name, data, expected",
    [("bomb.png", _bomb_png(), "4000000 pixels"), ("huge.npy", _huge_npy(), "784 entries")],
    ids=["png bomb", "npy header"],
)
def test_hostile_mask_uploads_are_refused(name, data, expected):
    at = _app()
    at.selectbox(key="mask_kind").set_value("upload").run()
    at.file_uploader(key="up_mask").set_value((name, data, "application/octet-stream"))
    at.run()
    _no_exception(at)
    assert expected in _texts(at.sidebar.error)


# ----------------------------------------------------------------------------- sweep page
def _sweep(at: AppTest, *, gen="random:10-40-160:seed=2", values="0, 0.5", trials=2, methods=("latent-pursuit",)):
    at.text_input(key="sweep_gen").set_value(gen)
    at.selectbox(key="sweep_var").set_value("missing")
    at.text_input(key="sweep_values").set_value(values)
    at.number_input(key="sweep_trials").set_value(trials)
    at.multiselect(key="sweep_methods").set_value(list(methods))
    next(b for b in at.button if b.label == "Run sweep").click()
    return at.run()


def _sweep_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page("app_pages/sweep.py").run()
    return at


def test_sweeps_of_two_sessions_keep_private_records_and_running_again_keeps_them(monkeypatch):
    first, second = _sweep(_sweep_page()), _sweep(_sweep_page())
    folders = []
    for at in (first, second):
        _no_exception(at)
        summary = next(df.value for df in at.dataframe if "success_rate" in df.value.columns)
        assert list(summary["trials"]) == [2, 2]
        folder = Path(at.session_state["_sweep_dir"].name)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        folders.append(folder)
    assert folders[0] != folders[1]
    import geninv.sweeps

    calls = []
    monkeypatch.setattr(geninv.sweeps, "run_task", lambda *a: calls.append(a) or [])
    again = _sweep(first)  # the same configuration submitted again (as Enter in a field once did)
    _no_exception(again)
    assert calls == []  # finished tasks are kept, not recomputed or deleted
    assert list(next(df.value for df in again.dataframe if "success_rate" in df.value.columns)["trials"]) == [2, 2]


@pytest.mark.parametrize(
    "changes, name",
    [
        ({"gen": "random:20-31623-31623"}, "max_width"),
        ({"gen": "random:20-128-392-784", "trials": 500, "methods": ("gd", "hybrid")}, "max_cost"),
        ({"values": ", ".join(str(i / 100) for i in range(60))}, "max_sweep_values"),
        ({"values": "0, 0"}, "values"),
    ],
)
def test_sweeps_past_the_budget_are_refused_before_running(changes, name, monkeypatch):
    import geninv.sweeps

    monkeypatch.setattr(geninv.sweeps, "run_task", lambda *a: pytest.fail("a refused sweep ran"))
    at = _sweep(_sweep_page(), **changes)
    _no_exception(at)
    assert name in _texts(at.error)


def test_a_malformed_budget_setting_is_the_operators_problem_not_a_crash(monkeypatch):
    monkeypatch.setenv("GENINV_BUDGET", "max_widht=5")
    at = _app()
    _no_exception(at)
    assert "Something went wrong on this page" in _texts(at.error)  # the setting's error goes to the log
