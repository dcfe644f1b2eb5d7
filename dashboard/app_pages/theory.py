"""Theory page: the model, the conditions and the algorithms, with small live examples."""

from __future__ import annotations

import streamlit as st

from dashboard import cache
from dashboard.components import figures
from geninv import explain

DEF = explain.DEFINITIONS

st.title("When can a generator be inverted?")

st.markdown("#### The model")
st.markdown(
    "A fully connected generator maps a latent $z \\in \\mathbb{R}^{n_0}$ through $L$ layers; hidden "
    "layers are ReLU (or leaky ReLU), the output may be identity, sigmoid or tanh. We observe some of "
    "its pixels, possibly with noise:"
)
st.latex(r"x_{i+1} = \phi(W_{i+1} x_i + b_{i+1}),\quad x_0 = z,\qquad y = A\,G(z) + e")
st.markdown(
    "A ReLU layer is a *sparse* code: its support $S_i$ (the active units, $s_i = |S_i|$) tells which rows "
    "of the next layer carry equations. Inverting layer by layer means solving, from the output down:"
)
st.latex(
    r"\hat x_{i+1}[S_{i+1}] = W_{i+1}[S_{i+1}]\,x_i + b_{i+1}[S_{i+1}],\qquad "
    r"W_{i+1}[S^c_{i+1}]\,x_i + b_{i+1}[S^c_{i+1}] \le 0"
)

st.markdown("#### Layer by layer: three sufficient tests")
st.caption(
    "Each test looks at one recovery step at a time. When one holds at every step, z is recoverable; when "
    "one fails, that says nothing yet — the whole network may still pin z down (next section)."
)
c1, c2, c3 = st.columns(3)
with c1:
    st.markdown("**Paper's uniqueness** (Aberdam, Simon & Elad)")
    st.latex(r"\operatorname{spark}(W_{i+1}[S_{i+1}]) > 2 s_i")
    st.caption("Checked with the bound spark ≥ 1 + 1/μ, or an exact spark search when affordable.")
with c2:
    st.markdown("**Layered Basis-Pursuit guarantee**")
    st.latex(r"s_i < \tfrac12\Big(1 + \tfrac{1}{\mu(W_{i+1}[S_{i+1}])}\Big)")
    st.caption("Coherence μ: the largest normalised inner product of two columns. Very pessimistic.")
with c3:
    st.markdown("**Step rank test** (exact)")
    st.latex(r"\operatorname{rank}\big(W_{i+1}[S_{i+1}, S_i]\big) = s_i")
    st.caption("Given its support, the layer is pinned down. Needs roughly ≥ s_i equations: expansion.")

st.markdown("#### The whole network decides, and stability is a separate question")
c1, c2 = st.columns(2)
with c1:
    st.markdown("**Identifiable** (the deciding test)")
    st.latex(r"y_S = J_S\,z + c\ \ \text{(on the sample's pattern)}")
    st.latex(r"\operatorname{rank}(J_S) = n_0")
    st.caption(
        "On the sample's activation pattern the observed pixels are an affine function of z. Full column "
        "rank: no other latent nearby gives the same observation. Rank deficient: no method can tell them apart."
    )
with c2:
    st.markdown("**Stable** (how much noise reaches z)")
    st.latex(r"\frac{\mathbb E\|\hat z - z\|}{\|z\|} \approx \frac{\sigma\,\|J_S^{+}\|_F}{\|z\|}")
    st.latex(
        r"\text{gain} = \frac{1}{\sigma_{\min}(J_S)},\qquad \kappa = \frac{\sigma_{\max}(J_S)}{\sigma_{\min}(J_S)}"
    )
    st.caption(
        "The error of least squares on the true pattern (the oracle): the best any method can do. A large "
        "condition number κ means a good image and a poor latent under noise."
    )

st.markdown("#### The algorithms")
for name, text in (
    ("gd", "Gradient descent on z (Adam, random restarts): non-convex, can stall in a wrong basin."),
    ("latent-pursuit", "The paper's algorithm: per layer a non-negative Lasso with the ReLU's inequalities."),
    ("lbp", "Layered Basis-Pursuit: an ℓ1 pursuit per layer, no sign information."),
    ("lp", "The layer-wise linear program of Lei et al.: feasibility with the ReLU's equalities and inequalities."),
    ("hybrid", "Ours: latent-pursuit, a refit on the found patterns, and a joint gradient solve where needed."),
):
    st.markdown(f"**{name}** — {text}")
    st.latex(explain.FORMULAS[name])

