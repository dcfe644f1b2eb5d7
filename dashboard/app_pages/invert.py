"""Invert page: corrupt a signal, run methods side by side, watch each layer come back."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import cache, safety
from dashboard.components import controls, figures
from geninv import BudgetError, GeninvError, demo, explain, io, lessons, limits, masks, session, viz

DEF = explain.DEFINITIONS
SPEEDS = (1, 2, 4, 8)  # replay speeds: frames (or steps) advanced per tick
TICK_SECONDS = 0.5

st.title("Invert a generator")
st.caption(
    "Pick a generator and a signal, hide or perturb part of the output, and recover the latent z with "
    "gradient descent and layer-wise pursuit, side by side. New here? Pick a **Lesson** in the sidebar."
)

# A shared link sets the widgets once per session and runs the experiment it describes: exactly
# that experiment (or lesson), within this server's budget, or nothing (with the reason).
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

lesson = controls.lesson_picker()
choice = controls.generator_picker()
G = choice.generator
if G is None:
    st.warning("Choose a valid generator in the sidebar to start.")
    st.stop()
latent_seed, digit = controls.sample_picker(G.output_dim)
shape = viz.image_shape(G.output_dim)
clean = cache.digit_image(digit) if digit is not None else cache.sample(G, choice.key, latent_seed)
corruption, mask = controls.corruption_picker(G.output_dim)
meas = corruption.measurements if corruption is not None else ""
submitted, chosen, options, run_seed = controls.methods_form()
st.sidebar.caption(f"Generator widths {' → '.join(map(str, G.widths))}; float64.")


def _image(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    return viz.rgb_image(x, shape, mask)


def _caption_metrics(m: demo.MethodOutcome) -> str:
    err, psnr = m.metrics.get("latent_error", float("nan")), m.metrics.get("psnr", float("nan"))
    return f"latent error {err:.1e} · PSNR {psnr:.1f} dB · {m.seconds:.2f} s"


def _measured(m: int, n: int) -> str:
    return f"{m} of {n} measurements"


def _url(exp: session.Experiment) -> dict[str, str]:
    """The URL of an experiment: the lesson's short link while it is exactly the lesson's experiment."""
    name = st.session_state.get("lesson")
    if name and name in lessons.LESSONS and _same_run(lessons.LESSONS[name].experiment, exp):
        return {"lesson": name}
    return exp.to_query()


def _same_run(a: session.Experiment, b: session.Experiment) -> bool:
    """Equal experiments, whatever way each spells its generator ('random:8-32' or with its defaults)."""
    qa, qb = a.to_query(), b.to_query()
    ga, gb = qa.pop("gen"), qb.pop("gen")
    same_gen = ga == gb or (session.UPLOAD not in (ga, gb) and io.parse_spec(ga) == io.parse_spec(gb))
    return same_gen and qa == qb


# ---------------------------------------------------------------- the lesson
if lesson is not None:
    with st.container(border=True):
        st.markdown(f"**Lesson · {lesson.title}**")
        st.markdown("\n".join(f"- {text}" for text in lesson.notice))
        st.caption(f"Link to this lesson: ?lesson={lesson.name} · choose “free exploration” in the sidebar to leave.")

# ---------------------------------------------------------------- the signal and its corruption
if lesson is None or "signal" in (st.session_state.get("_unfold") or ()):
    cols = st.columns([1, 1, 2] if shape else [1])
    preview = None
    if meas:  # compressed sensing: no pixel is observed as such; show what the m measurements say
        try:
            preview = cache.measurements_preview(G, choice.key, meas, clean)
        except GeninvError as exc:
            safety.show_error(exc)
    if shape:
        title = f"G(z), latent seed {latent_seed}" if digit is None else "the real digit"
        cols[0].image(_image(clean), caption=title, width=150)
        if preview is not None:
            y_preview, back = preview
            cols[1].image(_image(back), caption="Aᵀy: the measurements back-projected", width=150)
            with cols[2]:
                st.plotly_chart(
                    figures.measurements(y_preview, n=G.output_dim, kind=meas.split(":")[0]),
                    width="stretch",
                    key="meas_preview",
                )
                st.caption(
                    f"{_measured(y_preview.size, G.output_dim)}: y = A G(z) + e with A of shape "
                    f"{y_preview.size} × {G.output_dim}; no pixel is seen directly."
                )
        elif not meas:
            cols[1].image(_image(clean, mask), caption="observed (hidden pixels in red)", width=150)
            with cols[2]:
                if mask is not None:
                    st.download_button("Mask as PNG", masks.to_png(mask, shape), "mask.png", "image/png", key="dl_mask")
                    st.caption(f"{int(mask.sum())} of {mask.size} pixels observed.")
                controls.canvas_panel(clean, shape)
    else:
        cols[0].plotly_chart(figures.signal_line({"G(z)": clean}, mask), width="stretch")
        if preview is not None:
            cols[0].plotly_chart(
                figures.measurements(preview[0], n=G.output_dim, kind=meas.split(":")[0]),
                width="stretch",
                key="meas_preview",
            )

# ---------------------------------------------------------------- run
experiment = None
budget = limits.budget()
if corruption is not None and chosen:
    try:
        experiment = session.Experiment(
            generator=choice.spec,
            latent_seed=latent_seed,
            corruption=corruption,
            methods=chosen,
            options=options,
            seed=run_seed,
            digit=digit,
        )
        experiment.check_signal(G.output_dim)
        cost = budget.check_experiment(experiment, G.widths)
        st.sidebar.caption(f"Estimated cost of a run: {cost.describe(budget)}.")
    except BudgetError as exc:
        experiment = None
        safety.refuse("run", exc)
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
        for key in [k for k in st.session_state if k.startswith(("frame_", "step_", "play_"))]:
            del st.session_state[key]  # the replay follows the latest run: its last state, not iteration 0
        if choice.spec != session.UPLOAD:
            st.query_params.from_dict(_url(experiment))
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
if not st.query_params and outcome.experiment.generator != session.UPLOAD:
    st.query_params.from_dict(_url(outcome.experiment))  # back from another page: the link shows this run again
if experiment is not None and experiment != outcome.experiment:
    st.caption("Showing the last run; the settings have changed since — press **Run** to update.")
elif lesson is not None and not _same_run(lesson.experiment, outcome.experiment):
    st.caption("You changed the lesson's settings: the text above describes the lesson's own experiment.")

# ---------------------------------------------------------------- results side by side
ok = {name: m for name, m in outcome.methods.items() if not m.error}
for name, m in outcome.methods.items():
    if m.error:
        safety.show_error(f"{name}: {m.error}")
net = outcome.network
head, why = outcome.verdict
with st.container(border=True):
    left, right = st.columns([1, 1])
    with left:
        st.markdown(f"**Certificate: {head}.**")
        if outcome.digit is not None:
            why = "At the projection (a real digit has no latent of its own): " + why[0].lower() + why[1:]
        st.caption(why)
    with right:
        c1, c2, c3 = st.columns(3)
        c1.metric("noise gain", figures.times(net.get("noise_gain")), help=DEF["noise_gain"])
        c2.metric("condition", figures.times(net.get("condition")), help=DEF["condition"])
        if outcome.sigma > 0:
            c3.metric(
                "predicted error",
                f"{net.get('predicted_error', float('nan')):.2g}",
                help=DEF["predicted_error"],
            )
        elif outcome.measurements is not None:
            c3.metric("measurements m", f"{outcome.measurements['m']}", help=DEF["measurements"])
        else:
            c3.metric("usable pixels", f"{net.get('equations_output')}", help=DEF["equations"])
    if outcome.sigma > 0:
        dropped = int(net.get("observed", 0)) - int(net.get("equations_output", 0))
        saturated = (
            f"{dropped} of {net.get('observed')} observed pixels are within 3σ of saturation and give no equation "
            "to the layer-by-layer test (their value says only “near 0 or 1”). "
            if dropped > 0 and G.output_activation.name in ("sigmoid", "tanh")
            else ""
        )
        st.caption(
            f"Noise σ = {outcome.sigma:.3g}: {saturated}Expect a latent error near "
            f"{net.get('predicted_error', float('nan')):.2g} even from the best method: compare with the oracle row."
        )

# One scale for every difference image: the worst reconstruction is drawn at full colour, an exact one
# stays white (never below 1e-6, so that rounding noise is not blown up into a pattern).
diff_scale = max([1e-6] + [float(np.abs(np.asarray(m.x_hat) - outcome.x_true).max()) for m in ok.values()])
if outcome.digit is None and diff_scale <= 1e-6:  # every reconstruction exact: blank images would only take room
    diff_scale = 0.0
panels: list[tuple[str, np.ndarray, str, np.ndarray | None, np.ndarray | None]] = []
if outcome.digit is not None:
    d = outcome.digit
    panels.append(("the digit", outcome.x_true, d["description"], None, None))
    proj = d["projection"]
    panels.append(
        (
            "projection",
            proj,
            f"best fit in the range: {d['projection_error']:.0%} from the digit, "
            f"‖z‖ = {d['projection_latent_norm']:.0f}",
            None,
            viz.difference_image(proj, outcome.x_true, shape, scale=diff_scale) if shape else None,
        )
    )
else:
    panels.append(("original", outcome.x_true, "G(z)", None, None))
cs = outcome.measurements
if cs is None:
    panels.append(("observed", outcome.observed, "measurements y", outcome.mask, None))
else:
    panels.append(("Aᵀy", outcome.observed, f"back-projection of the {_measured(cs['m'], cs['n'])}", None, None))
for name, m in ok.items():
    label = name
    caption = _caption_metrics(m) + (" · knows the true supports" if name == demo.ORACLE else "")
    if outcome.digit is not None:
        caption += f" · {m.metrics.get('digit_error', float('nan')):.0%} from the digit"
    diff = viz.difference_image(m.x_hat, outcome.x_true, shape, scale=diff_scale) if shape and diff_scale else None
    panels.append((label, m.x_hat, caption, None, diff))

st.subheader("Results")
if shape:
    per_row = 6
    for start in range(0, len(panels), per_row):
        row = st.columns(per_row)
        for col, (title, x, caption, pmask, diff) in zip(row, panels[start : start + per_row], strict=False):
            col.markdown(f"**{title}**")
            col.image(_image(x, pmask), caption=caption, width="stretch")
            if diff is not None:
                top = float(np.abs(np.asarray(x) - outcome.x_true).max())
                col.image(
                    diff,
                    caption=f"difference to {'the digit' if outcome.digit else 'G(z)'}: max {top:.1e}",
                    width="stretch",
                )
    if diff_scale:
        st.caption(
            f"Difference images: white = exact, blue = too dark, vermillion = too bright; full colour = "
            f"±{diff_scale:.1e} (the largest difference of any method here), the same scale for all."
        )
    else:
        st.caption("Every reconstruction matches G(z) to within 1e-6 on every pixel: no difference image to show.")
else:
    signals = {"original": outcome.x_true} | {name: m.x_hat for name, m in ok.items()}
    st.plotly_chart(figures.signal_line(signals, outcome.mask), width="stretch")
if cs is not None:
    st.plotly_chart(figures.measurements(cs["y"], n=cs["n"], kind=cs["kind"]), width="stretch", key="meas_run")
    st.caption(
        f"Compressed sensing: {_measured(cs['m'], cs['n'])} ({cs['spec']}), y = A G(z) + e. No pixel is observed "
        "directly, so the Aᵀy panel is the back-projection of y, not a picture of what was seen."
    )

table = pd.DataFrame(outcome.table())
shown = ["method", "status", "recovered", "latent_error", "psnr_db", "signal_error", "observed_residual"]
if outcome.digit is not None:  # a real digit: how far from the digit first; "recovered" has no meaning here
    shown = ["method", "status", "digit_error", "latent_error", "psnr_db", "observed_residual"]
shown += ["seconds", "error"]  # forward-pass costs are in the exports (the table fits a 1280-pixel screen)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_order=[c for c in shown if c in table.columns],
    column_config={
        "method": st.column_config.TextColumn("method", help=DEF["oracle"] if demo.ORACLE in ok else None),
        "status": st.column_config.TextColumn("status", help=DEF["status"]),
        "recovered": st.column_config.CheckboxColumn("recovered z", help=DEF["recovered"]),
        "latent_error": st.column_config.NumberColumn(
            "latent error" if outcome.digit is None else "latent error to projection",
            format="%.2e",
            help=DEF["latent_error"],
        ),
        "psnr_db": st.column_config.NumberColumn(
            "PSNR (dB)" if outcome.digit is None else "PSNR to projection", format="%.1f", help=DEF["psnr_db"]
        ),
        "signal_error": st.column_config.NumberColumn(
            "signal error" if outcome.digit is None else "signal error (to the projection)",
            format="%.2e",
            help=DEF["signal_error"],
        ),
        "observed_residual": st.column_config.NumberColumn(
            "residual on observed", format="%.2e", help=DEF["observed_residual"]
        ),
        "digit_error": st.column_config.NumberColumn("error to the digit", format="%.2e", help=DEF["digit_error"]),
        "seconds": st.column_config.NumberColumn("seconds", format="%.3f", help=DEF["seconds"]),
        "forward_passes": st.column_config.NumberColumn(
            "forward-pass equiv.", format="%.0f", help=DEF["forward_passes"]
        ),
    },
)
if demo.ORACLE in ok:
    st.caption(f"oracle: {DEF['oracle']}")

tab_names = ["▶ Replay & network", "Supports per layer", "Convergence", "Certificate vs. achieved"]
tab_names += ["Batch: many samples", "Export & share"]
# A lesson opens the tab its text is about; each lesson has its own tab set, so that the choice applies when
# the lesson starts and the visitor's own clicks are kept across reruns after that.
lesson_tabs = {"certificate": tab_names[3], "replay": tab_names[0], "network": tab_names[0]}
opened = next((lesson_tabs[u] for u in (st.session_state.get("_unfold") or ()) if u in lesson_tabs), None)
tab_replay, tab_support, tab_conv, tab_cert, tab_batch, tab_export = st.tabs(
    tab_names, key=f"result_tab_{lesson.name}" if lesson is not None else "result_tab", default=opened
)
selected_unit = st.session_state.get("net_unit")


# ---------------------------------------------------------------- replay
def _network_view(name: str, codes: list[np.ndarray], title: str) -> None:
    """The network picture at the replay's position; a click on a unit selects it everywhere."""
    fig = figures.network(outcome.widths, codes, title=title, selected=st.session_state.get("net_unit"))
    key = f"net_{name}"
    state = st.session_state.get(key)
    points = (state or {}).get("selection", {}).get("points", []) if isinstance(state, dict) else []
    if points and points != st.session_state.get(f"_consumed_{key}"):
        st.session_state[f"_consumed_{key}"] = points
        unit = figures.network_unit_at(outcome.widths, float(points[0].get("x", -99)), float(points[0].get("y", 99)))
        if unit is not None and unit != st.session_state.get("net_unit"):
            st.session_state["net_unit"] = unit
            st.rerun()  # the whole page: the support maps show the unit too
    st.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points", width="stretch")
    st.caption(
        "Each dot is a unit: blue found, orange missed, vermillion ✕ false alarm, light grey inactive, "
        "open grey not recovered yet; z is a blue diamond when recovered, an open vermillion one when not; "
        + (
            "the output is seen only through the measurements (dotted grey squares). "
            if outcome.measurements is not None
            else "output pixels grey (observed) or red (hidden). "
        )
        + "Click a unit to follow it in the support maps."
    )


