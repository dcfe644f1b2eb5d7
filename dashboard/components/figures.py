"""Plotly figure builders: pure functions of geninv's plain results (no Streamlit, no torch)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from geninv.viz import METHOD_COLORS, SUPPORT_COLORS, SUPPORT_LABELS, method_color, method_style

TEMPLATE = "plotly_white"
SUPPORT_COLOURS = SUPPORT_COLORS  # one palette, defined in geninv.viz
RESTART_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")  # Okabe-Ito
METHOD_COLOURS = METHOD_COLORS
THRESHOLD_LINE = {"color": "#555555", "dash": "dot", "width": 1}


VERDICTS = (
    ("identifiable_network", "identifiable (whole network)", "#000000"),
    ("identifiable", "layer-by-layer rank test", "#0072B2"),
    ("paper_unique_holds", "paper's condition holds", "#E69F00"),
    ("lbp_guaranteed", "LBP coherence guarantee", "#CC79A7"),
)
"""Certificate verdicts as (summary key, legend name, colour)."""


def _layout(fig: go.Figure, height: int, *, top: int = 10, **layout: Any) -> go.Figure:
    """The shared look: white template, tight margins, ``height`` pixels."""
    fig.update_layout(template=TEMPLATE, height=height, margin={"l": 10, "r": 10, "t": top, "b": 10}, **layout)
    return fig


def threshold_line(fig: go.Figure, threshold: float, *, row: int | None = None, col: int | None = None) -> None:
    """The success threshold as a dotted line on a log axis, labelled ("success ≤ 1e-3").

    The label is a separate annotation at log10 of the threshold: plotly places a line's own annotation
    at the raw value, which on a log axis lands near 1.
    """
    fig.add_hline(y=threshold, line=THRESHOLD_LINE, row=row, col=col)
    axis = "" if col in (None, 1) else str(col)
    fig.add_annotation(
        x=0.01,
        xref=f"x{axis} domain",
        y=math.log10(threshold),
        yref=f"y{axis}",
        text=f"success ≤ {threshold:g}",
        showarrow=False,
        xanchor="left",
        yanchor="bottom",
        font={"size": 11, "color": "#555555"},
    )


def colour(method: str) -> str:
    """The method's colour, the same on every page and in the README figures (geninv.viz)."""
    return method_color(method)


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(arr), arr, np.nan)


def convergence(
    history: dict[str, Any], method: str, *, marker: int | None = None, threshold: float | None = None
) -> go.Figure:
    """Loss and latent error per iteration, one line per restart; ``marker`` draws the replay position and
    ``threshold`` the success threshold on the latent error."""
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
        fig.add_vline(x=marker, line={"color": "#D55E00", "dash": "dot"})
    if err is not None and threshold is not None:
        threshold_line(fig, threshold, row=1, col=2)
    return _layout(
        fig, 300, top=40, legend={"orientation": "h", "y": -0.3}, clickmode="event+select", meta={"method": method}
    )


def pursuit_steps(steps_by_method: dict[str, list[dict[str, Any]]], *, threshold: float | None = None) -> go.Figure:
    """Per layer-wise step (output → z): the residual of the step and the error of the layer found."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("residual of the step", "relative error of the layer found"))
    for method, steps in steps_by_method.items():
        if not steps:
            continue
        labels = [f"{k + 1}: {_layer_label(s['layer'])}" for k, s in enumerate(steps)]
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
    fig.update_xaxes(title_text="step: recovered layer, in order")
    if threshold is not None:
        fig.add_hline(y=threshold, line=THRESHOLD_LINE, row=1, col=2)
    return _layout(fig, 300, top=40, barmode="group", legend={"orientation": "h", "y": -0.35})


def _layer_label(layer: int) -> str:
    return "z" if layer == 0 else f"x{layer}"


def support_scores(layers_by_method: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """Support precision and recall per hidden layer and method."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "precision: share of the units found active that are active",
            "recall: share of the active units that were found",
        ),
    )
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
    fig.update_annotations(font={"size": 12})
    return _layout(fig, 300, top=40, barmode="group", legend={"orientation": "h", "y": -0.2})


