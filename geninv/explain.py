"""The words and formulas the dashboard shows beside a run.

The update rule of every method as LaTeX (:data:`FORMULAS`, :data:`Z_STEP`), a one-line definition
of every metric and verdict (:data:`DEFINITIONS`), the success threshold they quote
(:data:`THRESHOLD`), and a whole-network certificate in words (:func:`verdict_words`). Text only:
no torch, no Streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

FORMULAS: dict[str, str] = {
    "gd": r"z^{k+1} = z^k - \eta\,\mathrm{Adam}\big(\nabla_z \tfrac12 \|A\,G(z^k) - y\|_2^2\big)",
    "plugin": r"z^{k+1} = z^k - \eta\, W_1^\top \cdots W_L^\top \big(A^\top(A\,G(z^k) - y)\big)",
    "latent-pursuit": r"\hat x_i = \arg\min_{x \ge 0} \tfrac12 \|W_{i+1}[S]\,x + b[S] - \hat x_{i+1}[S]\|_2^2"
    r" + \lambda \|x\|_1 \ \text{s.t.}\ W_{i+1}[S^c]\,x + b[S^c] \le 0",
    "lbp": r"\hat x_i = \arg\min_{x} \tfrac12 \|W_{i+1}[S]\,x + b[S] - \hat x_{i+1}[S]\|_2^2 + \lambda \|x\|_1",
    "lp": r"\text{find } x \ge 0:\ W_{i+1}[S]\,x + b[S] = \hat x_{i+1}[S],\ W_{i+1}[S^c]\,x + b[S^c] \le 0",
    "hybrid": r"\text{latent-pursuit} \;\to\; \text{refit on the found patterns} \;\to\;"
    r" \min_z \|A\,G(z) - y\|_2^2 \text{ from there when noisy}",
}
Z_STEP = r"\hat z = \arg\min_{z} \|W_1[S]\,z + b[S] - \hat x_1[S]\|_2^2"
THRESHOLD = 1e-3
"""Success: relative latent error at or below this (the dashboard draws it on every error curve)."""
DEFINITIONS: dict[str, str] = {
    "latent_error": "‖ẑ − z‖ / ‖z‖: how far the recovered latent is from the true one (relative).",
    "psnr_db": "Peak signal-to-noise ratio of G(ẑ) against the clean signal, in dB (higher is better; "
    "above ~40 dB the images look identical).",
    "signal_error": "‖G(ẑ) − G(z)‖ / ‖G(z)‖ on every pixel, hidden ones included.",
    "observed_residual": "‖A G(ẑ) − y‖ / ‖y‖: how well the estimate explains the measurements.",
    "digit_error": "‖G(ẑ) − x‖ / ‖x‖ against the real digit x (never 0: the digit is not in the range).",
    "recovered": f"Latent error ≤ {THRESHOLD:g}: the method found z.",
    "status": "converged = the estimate fits the data (to working precision, or to the noise level).",
    "seconds": "Wall time of the method on this machine.",
    "forward_passes": "Cost in forward passes of the generator (a backward pass counts as two).",
    "identifiable_network": "Only one latent near z gives these measurements (the Jacobian J_S of the "
    "observed pixels has full rank).",
    "identifiable_layerwise": "Each layer, on its own, is pinned down by the layer above (sufficient, not necessary).",
    "noise_gain": "1 / σ_min(J_S): how far one unit of pixel noise can move z, at worst.",
    "condition": "σ_max / σ_min of J_S: how much a relative pixel error can be amplified in z.",
    "predicted_error": "σ ‖J_S⁺‖_F / ‖z‖: the relative latent error the best possible method (least squares "
    "on the true pattern) is expected to reach at this noise level.",
    "step_gain_product": "Product of the per-layer gains: what a purely layer-by-layer pass can pay.",
    "oracle": "Least squares on the true activation pattern: it knows the true supports (no method does); "
    "the best error reachable at this noise level.",
    "measurements": "m: rows of the measurement operator A (compressed sensing: y = A G(z) + e, A of shape m × n).",
    "equations": "Usable output rows: observed pixels, minus sigmoid / tanh pixels within 3σ of saturation "
    "(their value says only 'near 0 or 1', not an equation).",
}
"""One-line definition of every metric and verdict the dashboard shows."""


def verdict_words(network: Mapping[str, Any], *, measured: str = "pixels") -> tuple[str, str]:
    """A network certificate record in words a student understands: (headline, one-line explanation).

    ``network`` is one of :meth:`geninv.Certificate.network_records`; ``measured`` names what was
    observed (``"pixels"``, or ``"measurements"`` for a measurement operator). The headline never
    says "not identifiable" from the layer-by-layer test alone.
    """
    cond = float(network.get("condition", math.inf))
    times = _times(cond)
    if not network.get("identifiable_network"):
        return (
            "not identifiable: other latents give the same measurements",
            f"The Jacobian of the observed {measured} is rank deficient on this activation pattern: no method can "
            "tell z apart from its neighbours along a flat direction.",
        )
    layerwise = bool(network.get("identifiable_layerwise"))
    stable = bool(network.get("stable"))
    head = "identifiable and stable" if stable else f"identifiable but unstable: noise ×{times}"
    why = (
        f"Only one latent near z explains the observed {measured}"
        + ("" if stable else f", but a relative error in the {measured} can be amplified up to {times} times in z")
        + "."
    )
    if layerwise:
        why += " Each layer is also determined on its own, so a layer-by-layer method can work."
    else:
        why += (
            " The layer-by-layer test fails at some step (it is sufficient, not necessary): a joint method "
            "(gd, the hybrid's refit) can recover z where a purely layer-wise sweep may not."
        )
    return head, why


def _times(x: float) -> str:
    if not math.isfinite(x):
        return "∞"
    return f"{x:,.0f}" if x < 1e6 else f"{x:.1e}"
