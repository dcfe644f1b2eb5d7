"""Widget state that survives page switches and widgets that are not drawn.

Streamlit forgets a widget's value when the widget is not drawn in a run: switching from Invert to
Theory and back, or a sidebar that stops early (an invalid generator) and never draws the Methods
form, reset those widgets to their defaults. :func:`keep` runs at the start of every run (before the
page) and re-stores every key of :data:`KEYS` / :data:`PREFIXES` as plain session state, the pattern
Streamlit documents for multipage apps; a widget drawn later in the run takes the value from there.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

KEYS = frozenset(
    {
        # invert page: sidebar
        "lesson",
        "gen_kind",
        "rnd_widths",
        "rnd_seed",
        "rnd_bias",
        "rnd_hidden",
        "rnd_output",
        "signal_kind",
        "latent_seed",
        "digit",
        "mask_kind",
        "missing",
        "mask_seed",
        "box_top",
        "box_left",
        "box_h",
        "box_w",
        "half",
        "meas_kind",
        "meas_m",
        "meas_seed",
        "noise_kind",
        "sigma",
        "snr",
        "noise_seed",
        "methods",
        "run_seed",
        # invert page: views
        "replay_method",
        "speed",
        "batch_n",
        "canvas_mode",
        # sweep page
        "sweep_gen",
        "sweep_gen_seed",
        "sweep_var",
        "sweep_meas",
        "sweep_values",
        "sweep_trials",
        "sweep_methods",
        "sweep_threshold",
        "sweep_seed",
        "phase_gen",
        "phase_x",
        "phase_x_values",
        "phase_y",
        "phase_y_values",
        "phase_methods",
        "phase_trials",
        # theory page
        "theory_samples",
        "theory_missing",
        "theory_sigma",
    }
)
"""Widget keys whose values outlive the page (buttons and uploaders are never here: they cannot be set)."""
PREFIXES = ("opt_", "view_")
"""Key prefixes of the same kind (a method's options, a method's replay view)."""


def keep() -> None:
    """Re-store every persistent widget value, so that Streamlit does not drop it when its widget is not drawn."""
    state = st.session_state
    for key in list(state.keys()):
        if key in KEYS or key.startswith(PREFIXES):
            value: Any = state[key]
            try:
                state[key] = value
            except Exception:  # a key some other widget kind owns (it cannot be set): leave it
                continue
