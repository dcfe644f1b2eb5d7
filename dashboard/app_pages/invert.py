"""Invert page: corrupt a sample, run methods side by side, watch each layer come back."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import cache, safety
from dashboard.components import controls, figures
from geninv import BudgetError, GeninvError, demo, io, limits, masks, viz

st.title("Invert a generator")
st.caption(
    "Pick a generator and a sample, hide or perturb part of the output, and recover the latent z with "
    "gradient descent and layer-wise pursuit, side by side."
)

# A shared link sets the widgets once per session and runs the experiment it describes: exactly
# that experiment, within this server's budget, or nothing (with the reason).
if not st.session_state.get("_query_applied"):
    st.session_state["_query_applied"] = True
    query = {key: st.query_params.get_all(key) for key in st.query_params}
    try:
        linked = controls.apply_query(query)
        if linked is not None:
            st.session_state["_autorun"] = linked
    except GeninvError as exc:
        safety.log.info("link refused: %s", " ".join(str(exc).split())[:300])
        safety.show_error(f"The link's experiment was not run: {exc}")

choice = controls.generator_picker()
latent_seed = controls.sample_picker()
G = choice.generator
if G is None:
    st.warning("Choose a valid generator in the sidebar to start.")
    st.stop()
shape = viz.image_shape(G.output_dim)
clean = cache.sample(G, choice.key, latent_seed)
corruption, mask = controls.corruption_picker(G.output_dim)
submitted, chosen, options, run_seed = controls.methods_form()
st.sidebar.caption(f"Generator widths {' → '.join(map(str, G.widths))}; float64.")


def _image(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    return viz.rgb_image(x, shape, mask)


def _caption_metrics(m: demo.MethodOutcome) -> str:
    err, psnr = m.metrics.get("latent_error", float("nan")), m.metrics.get("psnr", float("nan"))
    return f"latent error {err:.1e} · PSNR {psnr:.1f} dB · {m.seconds:.2f} s"


# ---------------------------------------------------------------- the signal and its corruption
cols = st.columns([1, 1, 2] if shape else [1])
if shape:
    cols[0].image(_image(clean), caption=f"G(z), latent seed {latent_seed}", width=190)
    cols[1].image(_image(clean, mask), caption="observed (hidden pixels in red)", width=190)
    with cols[2]:
        if mask is not None:
            st.download_button("Mask as PNG", masks.to_png(mask, shape), "mask.png", "image/png", key="dl_mask")
            st.caption(f"{int(mask.sum())} of {mask.size} pixels observed.")
        controls.canvas_panel(clean, shape)
else:
    cols[0].plotly_chart(figures.signal_line({"G(z)": clean}, mask), width="stretch")


# ---------------------------------------------------------------- run
def _same_run(a: demo.Experiment, b: demo.Experiment) -> bool:
    """Equal experiments, whatever way each spells its generator ('random:8-32' or with its defaults)."""
    qa, qb = a.to_query(), b.to_query()
    ga, gb = qa.pop("gen"), qb.pop("gen")
    same_gen = ga == gb or (demo.UPLOAD not in (ga, gb) and io.parse_spec(ga) == io.parse_spec(gb))
    return same_gen and qa == qb


experiment = None
budget = limits.budget()
if corruption is not None and chosen:
    try:
        experiment = demo.Experiment(
            generator=choice.spec,
            latent_seed=latent_seed,
            corruption=corruption,
            methods=chosen,
            options=options,
            seed=run_seed,
        )
        cost = budget.check_experiment(experiment, G.widths)
        st.sidebar.caption(f"Estimated cost of a run: {cost.describe(budget)}.")
    except BudgetError as exc:
        experiment = None
        safety.log.info("run refused: %s", str(exc)[:300])
        safety.show_error(f"This run is refused: {exc}")
    except GeninvError as exc:
        experiment = None
        safety.show_error(exc)
elif not chosen:
    st.info("Choose at least one method in the sidebar.")

linked = st.session_state.pop("_autorun", None)
if experiment is not None and linked is not None and not _same_run(linked, experiment):
    safety.show_error("The link's experiment cannot be shown exactly by the settings here, so it was not run.")
    linked = None
if experiment is not None and (submitted or linked is not None):
    stop = st.empty()
    stop.button("Stop", key="run_stop", icon=":material/stop_circle:", help="Stops the run; the last results stay.")
    bar = st.progress(0.0, text="Running…")
    try:
        cache.run(G, choice.key, experiment, progress=safety.reporter(bar))
        st.session_state["_last"] = (choice.key, experiment)
        if choice.spec != demo.UPLOAD:
            st.query_params.from_dict(experiment.to_query())
    except GeninvError as exc:
        safety.show_error(f"The run failed: {exc}")
    bar.empty()
    stop.empty()

last = st.session_state.get("_last")
if not last:
    st.info("Set up the experiment in the sidebar and press **Run**.")
    st.stop()
outcome: demo.Outcome = cache.run(G, *last) if last[0] == choice.key else None
if outcome is None:
    st.info("The generator changed since the last run: press **Run** to invert with this one.")
    st.stop()
if experiment is not None and experiment != outcome.experiment:
    st.caption("Showing the last run; the settings have changed since — press **Run** to update.")

# ---------------------------------------------------------------- results side by side
st.subheader("Results")
ok = {name: m for name, m in outcome.methods.items() if not m.error}
for name, m in outcome.methods.items():
    if m.error:
        safety.show_error(f"{name}: {m.error}")
if shape:
    panels = [("original", outcome.x_true, "G(z)", None)]
    panels += [("observed", outcome.observed, "measurements y", outcome.mask)]
    panels += [(name, m.x_hat, _caption_metrics(m), None) for name, m in ok.items()]
    per_row = 6
    for start in range(0, len(panels), per_row):
        row = st.columns(per_row)
        for col, (title, x, caption, pmask) in zip(row, panels[start : start + per_row], strict=False):
            col.markdown(f"**{title}**")
            col.image(_image(x, pmask), caption=caption, width="stretch")
else:
    signals = {"original": outcome.x_true} | {name: m.x_hat for name, m in ok.items()}
    st.plotly_chart(figures.signal_line(signals, outcome.mask), width="stretch")

table = pd.DataFrame(outcome.table())
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "latent_error": st.column_config.NumberColumn("latent error", format="%.2e"),
        "psnr_db": st.column_config.NumberColumn("PSNR (dB)", format="%.1f"),
        "signal_error": st.column_config.NumberColumn("signal error", format="%.2e"),
        "observed_residual": st.column_config.NumberColumn("residual on observed", format="%.2e"),
        "seconds": st.column_config.NumberColumn("seconds", format="%.3f"),
        "forward_passes": st.column_config.NumberColumn("forward-pass equiv.", format="%.0f"),
    },
)

tab_replay, tab_support, tab_conv, tab_cert, tab_export = st.tabs(
    ["▶ Replay", "Supports per layer", "Convergence", "Certificate vs. achieved", "Export & share"]
)


# ---------------------------------------------------------------- replay
def _frame_view(name: str, m: demo.MethodOutcome) -> None:
    h = m.history
    its = [int(i) for i in h["frame_iterations"]]
    key, play_key = f"frame_{name}", f"play_{name}"
    st.session_state.setdefault(key, its[-1])
    curve_state = st.session_state.get(f"curve_{name}")
    points = (curve_state or {}).get("selection", {}).get("points", []) if isinstance(curve_state, dict) else []
    if points and points != st.session_state.get(f"_consumed_{name}"):
        st.session_state[f"_consumed_{name}"] = points
        x = float(points[0].get("x", its[-1]))
        st.session_state[key] = min(its, key=lambda i: abs(i - x))
        st.session_state[play_key] = False
    if st.session_state.get(play_key):
        nxt = next((i for i in its if i > st.session_state[key]), None)
        if nxt is None:
            st.session_state[play_key] = False
        else:
            st.session_state[key] = nxt
    left, right = st.columns([1, 2])
    with left:
        k = st.select_slider("Iteration", its, key=key)
        idx = its.index(k)
        if shape and h["frames"] is not None:
            st.image(_image(h["frames"][idx]), caption=f"G(z) at iteration {k}", width=220)
        if h["frame_errors"] is not None:
            st.metric("latent error at this iteration", f"{h['frame_errors'][idx]:.2e}")
    with right:
        st.latex(demo.FORMULAS.get(name, ""))
        st.plotly_chart(
            figures.convergence(h, name, marker=k),
            key=f"curve_{name}",
            on_select="rerun",
            selection_mode="points",
            width="stretch",
        )
        st.caption("Click a point on a curve to jump there.")


def _step_view(name: str, m: demo.MethodOutcome) -> None:
    labels = ["observed y"] + [
        f"after step {i + 1}: {('z' if s['layer'] == 0 else 'x' + str(s['layer']))}" for i, s in enumerate(m.steps)
    ]
    key, play_key = f"step_{name}", f"play_{name}"
    st.session_state.setdefault(key, labels[-1])
    if st.session_state.get(play_key):
        pos = labels.index(st.session_state[key])
        if pos + 1 >= len(labels):
            st.session_state[play_key] = False
        else:
            st.session_state[key] = labels[pos + 1]
    left, right = st.columns([1, 2])
    with left:
        choice_label = st.select_slider("State of the pursuit (output → z)", labels, key=key)
        pos = labels.index(choice_label)
        if pos == 0:
            if shape:
                st.image(_image(outcome.x_true, outcome.mask), caption="the measurements", width=220)
            st.caption("The pursuit starts from the observed pixels and goes down one layer at a time.")
        else:
            s = m.steps[pos - 1]
            if shape:
                st.image(_image(s["image"]), caption="output implied by this estimate", width=220)
            st.metric("relative error of this layer", f"{s['error']:.2e}")
            st.caption(
                f"{s['rows']} equations, residual {s['residual']:.1e}, solver {s['solver']}, "
                f"{1000 * s['seconds']:.1f} ms"
            )
    with right:
        if pos == 0:
            st.latex(r"y = A\,G(z) + e")
        else:
            s = m.steps[pos - 1]
            st.latex(demo.Z_STEP if s["layer"] == 0 else demo.FORMULAS.get(name, ""))
            st.plotly_chart(
                figures.layer_state(s["estimate"], s["truth"], s["layer"]),
                width="stretch",
                key=f"state_{name}",
            )


def _replay(name: str) -> None:
    m = ok[name]
    views = []
    if m.steps:
        views.append("layer-wise steps")
    if m.history.get("frames") is not None or m.history.get("frame_errors") is not None:
        views.append("iterations")
    if not views:
        st.info(f"{name} stored nothing to replay.")
        return
    c1, c2 = st.columns([3, 1])
    view = c1.radio("Replay", views, horizontal=True, key=f"view_{name}") if len(views) > 1 else views[0]
    play_key = f"play_{name}"
    playing = bool(st.session_state.get(play_key))
    if c2.button("⏸ Pause" if playing else "▶ Play", key=f"btn_{name}"):
        st.session_state[play_key] = not playing
        if not playing:  # restart from the beginning
            st.session_state.pop(f"frame_{name}", None)
            st.session_state.pop(f"step_{name}", None)
            if view == "iterations":
                st.session_state[f"frame_{name}"] = int(m.history["frame_iterations"][0])
            else:
                st.session_state[f"step_{name}"] = "observed y"
        st.rerun()

    @st.fragment(run_every=0.6 if st.session_state.get(play_key) else None)
    def body() -> None:
        with safety.guard(f"replay of {name}"):  # a fragment rerun does not pass through the page's guard
            if view == "iterations":
                _frame_view(name, m)
            else:
                _step_view(name, m)

    body()


with tab_replay:
    if ok:
        replay_method = st.radio("Method", list(ok), horizontal=True, key="replay_method")
        _replay(replay_method)

# ---------------------------------------------------------------- supports
with tab_support:
    layered = {name: m.layers for name, m in ok.items() if m.layers}
    if layered:
        st.plotly_chart(figures.support_scores(layered), width="stretch")
        for i in range(len(outcome.true_supports)):
            maps = {name: m.layers[i]["map"] for name, m in ok.items()}
            st.plotly_chart(figures.support_map(maps, i + 1), width="stretch")
        st.caption("Green: active unit found; orange: active unit missed; red: false alarm; grey: inactive in both.")
    else:
        st.info("This generator has no hidden layers with a support.")

# ---------------------------------------------------------------- convergence
with tab_conv:
    iterative = {n: m for n, m in ok.items() if m.history}
    for name, m in iterative.items():
        st.markdown(f"**{name}** — {len(m.history['iterations'])} records, status {m.status}")
        st.plotly_chart(figures.convergence(m.history, name), width="stretch", key=f"conv_{name}")
    stepwise = {n: m.steps for n, m in ok.items() if m.steps}
    if stepwise:
        st.markdown("**Layer-wise methods** — one step per layer, from the output down to z")
        st.plotly_chart(figures.pursuit_steps(stepwise), width="stretch")

# ---------------------------------------------------------------- certificate
with tab_cert:
    st.markdown(
        "Each step recovers one layer from the layer above. **Identifiable** = the equations on the true "
        "support have full column rank (exact check); **paper** = the uniqueness condition spark > 2s judged "
        "from the coherence bound 1 + 1/μ (or rank for z); **LBP** = the coherence guarantee s < (1 + 1/μ)/2. "
        "The bounds are pessimistic: compare them with what each method achieved."
    )
    st.plotly_chart(figures.layer_errors(ok, outcome.certificate), width="stretch")
    cert_table = pd.DataFrame(outcome.layer_table())
    labels = {
        "layer": st.column_config.NumberColumn("recovers x_k (0 = z)"),
        "cardinality": st.column_config.NumberColumn("non-zeros s"),
        "rows": st.column_config.NumberColumn("equations"),
        "expansion": st.column_config.NumberColumn("expansion", format="%.2f"),
        "coherence": st.column_config.NumberColumn("coherence μ", format="%.3f"),
        "spark_bound": st.column_config.NumberColumn("spark ≥ 1 + 1/μ", format="%.2f"),
        "spark": st.column_config.NumberColumn("exact spark (blank: not computed)"),
        "support_rank": st.column_config.NumberColumn("rank on support"),
        "support_sigma_min": st.column_config.NumberColumn("σ_min on support", format="%.2e"),
        "paper_unique": st.column_config.TextColumn("paper's condition"),
        "lbp_guaranteed": st.column_config.CheckboxColumn("LBP guarantee"),
        "identifiable": st.column_config.CheckboxColumn("identifiable"),
    }
    labels |= {c: st.column_config.NumberColumn(c, format="%.2e") for c in cert_table.columns if c.endswith(": error")}
    st.dataframe(cert_table, hide_index=True, width="stretch", column_config=labels)

# ---------------------------------------------------------------- export
with tab_export:
    exp = outcome.experiment
    if exp.generator == demo.UPLOAD:
        st.warning("An uploaded generator cannot travel in a link; the rest of the experiment does.")
    st.markdown("**Link to this experiment** (opening it reproduces the run):")
    st.code("?" + "&".join(f"{k}={v}" for k, v in exp.to_query().items()), language=None)
    payload: dict[str, Any] = outcome.to_json()
    st.download_button(
        "Results as JSON", json.dumps(payload, indent=1), "geninv_results.json", "application/json", key="dl_json"
    )
    if shape:
        stack = np.stack([outcome.x_true] + [m.x_hat for m in ok.values()])
        st.download_button(
            "Original and reconstructions as PNG",
            viz.grid_png(stack, shape, columns=len(stack), scale=4),
            "geninv_reconstructions.png",
            "image/png",
            key="dl_png",
        )