def _advance(key: str, options: list, play_key: str) -> None:
    """One tick of playback: move ``speed`` positions; at the end stop, and redraw the page (Play again)."""
    if not st.session_state.get(play_key) or st.session_state.pop(f"_fresh_{play_key}", False):
        return  # paused, or the first frame after Play: show where playback starts
    pos = options.index(st.session_state[key])
    if pos + 1 >= len(options):
        st.session_state[play_key] = False
        st.rerun()  # the whole page, so that the button reads Play again
    st.session_state[key] = options[min(pos + int(st.session_state.get("speed", 1)), len(options) - 1)]


def _frame_view(name: str, m: demo.MethodOutcome) -> None:
    h = m.history
    its = [int(i) for i in h["frame_iterations"]]
    key, play_key = f"frame_{name}", f"play_{name}"
    if st.session_state.get(key) not in its:
        st.session_state[key] = its[-1]
    curve_state = st.session_state.get(f"curve_{name}")
    points = (curve_state or {}).get("selection", {}).get("points", []) if isinstance(curve_state, dict) else []
    if points and points != st.session_state.get(f"_consumed_{name}"):
        st.session_state[f"_consumed_{name}"] = points
        x = float(points[0].get("x", its[-1]))
        st.session_state[key] = min(its, key=lambda i: abs(i - x))
        st.session_state[play_key] = False
    _advance(key, its, play_key)
    left, right = st.columns([1, 2])
    with left:
        k = st.select_slider("Iteration", its, key=key)
        idx = its.index(k)
        if shape and h["frames"] is not None:
            st.image(_image(h["frames"][idx]), caption=f"G(z) at iteration {k}", width=180)
        if h["frame_errors"] is not None:
            st.metric("latent error at this iteration", f"{h['frame_errors'][idx]:.2e}", help=DEF["latent_error"])
    with right:
        st.latex(explain.FORMULAS.get(name, ""))
        st.plotly_chart(
            figures.convergence(h, name, marker=k, threshold=outcome.threshold),
            key=f"curve_{name}",
            on_select="rerun",
            selection_mode="points",
            width="stretch",
        )
        st.caption("Click a point on a curve to jump there. Dotted line: the success threshold.")
    if h.get("frame_maps") is not None:
        frame_error = None if h["frame_errors"] is None else float(h["frame_errors"][idx])
        codes = figures.network_codes(
            outcome.widths,
            outcome.mask,
            frame_maps=h["frame_maps"],
            frame=idx,
            frame_error=frame_error,
            measured=outcome.measurements is not None,
        )
        _network_view(name, codes, f"{name} at iteration {k} of {its[-1]}: supports of its iterate")


