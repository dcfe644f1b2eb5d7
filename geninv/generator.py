"""Fully connected generators ``G(z)`` with per-layer traces.

The model (docs/algorithms.md)::

    x_0 = z
    x_i = act(W_i x_{i-1} + b_i)          i = 1 .. L-1   (relu or leaky-relu)
    y   = phi(W_L x_{L-1} + b_L)          (identity, tanh, sigmoid or relu)

Layers are indexed from 0 in code: ``layers[i]`` maps ``x_i`` to ``x_{i+1}``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from geninv._random import torch_generator
from geninv._validation import as_tensor, check_choice, check_int, check_real, fail
from geninv.errors import ShapeError

HIDDEN_ACTIVATIONS = ("relu", "leaky_relu")
OUTPUT_ACTIVATIONS = ("identity", "tanh", "sigmoid", "relu")
ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid")
_ALIASES = {"leaky-relu": "leaky_relu", "leakyrelu": "leaky_relu", "linear": "identity", "none": "identity"}


@dataclass(frozen=True)
class Activation:
    """An elementwise activation with its inverse on its range, where one exists.

    Parameters
    ----------
    name : {'identity', 'relu', 'leaky_relu', 'tanh', 'sigmoid'}
    negative_slope : float
        Slope of leaky-relu for negative inputs (ignored by the others).
    """

    name: str
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        name = _ALIASES.get(str(self.name).lower(), str(self.name).lower())
        check_choice("activation", name, ACTIVATIONS)
        object.__setattr__(self, "name", name)
        if name == "leaky_relu":
            check_real("negative_slope", self.negative_slope, low=0.0, high=1.0, low_open=True, high_open=True)

    @property
    def sparse(self) -> bool:
        """True when zero outputs carry only an inequality (relu)."""
        return self.name == "relu"

    @property
    def invertible(self) -> bool:
        """True when the activation is a bijection onto its range."""
        return self.name != "relu"

    @property
    def bounds(self) -> tuple[float, float]:
        """Open range of the activation (saturation values for tanh / sigmoid)."""
        return {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0), "relu": (0.0, math.inf)}.get(
            self.name, (-math.inf, math.inf)
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "relu":
            return torch.relu(x)
        if self.name == "leaky_relu":
            return torch.nn.functional.leaky_relu(x, self.negative_slope)
        if self.name == "tanh":
            return torch.tanh(x)
        if self.name == "sigmoid":
            return torch.sigmoid(x)
        return x

    def inverse(self, y: torch.Tensor, *, eps: float = 0.0) -> torch.Tensor:
        """Invert on the range; values are first clipped ``eps`` inside the open range.

        Raises
        ------
        UnsupportedError
            For relu, which is not invertible.
        """
        from geninv.errors import UnsupportedError

        if self.name == "relu":
            raise UnsupportedError("relu is not invertible: zero outputs only give pre-activation <= 0.")
        if self.name == "leaky_relu":
            return torch.where(y >= 0, y, y / self.negative_slope)
        if self.name == "tanh":
            return torch.atanh(y.clamp(-1 + eps, 1 - eps))
        if self.name == "sigmoid":
            return torch.logit(y.clamp(eps, 1 - eps))
        return y

    def derivative(self, pre: torch.Tensor) -> torch.Tensor:
        """Elementwise derivative at the pre-activation ``pre``."""
        if self.name == "relu":
            return (pre > 0).to(pre.dtype)
        if self.name == "leaky_relu":
            return torch.where(pre > 0, torch.ones_like(pre), torch.full_like(pre, self.negative_slope))
        if self.name == "tanh":
            return 1 - torch.tanh(pre) ** 2
        if self.name == "sigmoid":
            s = torch.sigmoid(pre)
            return s * (1 - s)
        return torch.ones_like(pre)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.name == "leaky_relu":
            out["negative_slope"] = self.negative_slope
        return out


@dataclass(frozen=True)
class Layer:
    """One layer ``x -> act(W x + b)``; a read-only view of the generator's tensors."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: Activation

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]


