"""AppTest of what a lecturer and a researcher use: lessons, state across pages, replay, batch, phase maps, digits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from geninv import io, lessons, session

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "main.py")
TIMEOUT = 240
INVERT, THEORY, SWEEP = "app_pages/invert.py", "app_pages/theory.py", "app_pages/sweep.py"


def _app(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _plain(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _table(at: AppTest):
    return next(df.value for df in at.dataframe if "latent_error" in df.value.columns).set_index("method")


def _same(a: session.Experiment, b: session.Experiment) -> bool:
    qa, qb = a.to_query(), b.to_query()
    return io.parse_spec(qa.pop("gen")) == io.parse_spec(qb.pop("gen")) and qa == qb


def _run_button(at: AppTest):
    return next(b for b in at.button if b.label == "Run")


def _query(at: AppTest) -> dict[str, str]:
    return {k: at.query_params[k] for k in at.query_params}


# ----------------------------------------------------------------------------- lessons
@pytest.mark.slow
@pytest.mark.parametrize("name", list(lessons.LESSONS))
def test_every_lesson_link_runs_its_experiment_and_says_what_to_notice(name):
    lesson = lessons.get(name)
    at = _app(lesson=name)
    _ok(at)
    assert _same(at.session_state["_last"][1], lesson.experiment)  # exactly the lesson's experiment ran
    text = " ".join(_plain(m.value) for m in at.markdown)
    assert lesson.title in text and all(note[:60] in text for note in lesson.notice)
    table = _table(at)
    assert set(lesson.experiment.methods) <= set(table.index)
    assert _query(at) == {"lesson": name}  # the link stays the short lesson link
    assert at.session_state["replay_method"] == lesson.replay
    unfolded = {e.label for e in at.sidebar.expander if e.proto.expanded}
    assert unfolded == {f"{u.removeprefix('options:')} options" for u in lesson.unfold if u.startswith("options:")}
    # The certificate in words, never "NOT identifiable" from the layer-by-layer test alone.
    outcome = list(at.session_state["_runs"].values())[-1]
    verdict = next(m.value for m in at.markdown if m.value.startswith("**Certificate:"))
    assert verdict == f"**Certificate: {outcome.verdict[0]}.**"
    if outcome.network["identifiable_network"]:
        assert "not identifiable" not in verdict


def test_lesson_selector_loads_a_lesson_and_free_exploration_keeps_its_settings():
    at = _app()
    at.selectbox(key="lesson").set_value("contraction").run()
    _ok(at)
    assert at.session_state["rnd_widths"] == "20-10-200-784" and at.session_state["methods"] == [
        "gd",
        "latent-pursuit",
        "hybrid",
    ]
    table = _table(at)
    assert table.loc["latent-pursuit", "signal_error"] < 1e-12 and table.loc["latent-pursuit", "latent_error"] > 0.1
    assert any("not identifiable" in m.value for m in at.markdown)
    at.selectbox(key="lesson").set_value("").run()
    _ok(at)
    assert at.session_state["rnd_widths"] == "20-10-200-784"  # leaving the lesson keeps its settings
    assert not any(m.value.startswith("**Lesson") for m in at.markdown)


@pytest.mark.parametrize(
    "query, name",
    [({"lesson": "nonsense"}, "lesson"), ({"lesson": "masks", "z": "3"}, "lesson")],
)
def test_bad_lesson_links_are_refused_and_run_nothing(query, name):
    at = _app(**query)
    assert not at.exception
    errors = [_plain(e.value) for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("The link's experiment was not run") and name in errors[0]
    assert "_last" not in at.session_state


# ----------------------------------------------------------------------------- state
def test_widgets_results_and_url_survive_a_trip_to_theory_and_back():
    at = _app()
    at.radio(key="gen_kind").set_value("Random").run()
    at.text_input(key="rnd_widths").set_value("10-40-160").run()
    at.selectbox(key="mask_kind").set_value("random").run()
    at.slider(key="missing").set_value(0.3)
    at.selectbox(key="noise_kind").set_value("sigma").run()
    at.number_input(key="sigma").set_value(0.02)
    at.multiselect(key="methods").set_value(["latent-pursuit"])
    at.number_input(key="opt_latent-pursuit_refit_iter").set_value(5)
    _run_button(at).click()
    at.run()
    _ok(at)
    before = {k: at.session_state[k] for k in ("gen_kind", "rnd_widths", "mask_kind", "missing", "noise_kind", "sigma")}
    query, ran = _query(at), at.session_state["_last"][1]
    assert query["options"] == '{"latent-pursuit":{"refit_iter":5}}'
    at.switch_page(THEORY).run()
    assert not at.exception
    at.switch_page(INVERT).run()
    _ok(at)
    assert {k: at.session_state[k] for k in before} == before
    assert at.session_state["methods"] == ["latent-pursuit"] and at.session_state["opt_latent-pursuit_refit_iter"] == 5
    assert _query(at) == query  # the link is the run's again
    assert at.session_state["_last"][1] == ran
    assert not any("settings have changed" in c.value for c in at.caption)  # the results match the widgets
    assert set(_table(at).index) == {"latent-pursuit", "oracle"}


def test_methods_are_never_emptied_behind_the_users_back():
    at = _app(gen="random:8-32-128:seed=1")
    at.multiselect(key="methods").set_value(["lbp", "hybrid"])
    _run_button(at).click()
    at.run()
    _ok(at)
    at.radio(key="gen_kind").set_value("Upload").run()  # no files yet: the form is not drawn
    at.radio(key="gen_kind").set_value("Random").run()
    assert at.multiselect(key="methods").value == ["lbp", "hybrid"]
    at.text_input(key="rnd_widths").set_value("20-abc").run()  # invalid: nothing below the generator is drawn
    at.text_input(key="rnd_widths").set_value("8-32-128").run()
    assert not at.exception
    assert at.multiselect(key="methods").value == ["lbp", "hybrid"]


def test_replay_follows_the_latest_run_and_play_pause_behave():
    at = _app(gen="random:10-40-160:seed=1", methods="gd,latent-pursuit", options='{"gd":{"n_iter":200}}')
    _ok(at)
    at.radio(key="replay_method").set_value("gd").run()
    frames = at.select_slider(key="frame_gd")
    assert str(frames.value) == frames.options[-1]  # a run is shown at its end
    frames.set_value(frames.options[0]).run()
    at.number_input(key="opt_gd_n_iter").set_value(300)
    _run_button(at).click()
    at.run()
    _ok(at)
    frames = at.select_slider(key="frame_gd")
    assert frames.options[-1] == "300" and str(frames.value) == "300"  # the new run, at its end, not iteration 0
    # Play from the end starts over; each tick moves `speed` frames; at the end the button reads Play again.
    at.radio(key="replay_method").set_value("latent-pursuit").run()
    play = next(b for b in at.button if b.key == "btn_latent-pursuit")
    assert play.label == "▶ Play"
    play.click()
    at.run()
    assert at.session_state["play_latent-pursuit"] is True
    steps = at.select_slider(key="step_latent-pursuit")
    assert steps.value == steps.options[0]  # restarted at the measurements
    at.run()  # one tick
    assert at.select_slider(key="step_latent-pursuit").value == steps.options[1]
    assert next(b for b in at.button if b.key == "btn_latent-pursuit").label == "⏸ Pause"
    for _ in range(len(steps.options)):
        at.run()  # ticks (AppTest reruns the page; the page's fragment advances as the timer would)
    assert at.session_state["play_latent-pursuit"] is False
    assert next(b for b in at.button if b.key == "btn_latent-pursuit").label == "▶ Play"
    assert at.select_slider(key="step_latent-pursuit").value == steps.options[-1]  # stopped at the end
    # Pause keeps the position: Play again from a middle position resumes there instead of restarting.
    at.select_slider(key="step_latent-pursuit").set_value(steps.options[1]).run()
    next(b for b in at.button if b.key == "btn_latent-pursuit").click()
    at.run()
    assert at.select_slider(key="step_latent-pursuit").value == steps.options[1]  # resumes, no restart
    at.run()
    assert at.select_slider(key="step_latent-pursuit").value == steps.options[2]


def test_a_unit_selected_in_the_network_picture_is_framed_in_the_support_maps():
    at = _app(gen="random:10-40-160:seed=1", methods="latent-pursuit")
    _ok(at)
    at.session_state["net_unit"] = (1, 7)  # x1, unit 7 (what a click on that dot stores)
    at.run()
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [str(f["layout"].get("title", {}).get("text", "")) for f in specs]
    assert any("x1 (unit by unit) — unit 7: latent-pursuit: " in t for t in titles)
    names = [t.get("name", "") for f in specs for t in f["data"]]
    assert "selected: x1 unit 7" in names  # ringed in the network picture too


# ----------------------------------------------------------------------------- research views
def test_batch_mode_reports_rates_with_intervals_and_exports_arrays():
    at = _app(gen="random:10-40-160:seed=2", methods="latent-pursuit,gd", options='{"gd":{"n_iter":100}}')
    _ok(at)
    at.number_input(key="batch_n").set_value(8)
    next(b for b in at.button if b.label == "Run batch").click()
    at.run()
    _ok(at)
    summary = next(df.value for df in at.dataframe if "success_low" in df.value.columns).set_index("method")
    assert set(summary.index) == {"latent-pursuit", "gd"} and (summary["samples"] == 8).all()
    lp = summary.loc["latent-pursuit"]
    assert lp["success_rate"] == 1.0 and lp["success_low"] < 0.8 and lp["median_error"] < 1e-8
    assert (summary["success_low"] <= summary["success_rate"]).all()
    assert (summary["success_rate"] <= summary["success_high"]).all()
    assert any("8 samples" in m.value for m in at.markdown)
    assert any(b.label == "Batch arrays as NPZ" for b in at.get("download_button"))
    assert any(b.label == "All arrays as NPZ" for b in at.get("download_button"))


def test_a_batch_past_the_budget_is_refused(monkeypatch):
    at = _app(gen="random:10-40-160:seed=2", methods="latent-pursuit")
    _ok(at)
    monkeypatch.setenv("GENINV_BUDGET", "max_cost=5e7")  # one run fits, fifty samples do not
    at.number_input(key="batch_n").set_value(50)
    next(b for b in at.button if b.label == "Run batch").click()
    at.run()
    assert not at.exception
    assert any("This batch is refused" in _plain(e.value) and "max_cost" in _plain(e.value) for e in at.error)
    assert "_batch" not in at.session_state


def test_phase_map_draws_success_and_the_certificates_boundary():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(SWEEP).run()
    at.text_input(key="phase_x_values").set_value("1, 3")
    at.text_input(key="phase_y_values").set_value("0, 0.5")
    at.text_input(key="phase_gen").set_value("random:20-40-80-160:seed=1")
    at.number_input(key="phase_trials").set_value(3)
    next(b for b in at.button if b.label == "Run phase map").click()
    at.run()
    _ok(at)
    config, records = at.session_state["_phase"]
    assert len(records) == 2 * 2 * 3 and config.x_variable == "expansion"
    spec = next(c.proto.spec for c in at.get("plotly_chart") if "success rate" in c.proto.spec)
    assert "certificate: identifiable (whole network) above" in spec and "heatmap" in spec
    assert any(b.label == "Phase map records as CSV" for b in at.get("download_button"))


def test_a_phase_map_past_the_budget_is_refused(monkeypatch):
    import geninv.phases

    monkeypatch.setattr(geninv.phases, "run_phase_cell", lambda *a: pytest.fail("a refused phase map ran"))
    monkeypatch.setenv("GENINV_BUDGET", "max_sweep_runs=50")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(SWEEP).run()
    next(b for b in at.button if b.label == "Run phase map").click()
    at.run()
    assert not at.exception
    assert any("max_sweep_runs" in _plain(e.value) for e in at.error)


def test_sweeping_the_expansion_asks_only_for_a_seed():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(SWEEP).run()
    at.selectbox(key="sweep_var").set_value("expansion").run()
    assert not [t for t in at.text_input if t.key == "sweep_gen"]  # no generator field to ignore silently
    at.number_input(key="sweep_gen_seed").set_value(4)
    at.text_input(key="sweep_values").set_value("1.5, 3")
    at.number_input(key="sweep_trials").set_value(2)
    at.multiselect(key="sweep_methods").set_value(["latent-pursuit"])
    next(b for b in at.button if b.label == "Run sweep").click()
    at.run()
    _ok(at)
    assert at.session_state["sweep_config"].generator == "random:20-40-80-160:seed=4"
    assert any("widths 20, 20r, 20r², 20r³" in c.value for c in at.caption)


# ----------------------------------------------------------------------------- real digits
def test_a_real_digit_shows_its_projection_and_where_each_method_lands():
    at = _app()
    at.radio(key="signal_kind").set_value("real MNIST digit").run()
    at.selectbox(key="digit").set_value(5).run()
    at.multiselect(key="methods").set_value(["latent-pursuit"])
    _run_button(at).click()
    at.run()
    _ok(at)
    assert _query(at)["digit"] == "5" and "z" not in _query(at)
    table = _table(at)
    assert 0 < table.loc["latent-pursuit", "digit_error"] < 2
    captions = " ".join(c for image in at.get("image") for c in image.captions)
    assert "best fit in the range" in captions and "from the digit" in captions
    assert "CC BY-SA 3.0" in " ".join(c.value for c in at.sidebar.caption)
    # a batch is for samples of the generator
    assert any("choose “sample G(z)”" in i.value for i in at.info)


def test_definitions_sit_next_to_every_metric():
    at = _app(gen="random:10-40-160:seed=1", methods="latent-pursuit", noise="sigma", level="0.01")
    _ok(at)
    helps = {m.label: m.help for m in at.metric}
    for label in ("noise gain", "condition", "predicted error"):
        assert helps[label] and len(helps[label]) > 20
    assert np.isfinite(_table(at).loc["oracle", "latent_error"])
