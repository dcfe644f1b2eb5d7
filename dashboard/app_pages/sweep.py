"""Sweep page: success rate and error against one varied parameter per method, and 2-D phase maps."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import safety
from dashboard.components import figures
from geninv import BudgetError, GeninvError, charts, limits, methods, phases, sweeps

st.title("Sweep a parameter")
st.caption(
    "The same signals for every method at each value; success = relative latent error ≤ threshold. "
    "Larger sweeps: `geninv sweep --help` (process pool, Dask cluster, resume)."
)

VARIABLES = {
    "missing": "fraction of pixels missing",
    "noise_db": "noise (SNR in dB; 1000 = clean)",
    "box": "side of a hidden centred box (pixels)",
    "expansion": "expansion ratio r (random generators)",
}
SWEEP_VARIABLES = VARIABLES | {"measurements": "measurements m (compressed sensing)"}
"""The 1-D sweep's variables: the phase map's, and the number of measurements of an operator."""
MEASUREMENT_LABELS = {
    "gaussian": "Gaussian matrix (m × n)",
    "dct": "m random 2-D DCT coefficients",
    "subsample": "m random pixels",
}
DEFAULT_VALUES = {
    "missing": "0, 0.2, 0.4, 0.6",
    "noise_db": "1000, 30, 20, 10",
    "box": "0, 6, 10, 14",
    "expansion": "1.5, 2, 2.5, 3",
    "measurements": "20, 50, 100, 200",
}
# With expansion as the variable the generator is random (widths 20, 20r, 20r², 20r³); only its seed is chosen.
EXPANSION_SPEC = "random:20-40-80-160:seed={seed}"


def _init(key: str, default):
    st.session_state.setdefault(key, default)
    return key


def _values(text: str, default: str) -> tuple[float, ...] | None:
    text = text.strip() or default
    try:
        return tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        safety.show_error(f"Values must be numbers separated by commas. Got {text!r}.")
        return None


def _records_dir() -> Path:
    """This session's private folder for sweep records (mode 0700; removed when the session is gone)."""
    folder = st.session_state.get("_sweep_dir")
    if folder is None:
        folder = st.session_state["_sweep_dir"] = tempfile.TemporaryDirectory(prefix="geninv-sweep-")
    return Path(folder.name)


tab_sweep, tab_phase = st.tabs(["One variable", "Phase map: two variables"])

