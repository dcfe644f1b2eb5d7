"""Plotly figure builders: pure functions of geninv's plain results (no Streamlit, no torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
SUPPORT_COLOURS = ("#eef0f3", "#2e9e5b", "#f39c34", "#d6453d")
SUPPORT_LABELS = ("inactive", "found (true positive)", "missed", "false alarm")
RESTART_COLOURS = ("#4c72b0", "#55a868", "#dd8452", "#8172b3", "#c44e52", "#937860")
METHOD_COLOURS = {
    "gd": "#4c72b0",
    "plugin": "#8172b3",
    "latent-pursuit": "#dd8452",
    "lbp": "#937860",
    "lp": "#da8bc3",
    "hybrid": "#55a868",
    "oracle": "#333333",
}


VERDICTS = (
    ("identifiable", "identifiable (exact rank)", "#2e9e5b"),
    ("paper_unique_holds", "paper's condition holds", "#4c72b0"),
    ("lbp_guaranteed", "LBP coherence guarantee", "#dd8452"),
)
"""Certificate verdicts as (summary key, legend name, colour)."""


def _layout(fig: go.Figure, height: int, *, top: int = 10, **layout: Any) -> go.Figure:
    """The shared look: white template, tight margins, ``height`` pixels."""
    fig.update_layout(template=TEMPLATE, height=height, margin={"l": 10, "r": 10, "t": top, "b": 10}, **layout)
    return fig


def colour(method: str) -> str:
    return METHOD_COLOURS.get(method, "#777777")


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(arr), arr, np.nan)


def convergence(history: dict[str, Any], method: str, *, marker: int | None = None) -> go.Figure:
    """Loss and latent error per iteration, one line per restart; ``marker`` draws the replay position."""
    iters = np.asarray(history["iterations"])
    loss = np.asarray(history["loss"])
    err = history.get("latent_error")
    rows = 2 if err is not None else 1
    titles = ("data-fit loss ½‖A G(z) − y‖²", "relative latent error ‖z − z*‖ / ‖z*‖")[:rows]
    fig = make_subplots(rows=1, cols=rows, subplot_titles=titles)
    for r in range(loss.shape[1]):
        line = {"color": RESTART_COLOURS[r % len(RESTART_COLOURS)]}
        fig.add_scatter(
            x=iters,
            y=_finite(loss[:, r]),
            mode="lines+markers",
            marker={"size": 3},
            name=f"restart {r + 1}",
            legendgroup=f"r{r}",
            line=line,
            row=1,
            col=1,
        )
        if err is not None:
            fig.add_scatter(
                x=iters,
                y=_finite(np.asarray(err)[:, r]),
                mode="lines+markers",
                marker={"size": 3},
                name=f"restart {r + 1}",
                legendgroup=f"r{r}",
                showlegend=False,
                line=line,
                row=1,
                col=2,
            )
    fig.update_yaxes(type="log", exponentformat="power")
    fig.update_xaxes(title_text="iteration")
    if marker is not None:
        fig.add_vline(x=marker, line={"color": "#d6453d", "dash": "dot"})
    return _layout(
        fig, 320, top=40, legend={"orientation": "h", "y": -0.25}, clickmode="event+select", meta={"method": method}
    )


def pursuit_steps(steps_by_method: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """Per layer-wise step (output → z): the residual of the step and the error of the layer found."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("residual of the step", "relative error of the layer found"))
    for method, steps in steps_by_method.items():
        if not steps:
            continue
        labels = [_layer_label(s["layer"]) for s in steps]
        fig.add_bar(
            x=labels,
            y=[max(s["residual"], 1e-17) for s in steps],
            name=method,
            marker_color=colour(method),
            legendgroup=method,
            row=1,
            col=1,
        )
        fig.add_bar(
            x=labels,
            y=[max(s["error"], 1e-17) for s in steps],
            name=method,
            marker_color=colour(method),
            legendgroup=method,
            showlegend=False,
            row=1,
            col=2,
        )
    fig.update_yaxes(type="log", exponentformat="power")
    fig.update_xaxes(title_text="step (recovered layer, in order)")
    return _layout(fig, 320, top=40, barmode="group", legend={"orientation": "h", "y": -0.3})


def _layer_label(layer: int) -> str:
    return "z" if layer == 0 else f"x{layer}"


