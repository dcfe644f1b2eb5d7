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
    assert list(fig.data[0].x) == ["x2", "z"]
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


def test_support_scores_bars_per_layer():
    layers = {"gd": [{"layer": 1, "precision": 0.5, "recall": 1.0}, {"layer": 2, "precision": 1.0, "recall": 0.25}]}
    fig = figures.support_scores(layers)
    assert list(fig.data[0].y) == [0.5, 1.0] and list(fig.data[1].y) == [1.0, 0.25]


def test_layer_errors_annotates_the_certificate():
    from geninv.demo import MethodOutcome

    m = MethodOutcome(method="hybrid", metrics={"latent_error": 1e-10}, layers=[{"error": 1e-12}])

    cert = [
        {"layer": 1, "identifiable": True, "paper_unique": "holds", "lbp_guaranteed": False},
        {"layer": 0, "identifiable": False, "paper_unique": "fails", "lbp_guaranteed": True},
    ]
    fig = figures.layer_errors({"hybrid": m}, cert)
    assert list(fig.data[0].y) == [1e-12, 1e-10]
    texts = [a.text for a in fig.layout.annotations]
    assert "identifiable<br>paper ✓ · LBP ✗" in texts and "NOT identifiable<br>paper ✗ · LBP ✓" in texts


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