# ============================================================================ 1-D sweeps
with tab_sweep:
    # The variable is chosen outside the form: with the expansion ratio the generator field becomes a seed.
    variable = st.selectbox(
        "Variable", list(SWEEP_VARIABLES), format_func=SWEEP_VARIABLES.get, key=_init("sweep_var", "missing")
    )
    # Enter in a field does not submit: a sweep starts only from the button.
    with st.form("sweep_form", enter_to_submit=False):
        c1, c2 = st.columns(2)
        if variable == "expansion":
            gen_seed = c1.number_input("Weight seed", 0, 10**6, key=_init("sweep_gen_seed", 0))
            generator = EXPANSION_SPEC.format(seed=int(gen_seed))
            c1.caption(
                "With the expansion ratio as the variable the generator is random (relu, no bias) with widths "
                "20, 20r, 20r², 20r³; only its weight seed is chosen here."
            )
        else:
            generator = c1.text_input(
                "Generator",
                key=_init("sweep_gen", "random:20-128-392-784"),
                help="'mnist', 'mnist-conv' or 'random:20-128-392-784[:seed=0][:bias][:hidden=..][:output=..]'",
            )
        measurement = "gaussian"
        if variable == "measurements":
            measurement = c1.selectbox(
                "Measurement operator",
                sweeps.MEASUREMENT_KINDS,
                format_func=MEASUREMENT_LABELS.get,
                key=_init("sweep_meas", "gaussian"),
                help="y = A G(z) with A of m rows, drawn afresh for each value from the seed (DCT: image outputs).",
            )
        values_text = c2.text_input(
            "Values (comma-separated; empty = the variable's defaults)", key=_init("sweep_values", "")
        )
        trials = c2.number_input("Trials per value", 1, limits.budget().max_batch, key=_init("sweep_trials", 10))
        chosen = st.multiselect(
            "Methods", [*methods(), sweeps.ORACLE], key=_init("sweep_methods", ["gd", "latent-pursuit", "hybrid"])
        )
        threshold = c1.number_input("Success threshold", 0.0, 1.0, format="%g", key=_init("sweep_threshold", 1e-3))
        seed = c2.number_input("Seed", 0, 10**6, key=_init("sweep_seed", 0))
        start = st.form_submit_button("Run sweep", type="primary")

    def _config() -> sweeps.SweepConfig | None:
        values = _values(values_text, DEFAULT_VALUES[variable])
        if values is None:
            return None
        try:
            return sweeps.SweepConfig(
                generator=generator.strip(),
                variable=variable,
                values=values,
                methods=tuple(chosen),
                trials=int(trials),
                seed=int(seed),
                threshold=float(threshold),
                measurement=measurement,
            )
        except GeninvError as exc:
            safety.show_error(exc)
            return None

    def _records_path(config: sweeps.SweepConfig) -> Path:
        return _records_dir() / f"{config.key}.jsonl"

    def _run(config: sweeps.SweepConfig) -> None:
        """Run (or continue: tasks already recorded in this session are kept) a sweep within the budget."""
        budget = limits.budget()
        try:
            cost = budget.check_sweep(config)
        except BudgetError as exc:
            safety.refuse("sweep", exc)
            return
        st.session_state["sweep_config"] = config
        st.caption(f"Estimated cost of this sweep: {cost.describe(budget)}.")
        stop = st.empty()
        stop.button(
            "Stop",
            key="sweep_stop",
            icon=":material/stop_circle:",
            help="Stops after the task in flight; the records so far stay.",
        )
        bar = st.progress(0.0, text="Starting…")
        try:
            sweeps.run_sweep(config, progress=safety.reporter(bar, every=0.0), records_path=_records_path(config))
        except GeninvError as exc:
            safety.show_error(f"The sweep failed: {exc}")
        bar.empty()
        stop.empty()

    if start:
        new_config = _config()
        if new_config is not None:
            _run(new_config)
    elif st.session_state.pop("_sweep_resume", False):
        _run(st.session_state["sweep_config"])

    config = st.session_state.get("sweep_config")
    records = sweeps.read_records(config, _records_path(config)) if config is not None else []
    if config is None:
        st.info("Choose a generator, a variable and methods, then **Run sweep**.")
    elif not records:
        st.warning("No records yet (stopped before the first task finished).")
    else:
        total = len(config.values) * len(config.methods) * config.trials
        if len(records) < total:
            st.warning(f"Stopped: {len(records)} of {total} records so far.")
            if st.button("Resume", key="sweep_resume_btn"):
                st.session_state["_sweep_resume"] = True
                st.rerun()
        if config.variable == "expansion":
            st.caption(f"Generator: random, widths 20, 20r, 20r², 20r³ ({config.generator.split(':', 2)[-1]}).")
        frame = pd.DataFrame(records)
        c1, c2 = st.columns(2)
        c1.plotly_chart(charts.figure(records, "success_rate", title="success rate"), width="stretch")
        c2.plotly_chart(
            charts.figure(records, "median_error", title="median latent error", threshold=config.threshold),
            width="stretch",
        )
        st.caption(
            "Each method keeps its colour, dash and marker on every page; where methods tie, the earlier one is "
            "drawn wider underneath, and hovering lists every method at that value."
        )
        errors = {
            k: st.column_config.NumberColumn(k.replace("_", " "), format="%.2e")
            for k in ("median_error", "q25_error", "q75_error")
        }
        st.dataframe(pd.DataFrame(sweeps.summarize(records)), hide_index=True, width="stretch", column_config=errors)
        st.download_button(
            "Records as CSV", frame.to_csv(index=False), f"sweep_{config.key}.csv", "text/csv", key="sweep_csv"
        )

