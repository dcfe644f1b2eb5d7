"""Sweep page: success rate and error against one varied parameter, per method."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import safety
from geninv import BudgetError, GeninvError, experiments, limits, methods

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
DEFAULT_VALUES = {
    "missing": "0, 0.2, 0.4, 0.6",
    "noise_db": "1000, 30, 20, 10",
    "box": "0, 6, 10, 14",
    "expansion": "1.5, 2, 2.5, 3",
}


def _records_dir() -> Path:
    """This session's private folder for sweep records (mode 0700; removed when the session is gone)."""
    folder = st.session_state.get("_sweep_dir")
    if folder is None:
        folder = st.session_state["_sweep_dir"] = tempfile.TemporaryDirectory(prefix="geninv-sweep-")
    return Path(folder.name)


# Enter in a field does not submit: a sweep starts only from the button.
with st.form("sweep_form", enter_to_submit=False):
    c1, c2 = st.columns(2)
    generator = c1.text_input(
        "Generator",
        "random:20-128-392-784",
        key="sweep_gen",
        help="'mnist' or 'random:20-128-392-784[:seed=0][:bias][:hidden=..][:output=..]'",
    )
    variable = c2.selectbox("Variable", list(VARIABLES), format_func=VARIABLES.get, key="sweep_var")
    values_text = c1.text_input("Values (comma-separated; empty = the variable's defaults)", "", key="sweep_values")
    trials = c2.number_input("Trials per value", 1, limits.budget().max_batch, 10, key="sweep_trials")
    chosen = st.multiselect(
        "Methods", [*methods(), experiments.ORACLE], ["gd", "latent-pursuit", "hybrid"], key="sweep_methods"
    )
    threshold = c1.number_input("Success threshold", 0.0, 1.0, 1e-3, format="%g", key="sweep_threshold")
    seed = c2.number_input("Seed", 0, 10**6, 0, key="sweep_seed")
    start = st.form_submit_button("Run sweep", type="primary")


def _config() -> experiments.SweepConfig | None:
    text = values_text.strip() or DEFAULT_VALUES[variable]
    try:
        values = tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        safety.show_error(f"Values must be numbers separated by commas. Got {text!r}.")
        return None
    try:
        return experiments.SweepConfig(
            generator=generator.strip(),
            variable=variable,
            values=values,
            methods=tuple(chosen),
            trials=int(trials),
            seed=int(seed),
            threshold=float(threshold),
        )
    except GeninvError as exc:
        safety.show_error(exc)
        return None


def _run(config: experiments.SweepConfig) -> None:
    """Run (or continue: tasks already recorded in this session are kept) a sweep within the budget."""
    budget = limits.budget()
    try:
        cost = budget.check_sweep(config)
    except BudgetError as exc:
        safety.log.info("sweep refused: %s", str(exc)[:300])
        safety.show_error(f"This sweep is refused: {exc}")
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
        experiments.run_sweep(config, progress=safety.reporter(bar, every=0.0), records_path=_records_path(config))
    except GeninvError as exc:
        safety.show_error(f"The sweep failed: {exc}")
    bar.empty()
    stop.empty()


def _records_path(config: experiments.SweepConfig) -> Path:
    return _records_dir() / f"{config.key}.jsonl"


if start:
    new_config = _config()
    if new_config is not None:
        _run(new_config)
elif st.session_state.pop("_sweep_resume", False):
    _run(st.session_state["sweep_config"])

config = st.session_state.get("sweep_config")
if config is None:
    st.info("Choose a generator, a variable and methods, then **Run sweep**.")
    st.stop()
records = experiments.read_records(config, _records_path(config))
if not records:
    st.warning("No records yet (stopped before the first task finished).")
    st.stop()
total = len(config.values) * len(config.methods) * config.trials
if len(records) < total:
    st.warning(f"Stopped: {len(records)} of {total} records so far.")
    if st.button("Resume", key="sweep_resume_btn"):
        st.session_state["_sweep_resume"] = True
        st.rerun()
frame = pd.DataFrame(records)
c1, c2 = st.columns(2)
c1.plotly_chart(experiments.figure(records, "success_rate", title="success rate"), width="stretch")
c2.plotly_chart(experiments.figure(records, "median_error", title="median latent error"), width="stretch")
errors = {
    k: st.column_config.NumberColumn(k.replace("_", " "), format="%.2e")
    for k in ("median_error", "q25_error", "q75_error")
}
st.dataframe(pd.DataFrame(experiments.summarize(records)), hide_index=True, width="stretch", column_config=errors)
st.download_button("Records as CSV", frame.to_csv(index=False), f"sweep_{config.key}.csv", "text/csv", key="sweep_csv")