def support_scores(layers_by_method: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """Support precision and recall per hidden layer and method."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("support precision", "support recall"))
    for method, layers in layers_by_method.items():
        labels = [_layer_label(info["layer"]) for info in layers]
        for col, key in ((1, "precision"), (2, "recall")):
            fig.add_bar(
                x=labels,
                y=[info[key] for info in layers],
                name=method,
                marker_color=colour(method),
                legendgroup=method,
                showlegend=col == 1,
                row=1,
                col=col,
                text=[f"{info[key]:.3f}" for info in layers],
                textposition="outside",
            )
    fig.update_yaxes(range=[0, 1.12])
    return _layout(fig, 320, top=40, barmode="group", legend={"orientation": "h", "y": -0.2})


def support_map(maps: dict[str, np.ndarray], layer: int) -> go.Figure:
    """One hidden layer's units (columns) per method (rows): found, missed, false alarm, inactive."""
    names = list(maps)
    z = np.stack([np.asarray(maps[m], dtype=float) for m in names]) if names else np.zeros((0, 0))
    scale = []
    for k, c in enumerate(SUPPORT_COLOURS):
        scale += [[k / 4, c], [(k + 1) / 4, c]]
    labels = np.asarray(SUPPORT_LABELS, dtype=object)[z.astype(int)] if z.size else z
    fig = go.Figure(
        go.Heatmap(
            z=z,
            y=names,
            colorscale=scale,
            zmin=-0.5,
            zmax=3.5,
            customdata=labels,
            hovertemplate="%{y}, unit %{x}: %{customdata}<extra></extra>",
            colorbar={"tickvals": [0, 1, 2, 3], "ticktext": list(SUPPORT_LABELS), "title": None},
            xgap=0.5,
            ygap=2,
        )
    )
    title = f"support of {_layer_label(layer)} (unit by unit)"
    return _layout(fig, 90 + 36 * len(names), top=36, title=title, xaxis_title="unit")


def layer_errors(outcome_methods: dict[str, Any], certificate: list[dict[str, Any]]) -> go.Figure:
    """Per recovery step: each method's error there, with the certificate's verdicts as annotations."""
    fig = go.Figure()
    order = [c["layer"] for c in certificate]
    labels = [_layer_label(layer) for layer in order]
    for name, m in outcome_methods.items():
        if getattr(m, "error", None):
            continue
        errs = []
        for layer in order:
            errs.append(m.metrics.get("latent_error") if layer == 0 else m.layers[layer - 1]["error"])
        fig.add_scatter(
            x=labels, y=[max(e, 1e-17) for e in errs], mode="lines+markers", name=name, line={"color": colour(name)}
        )
    for label, c in zip(labels, certificate, strict=True):
        verdict = "identifiable" if c["identifiable"] else "NOT identifiable"
        paper = {"holds": "paper ✓", "fails": "paper ✗", "unknown": "paper ?"}[c["paper_unique"]]
        lbp = "LBP ✓" if c["lbp_guaranteed"] else "LBP ✗"
        fig.add_annotation(
            x=label, y=1.1, yref="paper", showarrow=False, text=f"{verdict}<br>{paper} · {lbp}", font={"size": 11}
        )
    fig.update_yaxes(type="log", exponentformat="power", title="relative error of the layer")
    fig.update_xaxes(title="recovery step (output → z)")
    return _layout(fig, 380, top=90)


def layer_state(estimate: np.ndarray, truth: np.ndarray, layer: int) -> go.Figure:
    """A layer's estimate against the truth, unit by unit (the pursuit's state after a step)."""
    est, tru = np.asarray(estimate, float), np.asarray(truth, float)
    units = np.arange(est.size)
    fig = go.Figure()
    fig.add_scatter(x=units, y=tru, mode="markers", name="true", marker={"color": "#bbbbbb", "size": 8})
    fig.add_scatter(x=units, y=est, mode="markers", name="estimate", marker={"color": "#d6453d", "size": 4})
    legend = {"orientation": "h", "y": 1.15, "x": 0.6}
    return _layout(
        fig, 260, top=36, title=f"{_layer_label(layer)}: estimate vs truth", xaxis_title="unit", legend=legend
    )


def signal_line(signals: dict[str, np.ndarray], mask: np.ndarray | None = None) -> go.Figure:
    """Non-image outputs as lines; hidden coordinates shaded."""
    fig = go.Figure()
    for name, x in signals.items():
        fig.add_scatter(y=np.asarray(x, float), mode="lines", name=name, line={"color": colour(name)})
    if mask is not None:
        hidden = np.flatnonzero(~np.asarray(mask, bool))
        if hidden.size:
            fig.add_scatter(
                x=hidden,
                y=np.asarray(next(iter(signals.values())))[hidden],
                mode="markers",
                name="hidden",
                marker={"color": "#d6453d", "size": 4, "symbol": "x"},
            )
    return _layout(fig, 280, xaxis_title="coordinate")


def verdict_fractions(summary: list[dict[str, Any]]) -> go.Figure:
    """Certificate summary over samples: per step, the fraction for which each verdict holds."""
    steps = [r for r in summary if r["layer"] != "all"]
    labels = [_layer_label(int(r["layer"])) for r in steps]
    fig = go.Figure()
    for key, name, c in VERDICTS:
        fig.add_bar(
            x=labels,
            y=[r[key] for r in steps],
            name=name,
            marker_color=c,
            text=[f"{r[key]:.2f}" for r in steps],
            textposition="outside",
        )
    fig.update_yaxes(range=[0, 1.15], title="fraction of samples")
    fig.update_xaxes(title="recovery step (output → z)")
    return _layout(fig, 330, barmode="group", legend={"orientation": "h", "y": -0.3})


def expansion_curve(rows: list[dict[str, Any]]) -> go.Figure:
    """Fraction of samples identifiable (all steps) against the expansion ratio."""
    fig = go.Figure()
    xs = [r["ratio"] for r in rows]
    for key, name, c in VERDICTS:
        fig.add_scatter(x=xs, y=[r[key] for r in rows], mode="lines+markers", name=name, line={"color": c})
    fig.add_vline(x=2, line={"dash": "dot", "color": "#999"}, annotation_text="ratio 2")
    fig.update_yaxes(range=[-0.05, 1.05], title="fraction of samples")
    fig.update_xaxes(title="expansion ratio r (widths 20, 20r, 20r², 20r³)")
    return _layout(fig, 330, legend={"orientation": "h", "y": -0.3})
