"""Sidebar widgets: generator, sample, corruption and the methods form. They return geninv specs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from dashboard import cache, safety
from dashboard.components import canvas
from geninv import GeninvError, digits, io, lessons, limits, masks, methods, session, viz

GEN_KINDS = ("MNIST (shipped)", "MNIST conv (shipped)", "Random", "Upload")
SHIPPED = {GEN_KINDS[0]: "mnist", GEN_KINDS[1]: "mnist-conv"}
"""The shipped generators by their label: the dense MNIST decoder and the convolutional one."""
SIGNAL_KINDS = ("sample G(z)", "real MNIST digit")
ACTIVATIONS_HIDDEN = ("relu", "leaky_relu")
ACTIVATIONS_OUT = ("identity", "sigmoid", "tanh", "relu")
MASK_KINDS = ("none", "random", "box", "half", "draw", "upload")
MASK_LABELS = {
    "none": "nothing hidden",
    "random": "random pixels",
    "box": "a box",
    "half": "half the image",
    "draw": "draw with the mouse",
    "upload": "upload (PNG / .npy)",
}
MEASURE_KINDS = ("pixels", *session.MEASUREMENTS)
MEASURE_LABELS = {
    "pixels": "pixels (with a mask)",
    "gaussian": "m Gaussian measurements",
    "dct": "m DCT coefficients",
}
NOISE_KINDS = ("none", "sigma", "snr")
NOISE_LABELS = {"none": "no noise", "sigma": "σ (standard deviation)", "snr": "SNR in dB"}


@dataclass
class GeneratorChoice:
    generator: Any  # geninv.Generator, or None when the choice is invalid
    spec: str  # a spec string, or session.UPLOAD
    key: str  # cache key (spec, or upload digest)


def _init(key: str, default: Any) -> str:
    """Give a widget its default through Session State (a shared link may have set it already)."""
    st.session_state.setdefault(key, default)
    return key


def apply_query(query: dict[str, Any]) -> session.Experiment | None:
    """Set the widgets from a shared link's query; returns the experiment, or None if there is none.

    A link is either an experiment (``Experiment.from_query``: parsed and checked against the
    server's budget first) or a lesson (``?lesson=NAME``, alone). A refused link changes nothing.
    """
    if not query:
        return None
    if "lesson" in query:
        extra = sorted(set(query) - {"lesson"})
        if extra:
            raise GeninvError(
                f"A lesson link takes no other parameter; got {', '.join(map(repr, extra))[:80]} beside 'lesson'."
            )
        names = query["lesson"] if isinstance(query["lesson"], list) else [query["lesson"]]
        if len(set(names)) != 1:
            raise GeninvError("A lesson link names one lesson.")
        return start_lesson(str(names[0]))
    exp = session.Experiment.from_query(query)
    st.session_state["lesson"] = ""
    set_widgets(exp)
    return exp


def start_lesson(name: str) -> session.Experiment:
    """Set the widgets to a lesson's experiment (checked against the budget) and unfold its controls."""
    lesson = lessons.get(name)
    exp = session.Experiment.from_query(lesson.experiment.to_query())  # the same checks as any link
    set_widgets(exp)
    s = st.session_state
    s["lesson"] = lesson.name
    s["replay_method"] = lesson.replay
    s["_unfold"] = tuple(lesson.unfold)  # in order: the first tab it names is opened
    return exp


def _lesson_changed() -> None:
    """Selector callback (runs before the page): load the chosen lesson, or leave lessons."""
    name = st.session_state.get("lesson") or ""
    if not name:
        st.session_state["_unfold"] = ()
        return
    try:
        st.session_state["_autorun"] = start_lesson(name)
    except GeninvError as exc:
        st.session_state["_lesson_error"] = str(exc)


def lesson_picker() -> lessons.Lesson | None:
    """The lesson selector at the top of the sidebar; the chosen lesson (or None: free exploration)."""
    names = ("", *lessons.LESSONS)
    if st.session_state.get("lesson") not in names:
        st.session_state["lesson"] = ""
    st.sidebar.selectbox(
        "Lesson",
        names,
        key="lesson",
        format_func=lambda n: "— free exploration —" if not n else lessons.LESSONS[n].title,
        on_change=_lesson_changed,
        help="Guided experiments for a class: each runs at once and says what to notice.",
    )
    error = st.session_state.pop("_lesson_error", None)
    if error:
        safety.show_error(error, st.sidebar)
    name = st.session_state.get("lesson")
    return lessons.LESSONS.get(name) if name else None


def set_widgets(exp: session.Experiment) -> None:
    """Set every widget of the Invert page's sidebar to show ``exp`` exactly."""
    s = st.session_state
    shipped = {spec: label for label, spec in SHIPPED.items()}
    if exp.generator in shipped:
        s["gen_kind"] = shipped[exp.generator]
    elif exp.generator == session.UPLOAD:
        s["gen_kind"] = GEN_KINDS[3]
    else:
        p = io.parse_spec(exp.generator)
        s.update(
            {
                "gen_kind": GEN_KINDS[2],
                "rnd_widths": "-".join(map(str, p["widths"])),
                "rnd_seed": p["seed"],
                "rnd_bias": p["bias"],
                "rnd_hidden": p["hidden"],
                "rnd_output": p["output"],
            }
        )
    c = exp.corruption
    s.update({"latent_seed": exp.latent_seed, "run_seed": exp.seed, "methods": list(exp.methods)})
    s["signal_kind"] = SIGNAL_KINDS[0] if exp.digit is None else SIGNAL_KINDS[1]
    if exp.digit is not None:
        s["digit"] = exp.digit
    s.update({"missing": c.missing, "mask_seed": c.mask_seed, "half": c.half, "noise_seed": c.noise_seed})
    s.update(dict(zip(("box_top", "box_left", "box_h", "box_w"), c.box, strict=True)))
    s["mask_kind"] = "upload" if c.mask == "custom" else c.mask
    if c.mask == "custom":
        s["custom_mask"] = c.custom
    s["meas_kind"] = "pixels"
    if c.measurements:
        meas = session.parse_measurements(c.measurements)
        s.update({"meas_kind": meas["kind"], "meas_m": meas["m"], "meas_seed": meas["seed"]})
    s["noise_kind"] = c.noise
    s["sigma"], s["snr"] = c.sigma, c.snr_db
    for method in methods():  # options the experiment does not set go back to their defaults
        for opt in session.method_options(method):
            s[f"opt_{method}_{opt['name']}"] = exp.options.get(method, {}).get(opt["name"], opt["default"])


def generator_picker() -> GeneratorChoice:
    st.sidebar.subheader("1 · Generator")
    kind = st.sidebar.radio("Generator", GEN_KINDS, key="gen_kind", label_visibility="collapsed")
    try:
        if kind in SHIPPED:
            spec = SHIPPED[kind]
            return GeneratorChoice(cache.generator(spec), spec, spec)
        if kind == GEN_KINDS[2]:
            widths = st.sidebar.text_input("Widths (latent → output)", key=_init("rnd_widths", "20-128-392-784"))
            c1, c2 = st.sidebar.columns(2)
            seed = c1.number_input("Weight seed", 0, session.LINK_SEED_MAX, key=_init("rnd_seed", 0))
            bias = c2.checkbox("Biases", key=_init("rnd_bias", False))
            hidden = c1.selectbox("Hidden", session.LINK_HIDDEN, key="rnd_hidden")
            output = c2.selectbox("Output", session.LINK_OUTPUT, key="rnd_output")
            spec = f"random:{widths.strip()}:seed={int(seed)}" + (":bias" if bias else "")
            spec += f":hidden={hidden}:output={output}"
            limits.budget().check_spec(spec)  # refused before anything is built
            return GeneratorChoice(cache.generator(spec), spec, spec)
        arch = st.sidebar.file_uploader("Architecture (.json)", type=["json"], key="up_arch")
        weights = st.sidebar.file_uploader("Weights (.safetensors)", type=["safetensors"], key="up_weights")
        if arch is None or weights is None:
            st.sidebar.info("Upload both files (made by `G.save(path)`), or pick another generator.")
            return GeneratorChoice(None, session.UPLOAD, "")
        if arch.size > io.MAX_ARCH_BYTES:
            raise GeninvError(f"The architecture file is {arch.size} bytes; the limit is {io.MAX_ARCH_BYTES}.")
        limits.budget().check_upload("weights file", weights.size)
        a, w = arch.getvalue(), weights.getvalue()
        key = "upload:" + cache.digest(a, w)
        return GeneratorChoice(cache.uploaded_generator(key, a, w), session.UPLOAD, key)
    except GeninvError as exc:
        safety.show_error(exc, st.sidebar)
        return GeneratorChoice(None, "", "")


def sample_picker(output_dim: int | None = None) -> tuple[int, int | None]:
    """The signal: a sample of the generator (its latent seed) or, for 784 outputs, a real MNIST digit.

    Returns ``(latent_seed, digit)``; ``digit`` is None for a sample.
    """
    st.sidebar.subheader("2 · Signal")
    kinds = SIGNAL_KINDS if output_dim == session.DIGIT_PIXELS else SIGNAL_KINDS[:1]
    if st.session_state.get("signal_kind") not in kinds:
        st.session_state["signal_kind"] = kinds[0]
    kind = st.sidebar.radio("Signal", kinds, key="signal_kind", label_visibility="collapsed", horizontal=True)
    if kind == SIGNAL_KINDS[1]:
        shipped = digits.load_digits()
        choice = st.sidebar.selectbox(
            "Digit",
            range(len(shipped)),
            key=_init("digit", 3),
            format_func=lambda k: f"{k}: {shipped.describe(k)}",
            help="Real handwritten digits: no latent gives them exactly. " + digits.CREDIT + ".",
        )
        st.sidebar.caption(f"{digits.CREDIT}.")
        return 0, int(choice)
    seed_slot = st.sidebar.empty()  # the button is drawn below the seed but must act before the seed is read
    # A row of its own: beside the seed the label was cut to "New sa...".
    if st.sidebar.button("New sample", key="new_sample", icon=":material/casino:", width="stretch"):
        st.session_state["latent_seed"] = min(int(st.session_state.get("latent_seed", 0)) + 1, session.LINK_SEED_MAX)
    return int(seed_slot.number_input("Latent seed", 0, session.LINK_SEED_MAX, key=_init("latent_seed", 0))), None


def corruption_picker(n: int) -> tuple[session.Corruption | None, np.ndarray | None]:
    """Widgets for the mask and the noise: the corruption and its mask (None when nothing is hidden);
    ``(None, None)``, with an error shown, when the choice is invalid."""
    st.sidebar.subheader("3 · Corruption")
    shape = viz.image_shape(n)
    measures = MEASURE_KINDS if shape else MEASURE_KINDS[:2]  # the DCT needs an image
    if st.session_state.get("meas_kind") not in measures:
        st.session_state["meas_kind"] = "pixels"
    measure = st.sidebar.selectbox(
        "Measure",
        measures,
        key="meas_kind",
        format_func=MEASURE_LABELS.get,
        help="Pixels, or compressed sensing: m linear measurements y = A G(z) + e of the whole output "
        "(A of shape m × n: i.i.d. Gaussian entries, or m random coefficients of the 2-D DCT).",
    )
    fields: dict[str, Any] = {"mask": "none"}
    kind = "none"
    if measure != "pixels":
        if not 1 <= int(st.session_state.get("meas_m", 1)) <= n:
            st.session_state["meas_m"] = min(100, n)
        c1, c2 = st.sidebar.columns(2)
        m = int(c1.number_input("Measurements m", 1, n, key=_init("meas_m", min(100, n))))
        seed = int(c2.number_input("Operator seed", 0, session.LINK_SEED_MAX, key=_init("meas_seed", 0)))
        fields["measurements"] = f"{measure}:{m}:seed={seed}"
        st.sidebar.caption(f"{m} of {n} measurements; the operator replaces the pixel mask.")
    else:
        kind = st.sidebar.selectbox(
            "Hide", MASK_KINDS if shape else ("none", "random", "upload"), key="mask_kind", format_func=MASK_LABELS.get
        )
        fields["mask"] = kind if kind in session.MASKS else "custom"
    if kind == "random":
        low, high = session.LINK_RANGES["missing"]
        fields["missing"] = st.sidebar.slider("Fraction missing", low, high, step=0.05, key=_init("missing", 0.5))
        fields["mask_seed"] = int(
            st.sidebar.number_input("Mask seed", 0, session.LINK_SEED_MAX, key=_init("mask_seed", 0))
        )
    elif kind == "box" and shape:
        h, w = shape
        _fit_box(h, w)
        c1, c2 = st.sidebar.columns(2)
        top = c1.number_input("Top", 0, h - 1, key=_init("box_top", min(8, h - 1)))
        left = c2.number_input("Left", 0, w - 1, key=_init("box_left", min(8, w - 1)))
        bh = c1.number_input("Height", 1, h, key=_init("box_h", min(12, h)))
        bw = c2.number_input("Width", 1, w, key=_init("box_w", min(12, w)))
        fields["box"] = (int(top), int(left), int(bh), int(bw))
    elif kind == "half":
        fields["half"] = st.sidebar.selectbox("Which half", session.HALVES, key="half")
    elif kind == "upload":
        up = st.sidebar.file_uploader("Mask (white = observed)", type=["png", "npy"], key="up_mask")
        if up is not None:
            try:
                npy = up.name.endswith(".npy")
                limit = masks.MAX_MASK_NPY_BYTES if npy else masks.MAX_MASK_PNG_BYTES
                if up.size > limit:
                    raise GeninvError(f"The mask file is {up.size} bytes; the limit is {limit}.")
                data = up.getvalue()
                m = masks.from_npy(data, n) if npy else masks.from_png(data, shape)
                st.session_state["custom_mask"] = session.pack_mask(m)
            except GeninvError as exc:
                safety.show_error(f"Mask upload: {exc}", st.sidebar)
                return None, None
        if not st.session_state.get("custom_mask"):
            st.sidebar.info("Upload a mask to use it.")
            return None, None
        fields["custom"] = st.session_state["custom_mask"]
    elif kind == "draw" and shape:
        st.sidebar.caption("Paint the pixels to hide on the canvas under the sample (main panel).")
        drawn = st.session_state.get("drawn_mask")
        if drawn is None:
            fields["mask"] = "none"  # nothing drawn yet: nothing hidden, but the noise still applies
        else:
            fields["custom"] = drawn

    noise = st.sidebar.selectbox("Noise", NOISE_KINDS, key="noise_kind", format_func=NOISE_LABELS.get)
    fields["noise"] = noise
    if noise == "sigma":
        low, high = session.LINK_RANGES["sigma"]
        fields["sigma"] = st.sidebar.number_input("σ", low, high, step=0.01, format="%.4g", key=_init("sigma", 0.05))
    elif noise == "snr":
        low, high = session.LINK_RANGES["snr_db"]
        fields["snr_db"] = st.sidebar.slider("SNR (dB)", low, high, step=1.0, key=_init("snr", 20.0))
    if noise != "none":
        seed = st.sidebar.number_input("Noise seed", 0, session.LINK_SEED_MAX, key=_init("noise_seed", 0))
        fields["noise_seed"] = int(seed)
    try:
        corruption = session.Corruption(**fields)
        mask = corruption.mask_array(n)
    except GeninvError as exc:
        safety.show_error(exc, st.sidebar)
        return None, None
    if mask is not None and not mask.any():
        st.sidebar.error("This mask hides every pixel: nothing is observed, so nothing can be recovered.")
        return None, None
    return corruption, mask


def _fit_box(h: int, w: int) -> None:
    """A box a link set for another image size does not fit these widgets: say so, then use the defaults."""
    s = st.session_state
    ranges = {"box_top": (0, h - 1), "box_left": (0, w - 1), "box_h": (1, h), "box_w": (1, w)}
    bad = [k for k, (lo, hi) in ranges.items() if k in s and not lo <= int(s[k]) <= hi]
    if bad:
        box = ", ".join(str(s.get(k)) for k in ranges)
        safety.show_warning(f"The box {box} does not fit this {h} x {w} image; it was reset.", st.sidebar)
        for k in ranges:
            s.pop(k, None)


def canvas_panel(clean: np.ndarray, shape: tuple[int, int]) -> None:
    """The drawing canvas (main panel) when the mask is drawn by hand."""
    if st.session_state.get("mask_kind") != "draw" or st.session_state.get("meas_kind", "pixels") != "pixels":
        return
    with st.expander("Draw the mask", expanded=True):
        drawn = canvas.draw_mask(viz.rgb_image(clean, shape), key="canvas")
        if drawn is not None:
            packed = session.pack_mask(drawn)
            if packed != st.session_state.get("drawn_mask"):  # the sidebar read the previous drawing: redo
                st.session_state["drawn_mask"] = packed
                st.rerun()
            st.caption(f"{int((~drawn).sum())} of {drawn.size} pixels hidden.")


def methods_form() -> tuple[bool, tuple[str, ...], dict[str, dict[str, Any]], int]:
    """The methods and their options; a run starts only on submit."""
    st.sidebar.subheader("4 · Methods")
    names = methods()
    st.session_state.setdefault("methods", ["gd", "latent-pursuit"])
    unfold = st.session_state.get("_unfold") or ()
    with st.sidebar.form("methods_form"):
        chosen = st.multiselect("Methods", names, key="methods")
        options: dict[str, dict[str, Any]] = {}
        for method in names:
            with st.expander(f"{method} options", expanded=f"options:{method}" in unfold):
                options[method] = _option_widgets(method)
        seed = int(st.number_input("Run seed (restarts, initialisation)", 0, 10**6, key=_init("run_seed", 0)))
        submitted = st.form_submit_button("Run", type="primary", width="stretch")
    options = {m: o for m, o in options.items() if m in chosen and o}
    return submitted, tuple(chosen), options, seed


def _option_widgets(method: str) -> dict[str, Any]:
    budget = limits.budget()
    highs = {name: budget.max_iterations for name in limits.ITERATION_FIELDS}
    highs |= {name: budget.max_restarts for name in limits.RESTART_FIELDS}
    changed = {}
    for opt in session.method_options(method):
        key, default = f"opt_{method}_{opt['name']}", opt["default"]
        label = opt["name"].replace("_", " ")
        if opt["kind"] == "bool":
            value = st.checkbox(label, key=_init(key, default))
        elif opt["kind"] == "int":
            high = highs.get(opt["name"])
            value = int(st.number_input(label, 0, high, step=1, key=_init(key, int(default))))
        elif opt["kind"] == "choice" and opt["choices"]:
            value = st.selectbox(label, opt["choices"], key=_init(key, default))
        elif opt["kind"] == "float":
            value = float(st.number_input(label, format="%g", key=_init(key, float(default))))
        else:
            value = st.text_input(label, key=_init(key, str(default)))
        if value != default:
            changed[opt["name"]] = value
    return changed