def _step_view(name: str, m: demo.MethodOutcome) -> None:
    labels = ["observed y"] + [
        f"after step {i + 1}: {('z' if s['layer'] == 0 else 'x' + str(s['layer']))}" for i, s in enumerate(m.steps)
    ]
    key, play_key = f"step_{name}", f"play_{name}"
    if st.session_state.get(key) not in labels:
        st.session_state[key] = labels[-1]
    _advance(key, labels, play_key)
    left, right = st.columns([1, 2])
    with left:
        choice_label = st.select_slider("State of the pursuit (output → z)", labels, key=key)
        pos = labels.index(choice_label)
        if pos == 0:
            if outcome.measurements is not None:
                if shape:
                    st.image(_image(outcome.observed), caption="Aᵀy: the measurements back-projected", width=180)
                cs_m = outcome.measurements
                st.caption(
                    f"The pursuit starts from the {_measured(cs_m['m'], cs_m['n'])} and goes down one layer at a time."
                )
            else:
                if shape:
                    st.image(_image(outcome.x_true, outcome.mask), caption="the measurements", width=180)
                st.caption("The pursuit starts from the observed pixels and goes down one layer at a time.")
        else:
            s = m.steps[pos - 1]
            if shape:
                st.image(_image(s["image"]), caption="output implied by this estimate", width=180)
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
            st.latex(explain.Z_STEP if s["layer"] == 0 else explain.FORMULAS.get(name, ""))
            st.plotly_chart(
                figures.layer_state(s["estimate"], s["truth"], s["layer"]), width="stretch", key=f"state_{name}"
            )
    final = [info["map"] for info in m.layers]
    codes = figures.network_codes(
        outcome.widths,
        outcome.mask,
        steps=m.steps,
        after=pos,
        threshold=outcome.threshold,
        final_maps=final,
        measured=outcome.measurements is not None,
    )
    title = f"{name}: {choice_label} ({pos} of {len(m.steps)} steps)"
    _network_view(name, codes, title)


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
    c1, c2, c3 = st.columns([3, 1, 2])
    view = c1.radio("Replay", views, horizontal=True, key=f"view_{name}") if len(views) > 1 else views[0]
    play_key = f"play_{name}"
    playing = bool(st.session_state.get(play_key))
    st.session_state.setdefault("speed", SPEEDS[0])
    c3.select_slider(
        "Speed", SPEEDS, key="speed", format_func=lambda v: f"{v}×", help="Frames (or steps) per half second."
    )
    if c2.button("⏸ Pause" if playing else "▶ Play", key=f"btn_{name}"):
        if not playing:  # resume where the replay stands; from the start when it stands at the end
            if view == "iterations":
                its = [int(i) for i in m.history["frame_iterations"]]
                if st.session_state.get(f"frame_{name}", its[-1]) == its[-1]:
                    st.session_state[f"frame_{name}"] = its[0]
            elif st.session_state.get(f"step_{name}", "").startswith(f"after step {len(m.steps)}:"):
                st.session_state[f"step_{name}"] = "observed y"
        st.session_state[play_key] = not playing
        st.session_state[f"_fresh_{play_key}"] = not playing
        st.rerun()

    @st.fragment(run_every=TICK_SECONDS if playing else None)
    def body() -> None:
        with safety.guard(f"replay of {name}"):  # a fragment rerun does not pass through the page's guard
            if view == "iterations":
                _frame_view(name, m)
            else:
                _step_view(name, m)

    body()


