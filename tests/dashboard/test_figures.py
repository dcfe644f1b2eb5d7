"""The plotly figure builders are pure functions: the data goes in, the figure carries it."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from dashboard.components import canvas, figures


def _history(restarts: int = 2, records: int = 5) -> dict:
    iters = np.arange(records) * 10
    loss = np.geomspace(1, 1e-6, records)[:, None] * np.arange(1, restarts + 1)
    return {"iterations": iters, "loss": loss, "latent_error": loss / 10}


def test_convergence_has_one_line_per_restart_per_panel_and_the_marker():
    fig = figures.convergence(_history(3), "gd", marker=20)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 6
    np.testing.assert_allclose(fig.data[0].y, _history(3)["loss"][:, 0])
    np.testing.assert_allclose(fig.data[1].y, _history(3)["latent_error"][:, 0])
    assert fig.data[0].line.color == fig.data[1].line.color  # a restart keeps its colour in both panels
    assert any(s.x0 == 20 for s in fig.layout.shapes)
    assert fig.layout.yaxis.type == "log"


def test_convergence_without_truth_has_only_the_loss():
    h = _history(2) | {"latent_error": None}
    assert len(figures.convergence(h, "gd").data) == 2


def test_convergence_turns_non_finite_values_into_gaps():
    h = _history(1)
    h["loss"] = h["loss"].copy()
    h["loss"][2, 0] = np.inf
    assert np.isnan(figures.convergence(h, "gd").data[0].y[2])


def test_pursuit_steps_plots_residual_and_error_per_step():
    steps = [{"layer": 2, "residual": 1e-12, "error": 2e-12}, {"layer": 0, "residual": 0.0, "error": 3e-9}]
    fig = figures.pursuit_steps({"latent-pursuit": steps, "lbp": []})
    assert [t.name for t in fig.data] == ["latent-pursuit", "latent-pursuit"]
    assert list(fig.data[0].x) == ["1: x2", "2: z"]
    assert fig.data[0].y[1] == pytest.approx(1e-17)  # zero residual floored for the log axis
    assert fig.data[1].y[1] == pytest.approx(3e-9)


def test_support_map_codes_each_unit_and_names_the_codes():
    maps = {"gd": np.array([0, 1, 2, 3]), "hybrid": np.array([1, 1, 0, 0])}
    fig = figures.support_map(maps, 1)
    heat = fig.data[0]
    assert list(heat.y) == ["gd", "hybrid"]
    np.testing.assert_array_equal(np.asarray(heat.z), [[0, 1, 2, 3], [1, 1, 0, 0]])
    assert heat.customdata[0][3] == "false alarm" and heat.customdata[0][2] == "missed"
    assert "x1" in fig.layout.title.text


def test_support_map_of_a_convolutional_layer_draws_one_feature_map_per_channel():
    rng = np.random.default_rng(0)
    maps = {"gd": rng.integers(0, 4, 4 * 7 * 7), "hybrid": rng.integers(0, 4, 4 * 7 * 7)}
    fig = figures.support_map(maps, 1, shape=(4, 7, 7), highlight=60)
    assert len(fig.data) == 8  # 2 methods x 4 channels
    for k, heat in enumerate(fig.data):
        method, channel = ("gd", "hybrid")[k // 4], k % 4
        np.testing.assert_array_equal(np.asarray(heat.z), maps[method].reshape(4, 7, 7)[channel])  # (C, H, W) order
    assert fig.layout.annotations[0].text == "gd · channel 1"
    assert "4 feature maps of 7 x 7" in fig.layout.title.text
    assert "channel 2, row 1, column 4" in fig.layout.title.text  # unit 60 = (1, 1, 4)
    assert len(fig.layout.shapes) == 2  # framed in channel 2 of each method
    flat = figures.support_map(maps, 1, shape=(196,))
    assert len(flat.data) == 1  # a dense layer keeps its strip


def test_measurements_are_drawn_one_bar_per_row():
    fig = figures.measurements(np.arange(5.0), n=784, kind="gaussian")
    np.testing.assert_array_equal(fig.data[0].y, np.arange(5.0))
    assert "5 of 784 measurements" in fig.layout.title.text


def test_support_scores_bars_per_layer():
    layers = {"gd": [{"layer": 1, "precision": 0.5, "recall": 1.0}, {"layer": 2, "precision": 1.0, "recall": 0.25}]}
    fig = figures.support_scores(layers)
    assert list(fig.data[0].y) == [0.5, 1.0] and list(fig.data[1].y) == [1.0, 0.25]


def test_layer_errors_annotates_the_certificate():
    from geninv.demo import MethodOutcome

    m = MethodOutcome(method="hybrid", metrics={"latent_error": 1e-10}, layers=[{"error": 1e-12}])

    cert = [
        {
            "layer": 1,
            "identifiable": True,
            "paper_unique": "holds",
            "lbp_guaranteed": False,
            "rows": 40,
            "cardinality": 9,
        },
        {
            "layer": 0,
            "identifiable": False,
            "paper_unique": "fails",
            "lbp_guaranteed": True,
            "rows": 3,
            "cardinality": 4,
        },
    ]
    fig = figures.layer_errors({"hybrid": m}, cert, threshold=1e-3)
    assert list(fig.data[0].y) == [1e-12, 1e-10]
    texts = [a.text for a in fig.layout.annotations]
    assert "step test ✓<br>40 eq. / 9 unknowns<br>paper ✓ · LBP ✗" in texts
    assert "step test ✗<br>3 eq. / 4 unknowns<br>paper ✗ · LBP ✓" in texts
    assert not any("NOT identifiable" in t for t in texts)  # a failed step test is not the verdict
    assert any(s.y0 == 1e-3 for s in fig.layout.shapes)  # the success threshold


def test_verdict_fractions_and_expansion_curve_carry_the_fractions():
    summary = [
        {"layer": 1, "identifiable": 1.0, "paper_unique_holds": 0.5, "lbp_guaranteed": 0.0},
        {"layer": 0, "identifiable": 0.75, "paper_unique_holds": 0.25, "lbp_guaranteed": 0.1},
        {"layer": "all", "identifiable": 0.75, "paper_unique_holds": 0.25, "lbp_guaranteed": 0.0},
    ]
    fig = figures.verdict_fractions(summary)
    assert list(fig.data[0].x) == ["x1", "z"] and list(fig.data[0].y) == [1.0, 0.75]
    rows = [
        {"ratio": 1.5, "identifiable": 0.1, "paper_unique_holds": 0.0, "lbp_guaranteed": 0.0},
        {"ratio": 3.0, "identifiable": 1.0, "paper_unique_holds": 0.9, "lbp_guaranteed": 0.0},
    ]
    curve = figures.expansion_curve(rows)
    assert list(curve.data[0].x) == [1.5, 3.0] and list(curve.data[0].y) == [0.1, 1.0]


def test_layer_state_and_signal_line():
    fig = figures.layer_state(np.array([0.0, 2.0]), np.array([0.0, 1.5]), 2)
    assert list(fig.data[0].y) == [0.0, 1.5] and list(fig.data[1].y) == [0.0, 2.0]
    line = figures.signal_line({"original": np.arange(4.0)}, np.array([True, False, True, False]))
    assert list(line.data[1].x) == [1, 3]  # hidden coordinates marked


def test_canvas_strokes_become_a_mask():
    alpha = np.zeros((40, 40))
    alpha[0:10, 10:20] = 255  # paint image pixel (0, 1) fully
    alpha[30:40, 30:32] = 255  # 20% of pixel (3, 3): below the threshold
    mask = canvas.strokes_to_mask(alpha, (4, 4))
    assert mask.shape == (16,) and mask.dtype == bool
    assert not mask[1] and mask[15] and mask.sum() == 15
    with pytest.raises(ValueError, match="does not tile"):
        canvas.strokes_to_mask(np.zeros((41, 40)), (4, 4))


def test_method_colours_come_from_the_one_palette():
    from geninv.viz import METHOD_COLORS

    assert figures.colour("gd") == METHOD_COLORS["gd"] and figures.colour("oracle") == METHOD_COLORS["oracle"]
    line = figures.signal_line({"original": np.zeros(3), "gd": np.zeros(3), "hybrid": np.ones(3)})
    assert [t.line.color for t in line.data[1:]] == [METHOD_COLORS["gd"], METHOD_COLORS["hybrid"]]
    assert line.data[0].line.width > line.data[1].line.width  # the original underneath, visible


def test_convergence_draws_the_success_threshold_on_the_latent_error():
    fig = figures.convergence(_history(2), "gd", threshold=1e-3)
    assert any(s.y0 == 1e-3 and s.yref == "y2" for s in fig.layout.shapes)
    label = next(a for a in fig.layout.annotations if a.text == "success ≤ 0.001")
    assert label.y == -3 and label.yref == "y2"  # a log axis places annotations at log10 of the value
    assert not figures.convergence(_history(2), "gd").layout.shapes


def test_network_picture_places_every_unit_once_and_clicks_map_back():
    widths = (3, 8, 16)  # a 4 x 4 output, drawn as its image
    codes = figures.network_codes(widths, np.array([True] * 12 + [False] * 4))
    assert [c.tolist() for c in codes[:2]] == [[4] * 3, [4] * 8]  # nothing recovered yet
    assert codes[2].tolist() == [5] * 12 + [6] * 4  # observed, then hidden pixels
    fig = figures.network(widths, codes, title="before", selected=(1, 5), rows=4)
    drawn = sum(len(t.x) for t in fig.data if not t.name.startswith("selected"))
    assert drawn == sum(widths)
    assert {t.name for t in fig.data} >= {"not recovered yet", "observed pixel", "hidden pixel", "selected: x1 unit 5"}
    assert fig.layout.title.text == "before"
    positions = figures.network_positions(widths, rows=4)
    for layer, pos in enumerate(positions):
        for unit, (x, y) in enumerate(pos):
            assert figures.network_unit_at(widths, x, y, rows=4) == (layer, unit)
    assert figures.network_unit_at(widths, -5.0, 3.0, rows=4) is None
    assert len({tuple(p) for pos in positions for p in pos}) == sum(widths)  # no two units on one spot


def test_network_codes_follow_the_pursuit_and_the_iterations():
    widths = (2, 3, 4)
    steps = [{"layer": 1, "map": np.array([1, 2, 3]), "error": 0.5}, {"layer": 0, "map": None, "error": 1e-9}]
    after_one = figures.network_codes(widths, None, steps=steps, after=1)
    assert after_one[1].tolist() == [1, 2, 3] and after_one[0].tolist() == [4, 4]
    after_two = figures.network_codes(widths, None, steps=steps, after=2)
    assert after_two[0].tolist() == [7, 7]  # z recovered
    final = figures.network_codes(widths, None, steps=steps, after=2, final_maps=[np.array([1, 1, 1])])
    assert final[1].tolist() == [1, 1, 1]  # after the last step: the method's final supports (a refit re-decides)
    assert figures.network_codes(widths, None, steps=steps, after=1, final_maps=[np.ones(3)])[1].tolist() == [1, 2, 3]
    # Compressed sensing: no output pixel is observed on its own, none is hidden.
    measured = figures.network_codes(widths, np.array([True, False, True, True]), measured=True)
    assert measured[-1].tolist() == [9, 9, 9, 9]
    assert "through A" in figures.NETWORK_CODES[9][0]
    wrong = [steps[0], steps[1] | {"error": 0.4}]
    assert figures.network_codes(widths, None, steps=wrong, after=2)[0].tolist() == [8, 8]  # estimated, wrong
    frames = [np.array([[0, 1, 2], [1, 1, 0]])]
    at_frame = figures.network_codes(widths, None, frame_maps=frames, frame=1, frame_error=2e-3)
    assert at_frame[1].tolist() == [1, 1, 0] and at_frame[0].tolist() == [8, 8]


def test_support_map_frames_the_highlighted_unit():
    fig = figures.support_map({"gd": np.array([0, 1, 2, 3])}, 1, highlight=2)
    assert fig.layout.shapes[0].x0 == 1.5 and fig.layout.shapes[0].x1 == 2.5
    assert "unit 2: gd: missed" in fig.layout.title.text


def test_batch_figures_carry_the_intervals_and_every_error():
    summary = [
        {"method": "gd", "success_rate": 0.5, "success_low": 0.3, "success_high": 0.7, "recovered": 5, "samples": 10},
        {
            "method": "hybrid",
            "success_rate": 1.0,
            "success_low": 0.72,
            "success_high": 1.0,
            "recovered": 10,
            "samples": 10,
        },
    ]
    rates = figures.batch_rates(summary)
    assert [t.y[0] for t in rates.data] == [0.5, 1.0]
    assert rates.data[0].error_y.array[0] == pytest.approx(0.2) and rates.data[0].error_y.arrayminus[
        0
    ] == pytest.approx(0.2)
    assert rates.data[0].marker.color == figures.colour("gd")
    errors = figures.batch_errors({"gd": np.array([1e-2, 0.0, np.nan])}, threshold=1e-3)
    assert errors.data[0].y[0] == 1e-2 and errors.data[0].y[1] == 1e-17 and np.isnan(errors.data[0].y[2])
    assert errors.layout.shapes[0].y0 == 1e-3


def test_phase_map_heat_and_the_certificates_boundaries():
    grid = {
        "x": [1.5, 3.0],
        "y": [0.0, 0.4, 0.8],
        "success": np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 0.5]]),
        "network": np.array([[0.1, 1.0], [0.0, 1.0], [0.0, 1.0]]),
        "layerwise": np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 0.2]]),
        "boundary_network": [0.0, 0.8],
        "boundary_layerwise": [0.0, 0.6],
    }
    fig = figures.phase_map(grid, "latent-pursuit", x_label="expansion", y_label="missing")
    heat, network, layerwise = fig.data
    np.testing.assert_array_equal(np.asarray(heat.z), grid["success"])
    assert list(network.x) == [-0.5, 0.5, 0.5, 1.5] and list(network.y) == [-0.5, -0.5, 2.5, 2.5]
    assert list(layerwise.y)[2:] == [1.5, 1.5]  # halfway between 0.4 and 0.8
    assert "whole network" in network.name and "layer-by-layer" in layerwise.name


def test_verdict_fractions_show_the_whole_network_line():
    summary = [
        {"layer": 1, "identifiable": 0.0, "paper_unique_holds": 0.0, "lbp_guaranteed": 0.0},
        {"layer": "all", "identifiable": 0.0, "identifiable_network": 1.0},
    ]
    fig = figures.verdict_fractions(summary)
    line = next(t for t in fig.data if t.name.startswith("identifiable (whole network)"))
    assert list(line.y) == [1.0] and line.name.endswith(": 100%")
    assert next(t.name for t in fig.data if t.type == "bar") == "layer-by-layer rank test"


def test_times_formats_gains():
    assert figures.times(707.4) == "707" and figures.times(1534.2) == "1,534" and figures.times(float("inf")) == "∞"
    assert figures.times(3.6) == "3.6" and figures.times(2.1e7) == "2.1e+07" and figures.times(None) == "–"