def _support_scale() -> list[list[Any]]:
    scale = []
    for k, c in enumerate(SUPPORT_COLOURS):
        scale += [[k / 4, c], [(k + 1) / 4, c]]
    return scale


def support_map(
    maps: dict[str, np.ndarray],
    layer: int,
    *,
    highlight: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> go.Figure:
    """One hidden layer's units (columns) per method (rows): found, missed, false alarm, inactive.

    ``highlight`` (a unit index) is framed, e.g. the unit clicked in the network picture. ``shape``
    ``(C, H, W)`` (a convolution's feature maps, :attr:`geninv.demo.Outcome.layer_shapes`) draws each
    method's map as C small H x W images, one per channel, instead of a strip.
    """
    if shape is not None and len(shape) == 3:
        return support_feature_maps(maps, layer, shape, highlight=highlight)
    names = list(maps)
    z = np.stack([np.asarray(maps[m], dtype=float) for m in names]) if names else np.zeros((0, 0))
    scale = _support_scale()
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
    if highlight is not None and names:
        fig.add_shape(
            type="rect",
            x0=highlight - 0.5,
            x1=highlight + 0.5,
            y0=-0.5,
            y1=len(names) - 0.5,
            line={"color": "#000000", "width": 3},
        )
        codes = ", ".join(f"{m}: {SUPPORT_LABELS[int(maps[m][highlight])]}" for m in names)
        title += f" — unit {highlight}: {codes}"
    return _layout(fig, 90 + 36 * len(names), top=36, title={"text": title, "font": {"size": 13}}, xaxis_title="unit")


def support_feature_maps(
    maps: dict[str, np.ndarray], layer: int, shape: tuple[int, ...], *, highlight: int | None = None
) -> go.Figure:
    """A convolutional layer's support as feature maps: one H x W image per channel (columns) and method (rows).

    ``maps[method]`` holds the layer's codes flattened in (channel, row, column) order, as the
    generator flattens its images; ``highlight`` (a flat unit index) is framed in its channel.
    """
    channels, height, width = (int(d) for d in shape)
    names = list(maps)
    titles = [
        f"{name} · channel {c + 1}" if len(names) > 1 else f"channel {c + 1}" for name in names for c in range(channels)
    ]
    fig = make_subplots(
        rows=max(len(names), 1),
        cols=channels,
        subplot_titles=titles,
        horizontal_spacing=0.02,
        vertical_spacing=0.25 / max(len(names), 1),
    )
    scale = _support_scale()
    where = None if highlight is None else np.unravel_index(int(highlight), (channels, height, width))
    for r, name in enumerate(names):
        codes = np.asarray(maps[name], dtype=float).reshape(channels, height, width)
        for c in range(channels):
            labels = np.asarray(SUPPORT_LABELS, dtype=object)[codes[c].astype(int)]
            fig.add_trace(
                go.Heatmap(
                    z=codes[c],
                    colorscale=scale,
                    zmin=-0.5,
                    zmax=3.5,
                    customdata=labels,
                    hovertemplate=f"{name}, channel {c + 1}, row %{{y}}, column %{{x}}: %{{customdata}}<extra></extra>",
                    showscale=r == 0 and c == 0,
                    colorbar={"tickvals": [0, 1, 2, 3], "ticktext": list(SUPPORT_LABELS), "title": None},
                    xgap=1,
                    ygap=1,
                    name=f"{name} channel {c + 1}",
                ),
                row=r + 1,
                col=c + 1,
            )
            if where is not None and c == int(where[0]):
                y, x = int(where[1]), int(where[2])
                fig.add_shape(
                    type="rect",
                    x0=x - 0.5,
                    x1=x + 0.5,
                    y0=y - 0.5,
                    y1=y + 0.5,
                    line={"color": "#000000", "width": 3},
                    row=r + 1,
                    col=c + 1,
                )
    # Images: row 0 on top, square pixels, no tick labels (the hover names the position).
    fig.update_yaxes(autorange="reversed", showticklabels=False, constrain="domain")
    fig.update_xaxes(showticklabels=False, constrain="domain")
    for k in range(len(names) * channels):  # each panel's y axis keeps its own x axis's scale
        fig.update_yaxes(scaleanchor=f"x{k + 1 if k else ''}", row=k // channels + 1, col=k % channels + 1)
    fig.update_annotations(font={"size": 11})
    title = f"support of {_layer_label(layer)}: {channels} feature maps of {height} x {width}"
    if where is not None and names:
        codes = ", ".join(f"{m}: {SUPPORT_LABELS[int(np.asarray(maps[m]).reshape(-1)[highlight])]}" for m in names)
        title += (
            f" — unit {highlight} (channel {int(where[0]) + 1}, row {int(where[1])}, column {int(where[2])}): {codes}"
        )
    panel = 170 if channels <= 4 else 120
    return _layout(fig, 70 + panel * max(len(names), 1), top=60, title={"text": title, "font": {"size": 13}})


def measurements(y: np.ndarray, *, n: int, kind: str) -> go.Figure:
    """The ``m`` measurements of a compressed-sensing run, one bar per row of A."""
    y = np.asarray(y, dtype=float)
    what = {"gaussian": "Gaussian measurements", "dct": "DCT coefficients"}.get(kind, "measurements")
    fig = go.Figure(go.Bar(x=np.arange(y.size), y=y, marker_color="#555555", name="y"))
    title = f"y: {y.size} of {n} measurements ({what})"
    return _layout(fig, 220, top=36, title={"text": title, "font": {"size": 13}}, xaxis_title="row of A", bargap=0)


def layer_errors(
    outcome_methods: dict[str, Any], certificate: list[dict[str, Any]], *, threshold: float | None = None
) -> go.Figure:
    """Per recovery step: each method's error there, with the layer-by-layer test of the step annotated.

    The step test is sufficient, not necessary, so a failed step reads "step test ✗", never "not
    identifiable": the whole-network verdict is shown beside the chart.
    """
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
            x=labels, y=[max(e, 1e-17) for e in errs], mode="lines+markers", name=name, **method_style(name)
        )
    for label, c in zip(labels, certificate, strict=True):
        step = "step test ✓" if c["identifiable"] else "step test ✗"
        paper = {"holds": "paper ✓", "fails": "paper ✗", "unknown": "paper ?"}[c["paper_unique"]]
        lbp = "LBP ✓" if c["lbp_guaranteed"] else "LBP ✗"
        rows = f"{c['rows']} eq. / {c['cardinality']} unknowns"
        fig.add_annotation(
            x=label,
            y=1.13,
            yref="paper",
            showarrow=False,
            text=f"{step}<br>{rows}<br>{paper} · {lbp}",
            font={"size": 11},
        )
    if threshold is not None:
        threshold_line(fig, threshold)
    fig.update_yaxes(type="log", exponentformat="power", title="relative error of the layer")
    fig.update_xaxes(title="recovery step (output → z)")
    return _layout(fig, 380, top=100)


def layer_state(estimate: np.ndarray, truth: np.ndarray, layer: int) -> go.Figure:
    """A layer's estimate against the truth, unit by unit (the pursuit's state after a step)."""
    est, tru = np.asarray(estimate, float), np.asarray(truth, float)
    units = np.arange(est.size)
    fig = go.Figure()
    fig.add_scatter(x=units, y=tru, mode="markers", name="true", marker={"color": "#BBBBBB", "size": 8})
    fig.add_scatter(x=units, y=est, mode="markers", name="estimate", marker={"color": "#D55E00", "size": 4})
    legend = {"orientation": "h", "y": 1.15, "x": 0.6}
    return _layout(
        fig, 240, top=36, title=f"{_layer_label(layer)}: estimate vs truth", xaxis_title="unit", legend=legend
    )


def signal_line(signals: dict[str, np.ndarray], mask: np.ndarray | None = None) -> go.Figure:
    """Non-image outputs as lines; hidden coordinates shaded."""
    fig = go.Figure()
    for k, (name, x) in enumerate(signals.items()):
        # The first signal (the original) wide and grey underneath; each method thin in its own colour and
        # dash on top, so that an exact reconstruction does not hide the original.
        line = {"color": "#BBBBBB", "width": 5} if k == 0 else method_style(name)["line"] | {"width": 1.5}
        fig.add_scatter(y=np.asarray(x, float), mode="lines", name=name, line=line)
    if mask is not None:
        hidden = np.flatnonzero(~np.asarray(mask, bool))
        if hidden.size:
            fig.add_scatter(
                x=hidden,
                y=np.asarray(next(iter(signals.values())))[hidden],
                mode="markers",
                name="hidden",
                marker={"color": "#D55E00", "size": 4, "symbol": "x"},
            )
    return _layout(fig, 280, xaxis_title="coordinate")


def verdict_fractions(summary: list[dict[str, Any]]) -> go.Figure:
    """Certificate summary over samples: per step, the fraction for which each step test holds, and the
    whole-network fraction (the deciding test) as a line across."""
    steps = [r for r in summary if r["layer"] != "all"]
    overall = next((r for r in summary if r["layer"] == "all"), {})
    labels = [_layer_label(int(r["layer"])) for r in steps]
    fig = go.Figure()
    for key, name, c in VERDICTS:
        if not steps or key not in steps[0]:
            continue
        fig.add_bar(
            x=labels,
            y=[r[key] for r in steps],
            name=name,
            marker_color=c,
            text=[f"{r[key]:.2f}" for r in steps],
            textposition="outside",
        )
    if "identifiable_network" in overall and labels:
        share = overall["identifiable_network"]
        fig.add_scatter(
            x=labels,
            y=[share] * len(labels),
            mode="lines",
            name=f"identifiable (whole network): {share:.0%}",
            line={"color": "#000000", "dash": "dash", "width": 2},
        )
    fig.update_yaxes(range=[0, 1.18], title="fraction of samples")
    fig.update_xaxes(title="recovery step (output → z)")
    return _layout(fig, 330, barmode="group", legend={"orientation": "h", "y": -0.3})


def expansion_curve(rows: list[dict[str, Any]]) -> go.Figure:
    """Fraction of samples for which each test holds (at every step) against the expansion ratio."""
    fig = go.Figure()
    xs = [r["ratio"] for r in rows]
    # Tests often agree (the whole network and the step test coincide above r = 2.5): earlier lines are
    # drawn wider and dashed differently, so that none hides under another.
    dashes = ("solid", "dash", "dot", "dashdot")
    for k, (key, name, c) in enumerate(VERDICTS):
        if not rows or key not in rows[0]:
            continue
        fig.add_scatter(
            x=xs,
            y=[r[key] for r in rows],
            mode="lines+markers",
            name=name,
            line={"color": c, "width": 7 - 1.5 * k, "dash": dashes[k]},
            marker={"size": 11 - 2 * k},
            opacity=0.85,
        )
    fig.add_vline(x=2, line={"dash": "dot", "color": "#999"}, annotation_text="ratio 2")
    fig.update_yaxes(range=[-0.05, 1.05], title="fraction of samples")
    fig.update_xaxes(title="expansion ratio r (widths 20, 20r, 20r², 20r³)")
    return _layout(fig, 330, legend={"orientation": "h", "y": -0.3})


# ---------------------------------------------------------------------------- the network picture
NETWORK_CODES = {
    0: ("inactive", SUPPORT_COLOURS[0], "circle"),
    1: ("found (true positive)", SUPPORT_COLOURS[1], "circle"),
    2: ("missed", SUPPORT_COLOURS[2], "circle"),
    3: ("false alarm", SUPPORT_COLOURS[3], "x"),
    4: ("not recovered yet", "#BBBBBB", "circle-open"),
    5: ("observed pixel", "#555555", "square"),
    6: ("hidden pixel", "#E6503C", "square-open"),  # the red of hidden pixels in the images
    7: ("latent recovered (error ≤ 1e-3)", SUPPORT_COLOURS[1], "diamond"),
    8: ("latent estimated, not recovered", SUPPORT_COLOURS[3], "diamond-open"),
    9: ("output seen only through A (compressed sensing)", "#999999", "square-dot"),
}
"""Codes of the network picture: the four support codes, then the states of the other units."""
NETWORK_ROWS = 56
"""Units per column of a layer's block in the network picture."""


def network_positions(widths: tuple[int, ...], *, rows: int = NETWORK_ROWS) -> list[np.ndarray]:
    """Per layer (z first) the (units, 2) array of its units' (x, y) in :func:`network`.

    Layers are blocks of columns of ``rows`` units, left to right; a square output is drawn as its
    image (a side x side grid squeezed into the same height).
    """
    out, x = [], 0.0
    for layer, n in enumerate(widths):
        n = int(n)
        side = math.isqrt(n)
        units = np.arange(n)
        if layer == len(widths) - 1 and side * side == n and side > 1:
            r, c = np.divmod(units, side)
            scale = (rows - 1) / (side - 1)
            pos = np.stack([x + c * scale / 2, -r * scale], axis=1)
            width = (side - 1) * scale / 2 + 1
        else:
            c, r = np.divmod(units, rows)
            pos = np.stack([x + c, -r], axis=1).astype(float)
            width = max(1, -(-n // rows))
        out.append(pos)
        x += width + 2.5
    return out


def network_unit_at(widths: tuple[int, ...], x: float, y: float, *, rows: int = NETWORK_ROWS) -> tuple[int, int] | None:
    """The (layer, unit) drawn nearest to (x, y) in :func:`network` (within a third of a cell), or None."""
    best, best_d = None, 0.35
    for layer, pos in enumerate(network_positions(widths, rows=rows)):
        d = np.hypot(pos[:, 0] - x, pos[:, 1] - y)
        k = int(np.argmin(d))
        if d[k] < best_d:
            best, best_d = (layer, k), float(d[k])
    return best


def network(
    widths: tuple[int, ...],
    codes: list[np.ndarray],
    *,
    title: str = "",
    selected: tuple[int, int] | None = None,
    rows: int = NETWORK_ROWS,
) -> go.Figure:
    """The generator as blocks of units, z on the left and the output on the right, each unit coloured by
    its state (``codes[layer]``: see :data:`NETWORK_CODES`); ``selected`` (layer, unit) is ringed.

    A click on a unit selects its point; :func:`network_unit_at` turns the point's x, y back into
    (layer, unit).
    """
    positions = network_positions(widths, rows=rows)
    names = ["z"] + [f"x{k}" for k in range(1, len(widths) - 1)] + ["output"]
    fig = go.Figure()
    for code, (label, colour_, symbol) in NETWORK_CODES.items():
        xs, ys, text = [], [], []
        for layer, (pos, arr) in enumerate(zip(positions, codes, strict=True)):
            hit = np.flatnonzero(np.asarray(arr).reshape(-1) == code)
            if hit.size:
                xs.append(pos[hit, 0])
                ys.append(pos[hit, 1])
                text += [f"{names[layer]} unit {u}" for u in hit]
        if not text:
            continue
        fig.add_scatter(
            x=np.concatenate(xs),
            y=np.concatenate(ys),
            mode="markers",
            name=label,
            text=text,
            hovertemplate="%{text}: " + label + "<extra></extra>",
            marker={"color": colour_, "symbol": symbol, "size": 6, "line": {"color": colour_, "width": 1}},
        )
    for layer, pos in enumerate(positions):
        fig.add_annotation(
            x=float(pos[:, 0].min() + pos[:, 0].max()) / 2,
            y=2,
            text=f"<b>{names[layer]}</b> ({widths[layer]})",
            showarrow=False,
            font={"size": 12},
        )
    if selected is not None:
        layer, unit = selected
        if 0 <= layer < len(widths) and 0 <= unit < widths[layer]:
            x, y = positions[layer][unit]
            fig.add_scatter(
                x=[x],
                y=[y],
                mode="markers",
                name=f"selected: {names[layer]} unit {unit}",
                marker={"size": 16, "symbol": "circle-open", "color": "#000000", "line": {"width": 3}},
                hoverinfo="skip",
            )
    fig.update_xaxes(visible=False, fixedrange=True)
    fig.update_yaxes(visible=False, range=[-rows - 0.5, 3.5], fixedrange=True)
    return _layout(
        fig,
        340,
        top=40,
        title={"text": title, "font": {"size": 14}},
        legend={"orientation": "h", "y": -0.02, "font": {"size": 11}},
        clickmode="event+select",
        dragmode=False,
    )


# ---------------------------------------------------------------------------- research views
def batch_rates(summary: list[dict[str, Any]]) -> go.Figure:
    """Success rate per method with its confidence interval (error bars)."""
    fig = go.Figure()
    for row in summary:
        rate = row["success_rate"]
        fig.add_bar(
            x=[row["method"]],
            y=[rate],
            name=row["method"],
            marker_color=colour(row["method"]),
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [row["success_high"] - rate],
                "arrayminus": [rate - row["success_low"]],
                "color": "#333333",
            },
            text=[f"{row['recovered']}/{row['samples']}"],
            textposition="outside",
            hovertemplate=(
                f"{row['method']}: {rate:.0%} (95% CI {row['success_low']:.0%} – {row['success_high']:.0%})"
                "<extra></extra>"
            ),
        )
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%", title="success rate (95% Wilson interval)")
    return _layout(fig, 300, showlegend=False)


def batch_errors(errors: dict[str, np.ndarray], *, threshold: float | None = None) -> go.Figure:
    """The latent error of every sample per method (points and a box), on a log axis."""
    fig = go.Figure()
    for method, err in errors.items():
        values = np.maximum(_finite(err), 1e-17)
        fig.add_box(
            y=values,
            name=method,
            boxpoints="all",
            jitter=0.4,
            pointpos=0,
            marker={"color": colour(method), "size": 5},
            line={"color": colour(method)},
            fillcolor="rgba(0,0,0,0)",
        )
    if threshold is not None:
        threshold_line(fig, threshold)
    fig.update_yaxes(type="log", exponentformat="power", title="relative latent error")
    return _layout(fig, 300, showlegend=False)


def phase_map(grid: dict[str, Any], method: str, *, x_label: str, y_label: str) -> go.Figure:
    """Success rate per cell as a heat map, with the certificate's predicted boundaries (where the share
    of samples it calls identifiable drops below one half, along y) drawn over it."""
    xs, ys = list(grid["x"]), list(grid["y"])
    success = np.asarray(grid["success"], dtype=float)
    text = np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.0%}")(success)
    fig = go.Figure(
        go.Heatmap(
            x=[str(x) for x in xs],
            y=[str(y) for y in ys],
            z=success,
            zmin=0,
            zmax=1,
            colorscale=[[0, "#FFFFFF"], [1, "#0072B2"]],
            text=text,
            texttemplate="%{text}",
            customdata=np.dstack([grid["network"], grid["layerwise"]]),
            hovertemplate=(
                f"{x_label} %{{x}}, {y_label} %{{y}}<br>{method} success %{{z:.0%}}<br>"
                "certificate: identifiable %{customdata[0]:.0%} (network), %{customdata[1]:.0%} (layer by layer)"
                "<extra></extra>"
            ),
            colorbar={"title": "success", "tickformat": ".0%"},
        )
    )

    def _y_position(value: float | None) -> float | None:
        # categorical axis: index positions, interpolated between neighbouring values
        if value is None:
            return None
        if value <= ys[0]:
            return -0.5
        if value >= ys[-1]:
            return len(ys) - 0.5
        for k in range(len(ys) - 1):
            if ys[k] <= value <= ys[k + 1]:
                return k + (value - ys[k]) / (ys[k + 1] - ys[k])
        return None

    for key, name, dash in (
        ("boundary_network", "certificate: identifiable (whole network) above ½", "solid"),
        ("boundary_layerwise", "certificate: layer-by-layer test above ½", "dash"),
    ):
        px, py = [], []
        for j, b in enumerate(grid[key]):
            yb = _y_position(b)
            if yb is None:
                continue
            px += [j - 0.5, j + 0.5]
            py += [yb, yb]
        fig.add_scatter(
            x=px,
            y=py,
            mode="lines",
            name=name,
            line={"color": "#D55E00" if dash == "solid" else "#000000", "width": 3, "dash": dash},
            xaxis="x2",
            yaxis="y2",
            hoverinfo="skip",
        )
    fig.update_layout(
        xaxis={"title": x_label, "type": "category"},
        yaxis={"title": y_label, "type": "category"},
        xaxis2={"overlaying": "x", "range": [-0.5, len(xs) - 0.5], "visible": False},
        yaxis2={"overlaying": "y", "range": [-0.5, len(ys) - 0.5], "visible": False},
    )
    return _layout(
        fig,
        380,
        top=40,
        title={"text": f"{method}: success rate", "font": {"size": 14}},
        legend={"orientation": "h", "y": -0.25},
    )


def network_codes(
    widths: tuple[int, ...],
    mask: np.ndarray | None,
    *,
    steps: list[dict[str, Any]] | None = None,
    after: int = 0,
    frame_maps: list[np.ndarray] | None = None,
    frame: int | None = None,
    frame_error: float | None = None,
    threshold: float = 1e-3,
    final_maps: list[np.ndarray] | None = None,
    measured: bool = False,
) -> list[np.ndarray]:
    """The codes of :func:`network` for one replay position.

    A layer-wise method after ``after`` of its ``steps`` (0 = only the measurements): every layer a
    step has recovered shows its support against the truth, the others "not recovered yet". An
    iterative method at ``frame`` of ``frame_maps`` (per hidden layer, (frames, units)): every hidden
    layer's support at that iterate. z, once estimated, is "recovered" when its relative error (the
    step's ``error``, or ``frame_error``) is at most ``threshold``. After the last step, ``final_maps``
    (the method's final supports, per hidden layer) replace the steps' own: a joint refit of z at the
    end re-decides every layer's pattern. ``measured``: the output is seen only through a measurement
    operator (compressed sensing), so no pixel is observed on its own.
    """

    def latent(error: float | None) -> int:
        return 7 if error is not None and error <= threshold else 8

    n_hidden = len(widths) - 2
    out = np.full(widths[-1], 9 if measured else 5, dtype=np.int8)
    if mask is not None and not measured:
        out[~np.asarray(mask, dtype=bool)] = 6
    codes = [np.full(widths[0], 4, dtype=np.int8)] + [np.full(w, 4, dtype=np.int8) for w in widths[1:-1]] + [out]
    if frame_maps is not None and frame is not None:
        for i in range(n_hidden):
            codes[i + 1] = np.asarray(frame_maps[i][frame], dtype=np.int8)
        codes[0][:] = latent(frame_error)
    for step in (steps or [])[:after]:
        if step["layer"] == 0:
            codes[0][:] = latent(step.get("error"))
        elif step.get("map") is not None:
            codes[step["layer"]] = np.asarray(step["map"], dtype=np.int8)
    if steps and after >= len(steps) and final_maps is not None:
        for i, final in enumerate(final_maps):
            codes[i + 1] = np.asarray(final, dtype=np.int8)
    return codes


def times(x: Any) -> str:
    """A gain or condition number for a label: ``707``, ``1,534``, ``2.1e+07``, ``∞`` (``–`` when missing)."""
    if x is None:
        return "–"
    x = float(x)
    if not math.isfinite(x):
        return "∞"
    return f"{x:,.0f}" if x >= 10 and x < 1e6 else (f"{x:.2g}" if x < 10 else f"{x:.1e}")