st.divider()
st.markdown("#### Live: expansion makes inversion possible")
st.caption("Random generators with widths 20, 20r, 20r², 20r³; certificate over the samples at each r.")
st.session_state.setdefault("theory_samples", 30)
samples = st.slider("Samples per ratio", 10, 100, step=10, key="theory_samples")
ratios = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
with st.spinner("Certifying…"):
    rows = cache.expansion_curve(ratios, samples)
st.plotly_chart(figures.expansion_curve(rows), width="stretch")
at_two = next(r for r in rows if r["ratio"] == 2.0)
first_all = next((r["ratio"] for r in rows if r["identifiable_network"] >= 0.9), None)
st.caption(
    f"Read off the chart: at r = 2, {at_two['identifiable_network']:.0%} of the samples are identifiable "
    f"(whole network) and {at_two['identifiable']:.0%} pass the step rank test, while the paper's spark "
    f"condition holds on {at_two['paper_unique_holds']:.0%} — it asks for more than twice as many equations "
    "as unknowns at every step, so it lags below r = 2.5 and agrees above. "
    + (f"From r = {first_all:g} on, at least 90% are identifiable. " if first_all else "")
    + (
        "The LBP coherence guarantee holds on no sample at any ratio"
        if max(r["lbp_guaranteed"] for r in rows) == 0
        else f"The LBP coherence guarantee holds on at most {max(r['lbp_guaranteed'] for r in rows):.0%} at any ratio"
    )
    + ": the bounds are sufficient, not necessary."
)

st.markdown("#### Live: hiding pixels of the MNIST generator, and adding noise")
c1, c2 = st.columns(2)
st.session_state.setdefault("theory_missing", 0.5)
st.session_state.setdefault("theory_sigma", 0.0)
missing = c1.slider("Fraction of pixels missing", 0.0, 0.9, step=0.1, key="theory_missing")
sigma = c2.select_slider("Noise σ", (0.0, 0.005, 0.01, 0.02, 0.05), key="theory_sigma")
with st.spinner("Certifying…"):
    summary = cache.certificate_summary("mnist", 50, missing, 0, sigma)
st.plotly_chart(figures.verdict_fractions(summary), width="stretch")
overall = next(r for r in summary if r["layer"] == "all")
output_step = summary[0]
m1, m2, m3, m4 = st.columns(4)
m1.metric("Identifiable (whole network)", f"{overall['identifiable_network']:.0%}", help=DEF["identifiable_network"])
m2.metric("Step test passes at every step", f"{overall['identifiable']:.0%}", help=DEF["identifiable_layerwise"])
m3.metric(
    "Usable pixels (mean)",
    f"{output_step['rows_mean']:.0f} of {overall['observed']}",
    help=DEF["equations"],
)
m4.metric(
    "Oracle's predicted error" if sigma > 0 else "Condition number",
    f"{overall['predicted_error_median']:.2g}" if sigma > 0 else figures.times(overall["condition_median"]),
    help=DEF["predicted_error"] if sigma > 0 else DEF["condition"],
)
explain = (
    f"With {missing:.0%} of the pixels hidden the output step has about {output_step['rows_mean']:.0f} equations "
    f"for about {output_step['cardinality_mean']:.0f} active units of the last hidden layer. "
)
if overall["identifiable"] < overall["identifiable_network"]:
    explain += (
        "Where a step has fewer equations than unknowns the step test fails, yet the whole network still pins "
        "z down: a joint method (gd, the hybrid's refit) recovers it where a purely layer-wise sweep cannot. "
    )
if sigma > 0:
    explain += (
        f"Why the equations drop with noise: a sigmoid pixel within 3σ = {3 * sigma:g} of 0 or 1 gives no equation "
        "to the step test (its value only says “near the bound”, and inverting the sigmoid there would blow the "
        "noise up); MNIST's background sits near 0, so most pixels drop out. The whole-network test still uses "
        "every observed pixel, weighted by the sigmoid's slope. "
        f"The median condition number is {figures.times(overall['condition_median'])}: identifiable, but a "
        f"latent error near {overall['predicted_error_median']:.2g} is the best any method can expect here."
    )
st.caption(explain)
