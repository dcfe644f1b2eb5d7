"""AppTest drives every page: change inputs, run, check real numbers, bad input keeps the app alive."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "main.py")
TIMEOUT = 180


def _app(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _submit(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Run").click()
    return at.run()


def _metrics_table(at: AppTest):
    frame = next(df.value for df in at.dataframe if "latent_error" in df.value.columns)
    return frame.set_index("method")


def test_first_page_shows_a_sample_and_the_form():
    at = _app()
    _no_exception(at)
    assert at.title[0].value == "Invert a generator"
    assert len(at.image) >= 2  # the clean sample and its observed version
    assert any(b.label == "Run" for b in at.button)


def test_invert_mnist_half_masked_gd_and_latent_pursuit():
    at = _app()
    at.selectbox(key="mask_kind").set_value("half").run()
    at.multiselect(key="methods").set_value(["gd", "latent-pursuit"])
    at.number_input(key="opt_gd_n_iter").set_value(300)
    at.number_input(key="opt_gd_restarts").set_value(2)
    at = _submit(at)
    _no_exception(at)
    table = _metrics_table(at)
    assert set(table.index) == {"gd", "latent-pursuit"}
    assert table.loc["latent-pursuit", "latent_error"] < 1e-6  # exact on the shipped model, half hidden
    assert math.isfinite(table.loc["gd", "latent_error"]) and table.loc["gd", "latent_error"] > 0
    assert table.loc["latent-pursuit", "psnr_db"] > 100
    # Certificate beside the achieved per-layer results, with support precision.
    layers = next(df.value for df in at.dataframe if "identifiable" in df.value.columns)
    assert list(layers["layer"]) == [2, 1, 0]
    assert (layers["latent-pursuit: precision"].dropna() == 1.0).all()
    # The experiment is in the URL so that the link reproduces the run.
    assert at.query_params["mask"] == "half" and "latent-pursuit" in at.query_params["methods"]


def test_shared_link_reproduces_a_random_generator_run_with_noise():
    at = _app(
        gen="random:10-40-160:seed=3",
        z="2",
        methods="latent-pursuit,hybrid",
        mask="random",
        missing="0.3",
        noise="snr",
        level="30",
    )
    _no_exception(at)
    assert at.session_state["gen_kind"] == "Random" and at.session_state["rnd_widths"] == "10-40-160"
    table = _metrics_table(at)
    assert set(table.index) == {"latent-pursuit", "hybrid", "oracle"}  # noisy: the oracle is reported beside
    assert (table["latent_error"] < 0.2).all()  # noisy: close, not exact
    assert (table["latent_error"] > 0).all()
    assert table.loc["hybrid", "latent_error"] < 3 * table.loc["oracle", "latent_error"]


def test_replay_moves_through_pursuit_steps_and_gd_iterations():
    at = _app(gen="random:10-40-160:seed=1", methods="gd,latent-pursuit", options='{"gd":{"n_iter":200}}')
    _no_exception(at)
    at.radio(key="replay_method").set_value("latent-pursuit").run()
    slider = at.select_slider(key="step_latent-pursuit")
    assert slider.options[0] == "observed y" and len(slider.options) == 3  # y, then x1, then z
    slider.set_value(slider.options[1]).run()
    _no_exception(at)
    assert any(m.label == "relative error of this layer" for m in at.metric)
    at.radio(key="replay_method").set_value("gd").run()
    frames = at.select_slider(key="frame_gd")
    frames.set_value(frames.options[0]).run()
    _no_exception(at)
    shown = next(m for m in at.metric if m.label == "latent error at this iteration")
    assert float(shown.value) > 0


def test_bad_widths_show_an_error_and_the_app_keeps_working():
    at = _app()
    at.radio(key="gen_kind").set_value("Random").run()
    at.text_input(key="rnd_widths").set_value("20-abc-784").run()
    _no_exception(at)
    assert any("20-abc-784" in e.value for e in at.error)
    at.text_input(key="rnd_widths").set_value("8-32-128").run()
    _no_exception(at)
    assert not at.error
    assert "8 → 32 → 128" in " ".join(c.value for c in at.sidebar.caption)


def test_upload_that_is_not_a_model_is_rejected():
    at = _app()
    at.radio(key="gen_kind").set_value("Upload").run()
    at.file_uploader(key="up_arch").set_value(("arch.json", b'{"widths": [3, "x"]}', "application/json"))
    at.file_uploader(key="up_weights").set_value(
        ("w.safetensors", b"\x80\x04not safetensors", "application/octet-stream")
    )
    at.run()
    _no_exception(at)
    assert at.sidebar.error, "an invalid upload must show an error"
    assert any(w.value.startswith("Choose a valid generator") for w in at.warning)


def test_upload_of_a_saved_generator_works(tmp_path):
    import geninv

    G = geninv.Generator.random([6, 24, 96], seed=5)
    arch, weights = G.save(tmp_path / "g")
    at = _app()
    at.radio(key="gen_kind").set_value("Upload").run()
    at.file_uploader(key="up_arch").set_value(("g.json", arch.read_bytes(), "application/json"))
    at.file_uploader(key="up_weights").set_value(("g.safetensors", weights.read_bytes(), "application/octet-stream"))
    at.run()
    at.multiselect(key="methods").set_value(["latent-pursuit"])
    at = _submit(at)
    _no_exception(at)
    assert _metrics_table(at).loc["latent-pursuit", "latent_error"] < 1e-8


def test_mask_that_hides_everything_is_refused():
    at = _app()
    at.selectbox(key="mask_kind").set_value("box").run()
    for key, value in (("box_top", 0), ("box_left", 0), ("box_h", 28), ("box_w", 28)):
        at.number_input(key=key).set_value(value)
    at.run()
    _no_exception(at)
    assert any("at least one must be observed" in e.value for e in at.sidebar.error)
    at.number_input(key="box_h").set_value(10).run()
    assert not at.sidebar.error


def test_malformed_link_shows_an_error_not_a_crash():
    at = _app(gen="random:10-40-160", methods="gd,nonsense")
    _no_exception(at)
    assert any("nonsense" in e.value for e in at.error)


def test_sweep_page_runs_and_offers_csv():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page("app_pages/sweep.py").run()
    _no_exception(at)
    at.text_input(key="sweep_gen").set_value("random:10-40-160:seed=2")
    at.selectbox(key="sweep_var").set_value("missing")
    at.text_input(key="sweep_values").set_value("0, 0.5")
    at.number_input(key="sweep_trials").set_value(3)
    at.multiselect(key="sweep_methods").set_value(["latent-pursuit", "gd"])
    next(b for b in at.button if b.label == "Run sweep").click()
    at.run()
    _no_exception(at)
    summary = next(df.value for df in at.dataframe if "success_rate" in df.value.columns)
    assert len(summary) == 4 and set(summary["trials"]) == {3}
    assert summary["success_rate"].between(0, 1).all()
    assert (summary.loc[summary["method"] == "latent-pursuit", "success_rate"] == 1.0).all()
    assert any(b.label == "Records as CSV" for b in at.get("download_button"))


def test_sweep_page_sweeps_the_number_of_measurements_on_mnist():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page("app_pages/sweep.py").run()
    at.selectbox(key="sweep_var").set_value("measurements").run()
    at.text_input(key="sweep_gen").set_value("mnist")
    at.selectbox(key="sweep_meas").set_value("gaussian")
    at.text_input(key="sweep_values").set_value("5, 100")
    at.number_input(key="sweep_trials").set_value(2)
    at.multiselect(key="sweep_methods").set_value(["hybrid"])
    next(b for b in at.button if b.label == "Run sweep").click()
    at.run()
    _no_exception(at)
    assert at.session_state["sweep_config"].measurement == "gaussian"
    summary = next(df.value for df in at.dataframe if "success_rate" in df.value.columns).set_index("value")
    assert summary.loc[5.0, "success_rate"] == 0.0  # 5 measurements cannot pin down 20 latents
    assert summary.loc[100.0, "success_rate"] == 1.0


def test_sweep_page_rejects_bad_values():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page("app_pages/sweep.py").run()
    at.text_input(key="sweep_values").set_value("0, lots")
    next(b for b in at.button if b.label == "Run sweep").click()
    at.run()
    _no_exception(at)
    assert any("lots" in e.value for e in at.error)


@pytest.mark.slow
def test_theory_page_live_examples():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page("app_pages/theory.py").run()
    _no_exception(at)
    assert len(at.latex) >= 10

    def metric(label):
        return next(m.value for m in at.metric if m.label == label)

    at.slider(key="theory_missing").set_value(0.9).run()
    _no_exception(at)
    # 90% missing: the layer-by-layer test fails everywhere, the whole network is identifiable (never "0%
    # identifiable" beside exact recoveries).
    assert metric("Identifiable (whole network)") == "100%"
    assert metric("Step test passes at every step") == "0%"
    captions = " ".join(c.value for c in at.caption)
    assert "the whole network still pins z down" in captions
    clean_rows = int(metric("Usable pixels (mean)").split()[0])
    at.select_slider(key="theory_sigma").set_value(0.05).run()
    _no_exception(at)
    noisy_rows = int(metric("Usable pixels (mean)").split()[0])
    assert noisy_rows < clean_rows / 2
    assert "within 3σ = 0.15 of 0 or 1 gives no equation" in " ".join(c.value for c in at.caption)
    assert float(metric("Oracle's predicted error")) > 1  # identifiable but unstable
    # The expansion caption is computed from the chart it describes.
    expansion = next(c.value for c in at.caption if c.value.startswith("Read off the chart"))
    assert "at r = 2" in expansion and "LBP coherence guarantee holds on no sample" in expansion


def test_compressed_sensing_link_recovers_mnist_exactly_from_100_gaussian_measurements():
    at = _app(gen="mnist", meas="gaussian:100:seed=1", methods="hybrid")
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    table = _metrics_table(at)
    assert table.loc["hybrid", "latent_error"] < 1e-6
    assert at.session_state["meas_kind"] == "gaussian" and at.session_state["meas_m"] == 100
    captions = " ".join(c.value for c in at.caption)
    assert "100 of 784 measurements" in captions and "back-projection" in captions
    assert any(m.label == "measurements m" and m.value == "100" for m in at.metric)
    assert at.query_params["meas"] == "gaussian:100:seed=1" and "mask" not in at.query_params


def test_compressed_sensing_from_the_widgets_puts_the_operator_in_the_link():
    at = _app()
    at.selectbox(key="meas_kind").set_value("dct").run()
    at.number_input(key="meas_m").set_value(300)
    at.multiselect(key="methods").set_value(["hybrid"])
    at = _submit(at)
    _no_exception(at)
    assert _metrics_table(at).loc["hybrid", "latent_error"] < 1e-6
    assert at.query_params["meas"] == "dct:300:seed=0"
    assert "300 of 784 measurements" in " ".join(c.value for c in at.caption)


def test_conv_generator_support_maps_are_feature_maps_per_channel():
    at = _app()
    at.radio(key="gen_kind").set_value("MNIST conv (shipped)").run()
    at.selectbox(key="mask_kind").set_value("half").run()
    at.multiselect(key="methods").set_value(["hybrid"])
    at = _submit(at)
    _no_exception(at)
    assert at.query_params["gen"] == "mnist-conv"
    assert _metrics_table(at).loc["hybrid", "latent_error"] < 1e-6
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    maps = {f["layout"]["title"]["text"]: f["data"] for f in specs if "feature maps" in str(f["layout"].get("title"))}
    x1 = next(d for t, d in maps.items() if t.startswith("support of x1: 4 feature maps of 7 x 7"))
    x2 = next(d for t, d in maps.items() if t.startswith("support of x2: 2 feature maps of 14 x 14"))
    assert len(x1) == 4 and all(_shape(h["z"]) == (7, 7) for h in x1)
    assert len(x2) == 2 and all(_shape(h["z"]) == (14, 14) for h in x2)


def _shape(z) -> tuple[int, ...]:
    """The shape of an array in a plotly figure's JSON (a nested list, or a typed array with its shape)."""
    if isinstance(z, dict):
        return tuple(int(v) for v in str(z["shape"]).split(","))
    return np.asarray(z).shape