with tab_replay:
    replayable = [n for n, m in ok.items() if m.steps or m.history]
    if replayable:
        if st.session_state.get("replay_method") not in replayable:
            st.session_state["replay_method"] = replayable[0]
        replay_method = st.radio("Method", replayable, horizontal=True, key="replay_method")
        _replay(replay_method)

# ---------------------------------------------------------------- supports
with tab_support:
    layered = {name: m.layers for name, m in ok.items() if m.layers}
    if layered:
        st.plotly_chart(figures.support_scores(layered), width="stretch")
        for i in range(len(outcome.true_supports)):
            maps = {name: m.layers[i]["map"] for name, m in ok.items()}
            highlight = selected_unit[1] if selected_unit and selected_unit[0] == i + 1 else None
            layer_shape = outcome.layer_shapes[i + 1] if len(outcome.layer_shapes) > i + 1 else None
            st.plotly_chart(
                figures.support_map(maps, i + 1, highlight=highlight, shape=layer_shape),
                width="stretch",
                key=f"support_map_{i + 1}",
            )
        st.caption(
            "Blue: active unit found; orange: active unit missed; vermillion: false alarm (found active, truly "
            "inactive); light grey: inactive in both. A unit clicked in the network picture is framed."
        )
    else:
        st.info("This generator has no hidden layers with a support.")