@dataclass(frozen=True)
class Trace:
    """Everything a forward pass computed, batched over signals.

    Attributes
    ----------
    latent : Tensor of shape (B, n_0)
    pre_activations : tuple of Tensor, entry i of shape (B, n_{i+1})
        ``W_{i+1} x_i + b_{i+1}``.
    activations : tuple of Tensor
        ``x_{i+1}``; the last entry is the output ``y``.
    supports : tuple of bool Tensor
        Units on the positive side (pre-activation > 0) for relu and leaky-relu; all True for
        identity, tanh and sigmoid, whose outputs carry an equation everywhere.
    """

    latent: torch.Tensor
    pre_activations: tuple[torch.Tensor, ...]
    activations: tuple[torch.Tensor, ...]
    supports: tuple[torch.Tensor, ...]

    @property
    def output(self) -> torch.Tensor:
        return self.activations[-1]

    @property
    def hidden(self) -> tuple[torch.Tensor, ...]:
        """Hidden layers ``x_1 .. x_{L-1}``."""
        return self.activations[:-1]

    def cardinalities(self) -> tuple[torch.Tensor, ...]:
        """Number of active units per layer and signal, ``s_i``."""
        return tuple(s.sum(dim=-1) for s in self.supports)

    def __getitem__(self, index: Any) -> Trace:
        """Select signals of the batch: ``trace[3:5]``."""
        return Trace(
            latent=self.latent[index],
            pre_activations=tuple(t[index] for t in self.pre_activations),
            activations=tuple(t[index] for t in self.activations),
            supports=tuple(t[index] for t in self.supports),
        )