# ============================================================================ 2-D phase maps
with tab_phase:
    st.caption(
        "Success rate over a grid of two variables, with the certificate's prediction drawn over it: the line "
        "where the share of samples it calls identifiable drops below one half (whole network: solid; "
        "layer-by-layer test: dashed)."
    )
    with st.form("phase_form", enter_to_submit=False):
        c1, c2, c3 = st.columns(3)
        x_var = c1.selectbox(
            "x variable", list(VARIABLES), format_func=VARIABLES.get, key=_init("phase_x", "expansion")
        )
        x_text = c1.text_input("x values", key=_init("phase_x_values", "1.25, 1.5, 1.75, 2, 2.5, 3"))
        y_var = c2.selectbox("y variable", list(VARIABLES), format_func=VARIABLES.get, key=_init("phase_y", "missing"))
        y_text = c2.text_input("y values", key=_init("phase_y_values", "0, 0.2, 0.4, 0.6, 0.8"))
        gen_text = c3.text_input(
            "Generator (its seed only, when a variable is the expansion)",
            key=_init("phase_gen", "random:20-40-80-160:seed=0"),
        )
        phase_methods = c3.multiselect(
            "Methods", [*methods(), sweeps.ORACLE], key=_init("phase_methods", ["latent-pursuit"])
        )
        phase_trials = c3.number_input("Trials per cell", 1, limits.budget().max_batch, key=_init("phase_trials", 10))
        go = st.form_submit_button("Run phase map", type="primary")
    if go:
        xs, ys = _values(x_text, ""), _values(y_text, "")
        phase_config = None
        if xs is not None and ys is not None:
            try:
                phase_config = phases.PhaseConfig(
                    generator=gen_text.strip(),
                    x_variable=x_var,
                    x_values=xs,
                    y_variable=y_var,
                    y_values=ys,
                    methods=tuple(phase_methods),
                    trials=int(phase_trials),
                )
            except GeninvError as exc:
                safety.show_error(exc)
        if phase_config is not None:
            budget = limits.budget()
            try:
                cost = budget.check_phase(phase_config)
            except BudgetError as exc:
                safety.refuse("phase map", exc)
                phase_config = None
        if phase_config is not None:
            st.caption(f"Estimated cost of this phase map: {cost.describe(budget)}.")
            stop = st.empty()
            stop.button("Stop", key="phase_stop", icon=":material/stop_circle:", help="Stops; finished cells stay.")
            bar = st.progress(0.0, text="Starting…")
            progress = safety.reporter(bar, every=0.0)
            cells: list = []
            st.session_state["_phase"] = (phase_config, cells)  # fills cell by cell: a Stop keeps what is done
            try:
                done = 0
                for ix, x in enumerate(phase_config.x_values):
                    for iy, y in enumerate(phase_config.y_values):
                        cells.extend(phases.run_phase_cell(phase_config, ix, iy))
                        done += 1
                        message = f"{phase_config.x_variable}={x:g}, {phase_config.y_variable}={y:g}"
                        if progress(done / phase_config.cells, message) is False:
                            break
                    else:
                        continue
                    break
            except GeninvError as exc:
                safety.show_error(f"The phase map failed: {exc}")
            bar.empty()
            stop.empty()
    stored = st.session_state.get("_phase")
    if stored is None:
        st.info("Choose two variables and their values, then **Run phase map**.")
    elif stored[1]:
        config, records = stored
        if len(records) < config.cells * len(config.methods) * config.trials:
            st.warning(f"Stopped: {len(records) // (len(config.methods) * config.trials)} of {config.cells} cells.")
        cols = st.columns(min(len(config.methods), 2))
        for k, method in enumerate(config.methods):
            grid = phases.phase_grid(records, method)
            cols[k % len(cols)].plotly_chart(
                figures.phase_map(
                    grid, method, x_label=VARIABLES[config.x_variable], y_label=VARIABLES[config.y_variable]
                ),
                width="stretch",
                key=f"phase_{method}",
            )
        st.caption(
            f"{config.trials} signals per cell; success = relative latent error ≤ {config.threshold:g}. "
            "Hover a cell for the certificate's shares. Above the solid line most samples are not identifiable: no "
            "method can succeed there. Between the dashed and the solid line only the layer-by-layer test fails: "
            "a joint method (gd, hybrid) can still succeed where a purely layer-wise one may not."
        )
        st.download_button(
            "Phase map records as CSV",
            pd.DataFrame(records).to_csv(index=False),
            "phase_map.csv",
            "text/csv",
            key="phase_csv",
        )