# ---------------------------------------------------------------- convergence
with tab_conv:
    iterative = {n: m for n, m in ok.items() if m.history}
    for name, m in iterative.items():
        st.markdown(f"**{name}** — {len(m.history['iterations'])} records, status {m.status}")
        st.plotly_chart(
            figures.convergence(m.history, name, threshold=outcome.threshold), width="stretch", key=f"conv_{name}"
        )
    stepwise = {n: m.steps for n, m in ok.items() if m.steps}
    if stepwise:
        st.markdown("**Layer-wise methods** — one step per layer, from the output down to z")
        st.plotly_chart(figures.pursuit_steps(stepwise, threshold=outcome.threshold), width="stretch")
    st.caption(f"Dotted line: the success threshold (relative latent error ≤ {outcome.threshold:g}).")

# ---------------------------------------------------------------- certificate
with tab_cert:
    st.markdown(f"**Whole network: {head}.** {why}")
    st.markdown(
        "Each step below recovers one layer from the layer above. **Step test** = the equations on the true "
        "support have full column rank (exact); **paper** = the uniqueness condition spark > 2s judged "
        "from the coherence bound 1 + 1/μ (or rank for z); **LBP** = the coherence guarantee s < (1 + 1/μ)/2. "
        "All three are sufficient, not necessary: a step can fail them while the whole network is identifiable."
    )
    st.plotly_chart(figures.layer_errors(ok, outcome.certificate, threshold=outcome.threshold), width="stretch")
    cert_table = pd.DataFrame(outcome.layer_table())
    labels = {
        "layer": st.column_config.NumberColumn("recovers x_k (0 = z)"),
        "cardinality": st.column_config.NumberColumn("non-zeros s", help="Unknowns of the step: active units."),
        "rows": st.column_config.NumberColumn("equations", help=DEF["equations"]),
        "expansion": st.column_config.NumberColumn("expansion", format="%.2f", help="equations / non-zeros"),
        "coherence": st.column_config.NumberColumn("coherence μ", format="%.3f"),
        "spark_bound": st.column_config.NumberColumn("spark ≥ 1 + 1/μ", format="%.2f"),
        "spark": st.column_config.NumberColumn("exact spark (blank: not computed)"),
        "support_rank": st.column_config.NumberColumn("rank on support"),
        "support_sigma_min": st.column_config.NumberColumn("σ_min on support", format="%.2e"),
        "noise_gain": st.column_config.NumberColumn("step's noise gain", format="%.3g"),
        "paper_unique": st.column_config.TextColumn("paper's condition"),
        "lbp_guaranteed": st.column_config.CheckboxColumn("LBP guarantee"),
        "identifiable": st.column_config.CheckboxColumn("step test", help=DEF["identifiable_layerwise"]),
    }
    labels |= {c: st.column_config.NumberColumn(c, format="%.2e") for c in cert_table.columns if c.endswith(": error")}
    # What decides first (equations against unknowns, the step test, its gain), then what each method reached
    # there, then the paper's bounds: the table scrolls sideways inside itself, the page does not.
    first = [
        "layer",
        "cardinality",
        "rows",
        "expansion",
        "identifiable",
        "noise_gain",
        "paper_unique",
        "lbp_guaranteed",
    ]
    achieved = [c for c in cert_table.columns if ": " in c]
    order = first + achieved + [c for c in cert_table.columns if c not in first and c not in achieved]
    st.dataframe(cert_table, hide_index=True, width="stretch", column_config=labels, column_order=order)
    st.caption(
        f"Product of the step gains {figures.times(net.get('step_gain_product'))} against the end-to-end gain "
        f"{figures.times(net.get('noise_gain'))}: {DEF['step_gain_product']}"
    )

