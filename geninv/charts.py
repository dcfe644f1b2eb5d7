"""The sweep chart: success rate, median error or certificate rates against the swept variable.

:func:`figure` draws a sweep's records as a plotly figure; the CLI writes it as HTML
(:func:`geninv.sweeps.write_results`), the dashboard's Sweep page and ``docs/results`` show it.
plotly is imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from geninv._validation import check_choice
from geninv.errors import InvalidValueError
from geninv.sweeps import CLEAN_DB, summarize

_LABELS = {
    "noise_db": "signal-to-noise ratio",
    "missing": "fraction of pixels missing",
    "box": "side of the hidden centre box (pixels)",
    "expansion": "expansion ratio r (widths 20, 20r, 20r², 20r³)",
    "measurements": "measurements m",
}


def _x_values(variable: str, rows: Sequence[dict[str, Any]]) -> list:
    """x coordinates of summary rows; SNRs become categories ("clean", "40 dB"...) so that the
    clean value (1000 dB) does not squash the noisy ones into a corner of the axis."""
    if variable == "noise_db":
        return ["clean" if r["value"] >= CLEAN_DB else f"{r['value']:g} dB" for r in rows]
    return [r["value"] for r in rows]


def _ordered(variable: str, rows) -> list[dict[str, Any]]:
    # Noise reads from clean to noisiest, left to right.
    return sorted(rows, key=lambda r: r["value"], reverse=variable == "noise_db")


def figure(
    records: Sequence[dict[str, Any]],
    metric: str = "success_rate",
    *,
    title: str | None = None,
    threshold: float | None = None,
):
    """A plotly line chart of ``metric`` ("success_rate" or "median_error") against the variable.

    Every method has its colour, dash and marker from :data:`geninv.viz.METHOD_COLORS` (the same on
    every page of the dashboard). ``threshold`` (the success threshold) is drawn as a horizontal
    line on the error chart.
    """
    import plotly.graph_objects as go

    from geninv.viz import method_style

    check_choice("metric", metric, ("success_rate", "median_error", "identifiable_rate"))
    if not records:
        raise InvalidValueError("The 'records' parameter must hold at least one record. Got none.")
    summary = summarize(records)
    variable = records[0]["variable"]
    fig = go.Figure()
    if metric == "identifiable_rate":
        rows = _ordered(
            variable, [r for r in summary if r["method"] == summary[0]["method"] and "identifiable_rate" in r]
        )
        for key, name, grey in (
            ("identifiable_network_rate", "identifiable (whole network)", "#000000"),
            ("identifiable_rate", "layer-by-layer rank test", "#666666"),
            ("paper_unique_rate", "paper's condition", "#999999"),
            ("lbp_guaranteed_rate", "LBP coherence guarantee", "#BBBBBB"),
        ):
            if key not in rows[0]:
                continue  # records written before the whole-network test was recorded
            fig.add_scatter(
                x=_x_values(variable, rows),
                y=[r[key] for r in rows],
                mode="lines+markers",
                name=name,
                line={"dash": "dot", "color": grey},
                marker={"color": grey, "symbol": "circle-open"},
            )
        for method in dict.fromkeys(r["method"] for r in summary):
            rows = _ordered(variable, [r for r in summary if r["method"] == method])
            fig.add_scatter(
                x=_x_values(variable, rows),
                y=[r["success_rate"] for r in rows],
                mode="lines+markers",
                name=f"{method} success",
                **method_style(method),
            )
    else:
        for method in dict.fromkeys(r["method"] for r in summary):
            rows = _ordered(variable, [r for r in summary if r["method"] == method])
            ys = [r[metric] for r in rows]
            if metric == "median_error":  # a log axis cannot draw an exact 0 (the clean oracle): leave a gap
                ys = [y if y > 0 else None for y in ys]
            fig.add_scatter(
                x=_x_values(variable, rows),
                y=ys,
                mode="lines+markers",
                name=method,
                **method_style(method),
            )
    fig.update_layout(
        title=title,
        xaxis_title=_LABELS[variable],
        yaxis_title={
            "success_rate": "success rate",
            "median_error": "median relative latent error",
            "identifiable_rate": "fraction of samples",
        }[metric],
        template="plotly_white",
        legend_title="method",
    )
    if metric == "median_error":
        fig.update_yaxes(type="log", exponentformat="power")
        if threshold is not None and threshold > 0:
            # The label is its own annotation at log10(threshold): a line's annotation would sit at the raw
            # value, which on a log axis lands near 1.
            fig.add_hline(y=threshold, line={"color": "#555555", "dash": "dot", "width": 1})
            fig.add_annotation(
                x=1,
                xref="x domain",
                y=math.log10(threshold),
                yref="y",
                text=f"success threshold {threshold:g}",
                showarrow=False,
                xanchor="right",
                yanchor="bottom",
            )
    else:
        fig.update_yaxes(range=[-0.05, 1.05])
    if variable == "noise_db":
        fig.update_xaxes(type="category")
    # Methods often tie (all at 100%): earlier traces are drawn wider and every method has its own
    # dash and marker, so that none hides under another; hovering lists every method at that value.
    n = len(fig.data)
    for k, trace in enumerate(fig.data):
        trace.line.width = 2 + 1.5 * (n - 1 - k)
        trace.marker.size = 6 + 2 * (n - 1 - k)
        trace.opacity = 0.85
    fig.update_layout(hovermode="x unified")
    return fig