class Generator(nn.Module):
    """A fully connected generator of linear layers and elementwise activations.

    The weights are buffers, not parameters: inversion differentiates with respect to the latent,
    never the weights. ``generator.to(device)`` moves everything.

    Parameters
    ----------
    weights : sequence of array of shape (n_{i+1}, n_i)
        Torch convention (``nn.Linear.weight``): output by input.
    biases : sequence of (array of shape (n_{i+1},) or None), optional
    hidden : {'relu', 'leaky_relu'}
    output : {'identity', 'tanh', 'sigmoid', 'relu'}
    negative_slope : float
        Leaky-relu slope.
    name : str, optional
        A label used by caches, exports and the dashboard.
    dtype : torch.float32 or torch.float64, optional
        Default: the first weight's dtype if it is one of these. Other dtypes are refused.

    Examples
    --------
    >>> G = Generator.random([4, 12, 30], seed=0)
    >>> G.widths
    (4, 12, 30)
    >>> G(G.sample_latent(2, seed=1)).shape
    torch.Size([2, 30])
    """

    def __init__(
        self,
        weights: Sequence[Any],
        biases: Sequence[Any | None] | None = None,
        *,
        hidden: str = "relu",
        output: str = "identity",
        negative_slope: float = 0.2,
        name: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(weights, Sequence) or isinstance(weights, str | torch.Tensor | np.ndarray):
            fail("weights", "a list of 2-D arrays, one per layer", weights, ShapeError)
        if len(weights) < 1:
            fail("weights", "a list with at least one weight matrix (two widths)", weights, ShapeError)
        if biases is None:
            biases = [None] * len(weights)
        if len(biases) != len(weights):
            fail("biases", f"a list of {len(weights)} entries (one per weight, None allowed)", biases, ShapeError)
        hidden_act = Activation(hidden, negative_slope)
        check_choice("hidden", hidden_act.name, HIDDEN_ACTIVATIONS)
        output_act = Activation(output, negative_slope)
        check_choice("output", output_act.name, OUTPUT_ACTIVATIONS)
        self.hidden_activation = hidden_act
        self.output_activation = output_act
        self.name = name or "generator"

        first = as_tensor("weights[0]", weights[0], ndim=2)
        dtype = dtype or (first.dtype if first.is_floating_point() else torch.get_default_dtype())
        if dtype not in (torch.float32, torch.float64):  # lower precision truncates weights and breaks exactness
            fail("dtype", "torch.float32 or torch.float64 (convert the weights first)", dtype)
        n_prev = None
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            w = as_tensor(f"weights[{i}]", w, ndim=2, dtype=dtype)
            if n_prev is not None and w.shape[1] != n_prev:
                fail(
                    f"weights[{i}]",
                    f"of shape (n_out, {n_prev}) to follow a layer with {n_prev} outputs",
                    w,
                    ShapeError,
                )
            if w.shape[0] < 1 or w.shape[1] < 1:
                fail(f"weights[{i}]", "a non-empty matrix", w, ShapeError)
            self.register_buffer(f"weight_{i}", w.detach().clone().contiguous())
            if b is not None:
                b = as_tensor(f"biases[{i}]", b, ndim=1, dtype=dtype, device=w.device)
                if b.shape[0] != w.shape[0]:
                    fail(f"biases[{i}]", f"of shape ({w.shape[0]},)", b, ShapeError)
                self.register_buffer(f"bias_{i}", b.detach().clone().contiguous())
            else:
                self.register_buffer(f"bias_{i}", None)
            n_prev = w.shape[0]
        self._n_layers = len(weights)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def random(
        cls,
        widths: Sequence[int],
        *,
        seed: int = 0,
        bias: bool = False,
        hidden: str = "relu",
        output: str = "identity",
        negative_slope: float = 0.2,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        name: str | None = None,
    ) -> Generator:
        """A generator with i.i.d. N(0, 1/fan_in) weights (and biases when ``bias``).

        float64 by default: exact recovery is checked to ~1e-12 and float32 hides it.
        """
        widths = _check_widths(widths)
        rng = torch_generator(seed, "weights")
        weights, biases = [], []
        for n_in, n_out in itertools.pairwise(widths):
            scale = 1.0 / math.sqrt(n_in)
            weights.append(torch.randn(n_out, n_in, generator=rng, dtype=torch.float64) * scale)
            biases.append(torch.randn(n_out, generator=rng, dtype=torch.float64) * scale if bias else None)
        label = name or f"random-{'-'.join(map(str, widths))}-seed{seed}" + ("-bias" if bias else "")
        gen = cls(weights, biases, hidden=hidden, output=output, negative_slope=negative_slope, name=label, dtype=dtype)
        return gen.to(device) if device is not None else gen

    @classmethod
    def from_weights(
        cls,
        weights: Sequence[Any],
        biases: Sequence[Any | None] | None = None,
        *,
        hidden: str = "relu",
        output: str = "identity",
        negative_slope: float = 0.2,
        name: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Generator:
        """Build from weight matrices of shape (n_out, n_in), as ``nn.Linear`` stores them."""
        return cls(weights, biases, hidden=hidden, output=output, negative_slope=negative_slope, name=name, dtype=dtype)

    # ------------------------------------------------------------------ structure
    @property
    def n_layers(self) -> int:
        """Number of weight layers L."""
        return self._n_layers

    @property
    def widths(self) -> tuple[int, ...]:
        """``(n_0, n_1, ..., n_L)``: latent size first, output size last."""
        return (self.weight(0).shape[1], *tuple(self.weight(i).shape[0] for i in range(self.n_layers)))

    @property
    def latent_dim(self) -> int:
        return self.widths[0]

    @property
    def output_dim(self) -> int:
        return self.widths[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.weight(0).dtype

    @property
    def device(self) -> torch.device:
        return self.weight(0).device

    @property
    def has_bias(self) -> bool:
        return any(self.bias(i) is not None for i in range(self.n_layers))

    def weight(self, i: int) -> torch.Tensor:
        """``W_{i+1}`` of shape (n_{i+1}, n_i)."""
        return getattr(self, f"weight_{i}")

    def bias(self, i: int) -> torch.Tensor | None:
        """``b_{i+1}`` or None."""
        return getattr(self, f"bias_{i}")

    def activation(self, i: int) -> Activation:
        return self.output_activation if i == self.n_layers - 1 else self.hidden_activation

    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(Layer(self.weight(i), self.bias(i), self.activation(i)) for i in range(self.n_layers))

    def describe(self) -> dict[str, Any]:
        """The architecture as plain data (what the architecture JSON stores)."""
        return {
            "name": self.name,
            "widths": list(self.widths),
            "bias": [self.bias(i) is not None for i in range(self.n_layers)],
            "hidden": self.hidden_activation.describe(),
            "output": self.output_activation.describe(),
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def extra_repr(self) -> str:
        return (
            f"widths={list(self.widths)}, hidden={self.hidden_activation.name}, "
            f"output={self.output_activation.name}, bias={self.has_bias}, dtype={self.dtype}"
        )

    def save(self, path: str) -> Any:
        """Save as ``path.json`` + ``path.safetensors`` (see :func:`geninv.io.save_generator`)."""
        from geninv.io import save_generator

        return save_generator(self, path)

    # ------------------------------------------------------------------ computation
    def _check_latent(self, z: Any) -> tuple[torch.Tensor, bool]:
        z = as_tensor("z", z, ndim=(1, 2), dtype=self.dtype, device=self.device, finite=True)
        single = z.ndim == 1
        if single:
            z = z.unsqueeze(0)
        if z.shape[1] != self.latent_dim:
            fail("z", f"of shape (B, {self.latent_dim}) or ({self.latent_dim},)", z, ShapeError)
        return z, single

    def pre_activation(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """``W_{i+1} x + b_{i+1}`` for a batch ``x`` of shape (B, n_i)."""
        out = x @ self.weight(i).T
        b = self.bias(i)
        return out if b is None else out + b

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Output ``G(z)`` for ``z`` of shape (B, n_0) (or (n_0,), giving (n_L,)).

        Differentiable in ``z``; no input checks, so that gradient loops stay fast.
        """
        x = z
        for i in range(self.n_layers):
            x = self.activation(i)(self.pre_activation(i, x))
        return x

    def generate(self, z: Any) -> torch.Tensor:
        """Checked ``forward``: validates shape, dtype and finiteness of ``z`` first."""
        z, single = self._check_latent(z)
        with torch.no_grad():
            out = self.forward(z)
        return out[0] if single else out

    def trace(self, z: Any) -> Trace:
        """Forward pass keeping every layer: pre-activations, activations and supports."""
        z, _ = self._check_latent(z)
        pres, acts, sups = [], [], []
        x = z
        with torch.no_grad():
            for i in range(self.n_layers):
                pre = self.pre_activation(i, x)
                act = self.activation(i)
                x = act(pre)
                pres.append(pre)
                acts.append(x)
                sups.append(pre > 0 if act.name in ("relu", "leaky_relu") else torch.ones_like(pre, dtype=torch.bool))
        return Trace(latent=z, pre_activations=tuple(pres), activations=tuple(acts), supports=tuple(sups))

    def sample_latent(self, n: int, *, seed: int | None = None) -> torch.Tensor:
        """``n`` latents from N(0, I) of shape (n, n_0), reproducible from ``seed``."""
        n = check_int("n", n, low=1)
        rng = torch_generator(seed, "latent")
        z = torch.randn(n, self.latent_dim, generator=rng, dtype=torch.float64)
        return z.to(dtype=self.dtype, device=self.device)


def _check_widths(widths: Any) -> list[int]:
    if isinstance(widths, str | bytes) or not isinstance(widths, Sequence | np.ndarray):
        fail("widths", "a list of at least two positive integers", widths, ShapeError)
    widths = list(widths)
    if len(widths) < 2:
        fail("widths", "a list of at least two positive integers (latent and output sizes)", widths, ShapeError)
    return [check_int(f"widths[{i}]", w, low=1) for i, w in enumerate(widths)]