# ---------------------------------------------------------------- batch
with tab_batch:
    exp_last = outcome.experiment
    if exp_last.digit is not None:
        st.info("A batch runs on samples of the generator; choose “sample G(z)” as the signal to use it.")
    else:
        st.caption(
            "One sample is an anecdote: run this experiment (same generator, corruption, methods and options) "
            "on N samples drawn from its latent seed, and read the rates with their 95% intervals."
        )
        b1, b2 = st.columns([1, 3])
        st.session_state.setdefault("batch_n", 20)
        n = int(b1.number_input("Samples N", 2, budget.max_batch, key="batch_n"))
        if b1.button("Run batch", key="batch_run", type="primary"):
            try:
                cost = budget.check_experiment(exp_last, G.widths, batch=n)
                b2.caption(f"Estimated cost: {cost.describe(budget)}.")
                bar = b2.progress(0.0, text="Running the batch…")
                result = demo.run_batch(G, exp_last, n, progress=safety.reporter(bar))
                bar.empty()
                st.session_state["_batch"] = (choice.key, exp_last, n, result)
            except BudgetError as exc:
                safety.refuse("batch", exc)
            except GeninvError as exc:
                safety.show_error(f"The batch failed: {exc}")
        stored = st.session_state.get("_batch")
        if stored and stored[0] == choice.key and stored[1] == exp_last:
            batch: demo.BatchOutcome = stored[3]
            cs = batch.certificate_summary()
            st.markdown(
                f"**{batch.n} samples.** Certificate: {cs['identifiable_network']:.0%} identifiable (whole network), "
                f"{cs['identifiable_layerwise']:.0%} pass the layer-by-layer test, {cs['stable']:.0%} stable; "
                f"median condition number {figures.times(cs['median_condition'])}"
                + (
                    f", median predicted oracle error {cs['median_predicted_error']:.2g}."
                    if batch.sigma.max() > 0
                    else "."
                )
            )
            for name, message in batch.failed.items():
                safety.show_error(f"{name}: {message}")
            g1, g2 = st.columns(2)
            summary = batch.summary()
            g1.plotly_chart(figures.batch_rates(summary), width="stretch", key="batch_rates")
            g2.plotly_chart(
                figures.batch_errors(
                    {k: v["latent_error"] for k, v in batch.errors.items()}, threshold=batch.threshold
                ),
                width="stretch",
                key="batch_errors",
            )
            frame = pd.DataFrame(summary)
            pct = {
                k: st.column_config.NumberColumn(k.replace("_", " "), format="percent")
                for k in ("success_rate", "success_low", "success_high")
            }
            errs = {
                k: st.column_config.NumberColumn(k.replace("_", " "), format="%.2e")
                for k in ("median_error", "median_low", "median_high", "q25_error", "q75_error")
            }
            st.dataframe(frame, hide_index=True, width="stretch", column_config=pct | errs)
            st.caption(
                "success low / high: 95% Wilson interval of the success rate; median low / high: 95% bootstrap "
                "interval of the median latent error; q25 / q75: quartiles."
            )
            st.download_button(
                "Batch arrays as NPZ", batch.to_npz(), "geninv_batch.npz", "application/octet-stream", key="dl_batch"
            )
        elif stored:
            st.caption("The last batch belongs to another experiment: press Run batch for this one.")

# ---------------------------------------------------------------- export
with tab_export:
    exp = outcome.experiment
    if exp.generator == session.UPLOAD:
        st.warning("An uploaded generator cannot travel in a link; the rest of the experiment does.")
    st.markdown("**Link to this experiment** (opening it reproduces the run):")
    st.code("?" + "&".join(f"{k}={v}" for k, v in _url(exp).items()), language=None)
    payload: dict[str, Any] = outcome.to_json()
    e1, e2, e3 = st.columns(3)
    e1.download_button(
        "Results as JSON", json.dumps(payload, indent=1), "geninv_results.json", "application/json", key="dl_json"
    )
    e2.download_button(
        "All arrays as NPZ",
        outcome.to_npz(),
        "geninv_results.npz",
        "application/octet-stream",
        key="dl_npz",
        help="Truth, estimates, full histories (every recorded iterate), each step's state, support maps and "
        "the certificate's numbers; np.load(path) reads it without pickle.",
    )
    if shape:
        stack = np.stack([outcome.x_true] + [m.x_hat for m in ok.values()])
        e3.download_button(
            "Original and reconstructions as PNG",
            viz.grid_png(stack, shape, columns=len(stack), scale=4),
            "geninv_reconstructions.png",
            "image/png",
            key="dl_png",
        )
