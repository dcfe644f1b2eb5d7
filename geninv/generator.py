"""Generators ``G(z)`` of linear layers and elementwise activations, with per-layer traces.

The model (docs/algorithms.md)::

    x_0 = z
    x_i = act(W_i x_{i-1} + b_i)          i = 1 .. L-1   (relu or leaky-relu)
    y   = phi(W_L x_{L-1} + b_L)          (identity, tanh, sigmoid or relu)

Each ``W_i`` is a linear operator (:mod:`geninv.operators`): a dense matrix, a transposed
convolution (DCGAN's up-sampling layer) or a convolution, on flattened ``(C, H, W)`` feature maps.
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
from geninv.errors import ShapeError, UnsupportedError
from geninv.operators import Conv2d, ConvTranspose2d, Dense, LinearOperator

HIDDEN_ACTIVATIONS = ("relu", "leaky_relu")
OUTPUT_ACTIVATIONS = ("identity", "tanh", "sigmoid", "relu")
ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid")
LAYER_TYPES = ("dense", "conv_transpose2d", "conv2d")
"""Kinds of linear layers a generator holds (and its file format stores)."""
_CONV_TYPES = {"conv_transpose2d": ConvTranspose2d, "conv2d": Conv2d}
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
    """One layer ``x -> act(W x + b)``; a read-only view of the generator's tensors.

    ``operator`` is the linear map ``W`` (:class:`~geninv.operators.LinearOperator`); ``bias`` has
    one entry per output unit.
    """

    operator: LinearOperator
    bias: torch.Tensor | None
    activation: Activation

    @property
    def weight(self) -> torch.Tensor:
        """The dense matrix of ``W`` (n_out, n_in); raises UnsupportedError when it is too large."""
        return _dense_or_raise(self.operator)

    @property
    def kind(self) -> str:
        """``'dense'``, ``'conv_transpose2d'`` or ``'conv2d'``."""
        return getattr(self.operator, "kind", "dense")

    @property
    def n_in(self) -> int:
        return self.operator.shape[1]

    @property
    def n_out(self) -> int:
        return self.operator.shape[0]


def _dense_or_raise(op: LinearOperator) -> torch.Tensor:
    matrix = op.dense()
    if matrix is None:
        raise UnsupportedError(
            f"The matrix of {op!r} is larger than geninv.operators.dense_limit() bytes; use the operator "
            "(forward / adjoint) or raise the limit (GENINV_DENSE_LIMIT)."
        )
    return matrix


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
    """A generator of linear layers (dense or convolutional) and elementwise activations.

    The weights are buffers, not parameters: inversion differentiates with respect to the latent,
    never the weights. ``generator.to(device)`` moves everything.

    Parameters
    ----------
    weights : sequence of (array of shape (n_{i+1}, n_i), or LinearOperator)
        Dense layers in torch's convention (``nn.Linear.weight``): output by input. A layer may also be
        a :class:`~geninv.operators.Dense`, :class:`~geninv.operators.ConvTranspose2d` or
        :class:`~geninv.operators.Conv2d` operator (its kernel is copied into the generator).
    biases : sequence of (array of shape (n_{i+1},) or None), optional
        One entry per output unit (a convolution's per-channel bias repeated over its pixels).
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

        first = weights[0].op if isinstance(weights[0], _CachedDense) else weights[0]
        if isinstance(first, Dense):
            first = first.matrix
        elif isinstance(first, ConvTranspose2d | Conv2d):
            first = first.weight
        elif isinstance(first, LinearOperator):
            first = torch.zeros(1, 1)  # refused below, naming the layer
        first = as_tensor("weights[0]", first, ndim=(2, 4))
        dtype = dtype or (first.dtype if first.is_floating_point() else torch.get_default_dtype())
        if dtype not in (torch.float32, torch.float64):  # lower precision truncates weights and breaks exactness
            fail("dtype", "torch.float32 or torch.float64 (convert the weights first)", dtype)
        self._geometry: list[dict[str, Any] | None] = []
        widths: list[int] = []
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            tensor, geometry, (n_out, n_in) = _layer_tensor(i, w, dtype)
            if widths and n_in != widths[-1]:
                n_prev = widths[-1]
                expected = f"of shape (n_out, {n_prev})" if geometry is None else f"a layer with {n_prev} inputs"
                fail(f"weights[{i}]", f"{expected} to follow a layer with {n_prev} outputs", w, ShapeError)
            if not widths:
                widths.append(n_in)
            widths.append(n_out)
            self.register_buffer(f"weight_{i}", tensor)
            self._geometry.append(geometry)
            if b is not None:
                b = as_tensor(f"biases[{i}]", b, ndim=1, dtype=dtype, device=tensor.device)
                if b.shape[0] != n_out:
                    fail(f"biases[{i}]", f"of shape ({n_out},)", b, ShapeError)
                self.register_buffer(f"bias_{i}", b.detach().clone().contiguous())
            else:
                self.register_buffer(f"bias_{i}", None)
        self._widths = tuple(widths)
        self._op_cache: dict[int, tuple[tuple, LinearOperator]] = {}
        self._restricted: tuple | None = None  # _layer_on's last output layer on a subset of rows
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
    def random_conv(
        cls,
        latent_dim: int,
        channels: Sequence[int],
        *,
        size: int = 4,
        kernel: int = 4,
        stride: int = 2,
        padding: int = 1,
        seed: int = 0,
        bias: bool = False,
        hidden: str = "relu",
        output: str = "identity",
        negative_slope: float = 0.2,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        name: str | None = None,
    ) -> Generator:
        """A random DCGAN-style generator: a dense layer to ``(channels[0], size, size)``, then one
        transposed convolution per further entry of ``channels`` (kernel, stride and padding as given;
        the default 4 / 2 / 1 doubles the image side each time).

        Weights are i.i.d. N(0, 1/fan_in) with the fan-in of a transposed convolution taken as
        ``C_in k^2 / stride^2`` (the inputs that reach one output pixel on average).

        Examples
        --------
        >>> G = Generator.random_conv(3, [3, 2, 1], size=2, seed=0)
        >>> G.widths, G.layer_shape(3)
        ((3, 12, 32, 64), (1, 8, 8))
        """
        latent_dim = check_int("latent_dim", latent_dim, low=1)
        if isinstance(channels, str) or not isinstance(channels, Sequence) or len(channels) < 2:
            fail("channels", "a list of at least two channel counts", channels, ShapeError)
        channels = [check_int(f"channels[{i}]", c, low=1) for i, c in enumerate(channels)]
        size = check_int("size", size, low=1)
        rng = torch_generator(seed, "weights")
        n1 = channels[0] * size * size
        layers: list[Any] = [torch.randn(n1, latent_dim, generator=rng, dtype=torch.float64) / math.sqrt(latent_dim)]
        biases: list[Any] = [
            torch.randn(n1, generator=rng, dtype=torch.float64) / math.sqrt(latent_dim) if bias else None
        ]
        shape = (channels[0], size, size)
        for c_in, c_out in itertools.pairwise(channels):
            fan_in = c_in * kernel * kernel / (stride * stride)
            w = torch.randn(c_in, c_out, kernel, kernel, generator=rng, dtype=torch.float64) / math.sqrt(fan_in)
            op = ConvTranspose2d(w, shape, stride=stride, padding=padding)
            layers.append(op)
            shape = op.out_shape
            n_out = op.shape[0]
            biases.append(torch.randn(n_out, generator=rng, dtype=torch.float64) / math.sqrt(fan_in) if bias else None)
        label = name or f"random-conv-{latent_dim}-{'-'.join(map(str, channels))}-size{size}-seed{seed}"
        gen = cls(layers, biases, hidden=hidden, output=output, negative_slope=negative_slope, name=label, dtype=dtype)
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
        """``(n_0, n_1, ..., n_L)``: latent size first, output size last (flattened feature maps)."""
        return self._widths

    @property
    def latent_dim(self) -> int:
        return self.widths[0]

    @property
    def output_dim(self) -> int:
        return self.widths[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.weight_0.dtype

    @property
    def device(self) -> torch.device:
        return self.weight_0.device

    @property
    def has_bias(self) -> bool:
        return any(self.bias(i) is not None for i in range(self.n_layers))

    def weight(self, i: int) -> torch.Tensor:
        """The matrix of ``W_{i+1}``, of shape (n_{i+1}, n_i).

        A dense layer returns its stored weight; a convolution its materialised matrix
        (``operator(i).dense()``, computed once per dtype and device). Raises UnsupportedError when
        that matrix exceeds :func:`geninv.operators.dense_limit`.
        """
        if self._geometry[i] is None:
            return getattr(self, f"weight_{i}")
        return _dense_or_raise(self.operator(i))

    def operator(self, i: int) -> LinearOperator:
        """``W_{i+1}`` as a linear operator (:class:`~geninv.operators.Dense` or a convolution)."""
        tensor = getattr(self, f"weight_{i}")
        key = (tensor.data_ptr(), tensor.dtype, tensor.device, tensor._version)
        cached = self._op_cache.get(i)
        if cached is not None and cached[0] == key:
            return cached[1]
        geometry = self._geometry[i]
        if geometry is None:
            op: LinearOperator = Dense(tensor)
        else:
            op = _conv_operator(tensor, geometry)
            op = _CachedDense(op)
        self._op_cache[i] = (key, op)
        return op

    def layer_type(self, i: int) -> str:
        """``'dense'``, ``'conv_transpose2d'`` or ``'conv2d'``."""
        geometry = self._geometry[i]
        return "dense" if geometry is None else geometry["type"]

    @property
    def is_dense(self) -> bool:
        """True when every layer is a dense matrix (a fully connected generator)."""
        return all(g is None for g in self._geometry)

    def layer_shape(self, k: int) -> tuple[int, ...]:
        """Shape of ``x_k`` (0 = z): ``(C, H, W)`` where a convolution produces or reads it, else ``(n_k,)``."""
        k = check_int("k", k, low=0, high=self.n_layers)
        if k > 0 and self._geometry[k - 1] is not None:
            return tuple(self.operator(k - 1).out_shape)
        if k < self.n_layers and self._geometry[k] is not None:
            return tuple(self.operator(k).in_shape)
        return (self.widths[k],)

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of the output image: a one-channel convolution's, else a square's, else None."""
        shape = self.layer_shape(self.n_layers)
        if len(shape) == 3:
            return (shape[1], shape[2]) if shape[0] == 1 else None
        side = math.isqrt(self.output_dim)
        return (side, side) if side * side == self.output_dim else None

    def bias(self, i: int) -> torch.Tensor | None:
        """``b_{i+1}`` or None."""
        return getattr(self, f"bias_{i}")

    def activation(self, i: int) -> Activation:
        return self.output_activation if i == self.n_layers - 1 else self.hidden_activation

    def layer(self, i: int) -> Layer:
        """Layer ``i`` (``x_i -> x_{i+1}``): its operator, bias and activation."""
        return Layer(self.operator(i), self.bias(i), self.activation(i))

    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(self.layer(i) for i in range(self.n_layers))

    def describe(self) -> dict[str, Any]:
        """The architecture as plain data (what the architecture JSON stores).

        ``layers`` (one dict per layer: its type and, for a convolution, its shape parameters) is
        present only when a layer is not dense.
        """
        out = {
            "name": self.name,
            "widths": list(self.widths),
            "bias": [self.bias(i) is not None for i in range(self.n_layers)],
            "hidden": self.hidden_activation.describe(),
            "output": self.output_activation.describe(),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        if not self.is_dense:
            out["layers"] = [dict(g) if g is not None else {"type": "dense"} for g in self._geometry]
        return out

    def extra_repr(self) -> str:
        kinds = "" if self.is_dense else f"layers={[self.layer_type(i) for i in range(self.n_layers)]}, "
        return (
            f"widths={list(self.widths)}, {kinds}hidden={self.hidden_activation.name}, "
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
        out = x @ self.weight_of(i).T if self._geometry[i] is None else self.operator(i).forward(x)
        b = self.bias(i)
        return out if b is None else out + b

    def weight_of(self, i: int) -> torch.Tensor:
        """The stored tensor of layer ``i``: a dense layer's matrix, a convolution's kernel."""
        return getattr(self, f"weight_{i}")

    def backward_layer(self, i: int, d: torch.Tensor) -> torch.Tensor:
        """``W_{i+1}^T d`` for a batch ``d`` of shape (B, n_{i+1}) (the adjoint, for back-propagation)."""
        return d @ self.weight_of(i) if self._geometry[i] is None else self.operator(i).adjoint(d)

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
        return self._trace(z)

    def _layer_on(self, i: int, out_rows: torch.Tensor | None) -> tuple[LinearOperator, torch.Tensor | None]:
        """Layer ``i``'s operator and bias; the last layer's restricted to the outputs ``out_rows``
        (indices) when given."""
        op, b = self.operator(i), self.bias(i)
        if i != self.n_layers - 1 or out_rows is None:
            return op, b
        # A refit asks for the same rows in every iteration: the restricted copy is made once (a copy
        # of the [64, 512, 2048, 8192] generator's output layer is 134 MB in float64; remade on every
        # call it was a fifth of a noisy refit), and not at all where the rows are every output. The
        # layer's operator is remade when its weights change (operator()), so its identity keys them.
        versions = (out_rows._version, None if b is None else b._version)
        held = self._restricted
        if held is not None and held[0] is out_rows and held[1] is op and held[2] == versions:
            return held[3], held[4]
        base = op
        every = out_rows.numel() == op.shape[0] and bool(
            (out_rows.cpu() == torch.arange(op.shape[0], device="cpu")).all()
        )
        if not every:
            op = op.restrict(out_rows)
            b = None if b is None else b[out_rows.to(b.device)]
        self._restricted = (out_rows, base, versions, op, b)  # holding out_rows and base: their ids stay theirs
        return op, b

    def _trace(self, z: torch.Tensor, out_rows: torch.Tensor | None = None) -> Trace:
        """:meth:`trace` without its checks, for a batch ``z`` (B, n_0) of the generator's dtype
        (non-finite entries pass through). ``out_rows`` (indices into the output): the last layer is
        computed on those outputs only, e.g. the observed pixels of a refit (the output layer is
        most of a forward pass)."""
        pres, acts, sups = [], [], []
        x = z
        last = self.n_layers - 1
        with torch.no_grad():
            for i in range(self.n_layers):
                if i == last and out_rows is not None:
                    op, b = self._layer_on(i, out_rows)
                    pre = op.forward(x) if b is None else op.forward(x) + b
                else:
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


class _CachedDense(LinearOperator):
    """A convolution whose dense matrix is materialised once (per generator, dtype and device)."""

    def __init__(self, op: LinearOperator) -> None:
        self.op = op
        self._dense: torch.Tensor | None = None
        self._tried = False

    def __getattr__(self, name: str) -> Any:  # geometry: in_shape, out_shape, kind, kernel, ...
        if name in ("op", "_dense", "_tried"):
            raise AttributeError(name)
        return getattr(self.op, name)

    @property
    def shape(self) -> tuple[int, int]:
        return self.op.shape

    @property
    def dtype(self) -> torch.dtype | None:
        return self.op.dtype

    @property
    def device(self) -> torch.device | None:
        return self.op.device

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op._forward(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op._adjoint(y)

    def dense(self) -> torch.Tensor | None:
        if not self._tried:
            self._dense = self.op.dense()
            self._tried = True
        return self._dense

    def to(self, dtype: torch.dtype | None = None, device: Any = None) -> LinearOperator:
        return self.op.to(dtype, device)

    def describe(self) -> dict[str, Any]:
        return self.op.describe()

    def __repr__(self) -> str:
        return repr(self.op)


def _conv_operator(tensor: torch.Tensor, geometry: dict[str, Any]) -> LinearOperator:
    in_shape = (geometry["in_channels"], geometry["in_height"], geometry["in_width"])
    if geometry["type"] == "conv_transpose2d":
        return ConvTranspose2d(
            tensor,
            in_shape,
            stride=geometry["stride"],
            padding=geometry["padding"],
            output_padding=geometry.get("output_padding", 0),
        )
    return Conv2d(tensor, in_shape, stride=geometry["stride"], padding=geometry["padding"])


def _layer_tensor(i: int, w: Any, dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, Any] | None, tuple[int, int]]:
    """The buffer, the geometry (None for a dense layer) and the (n_out, n_in) shape of layer ``i``."""
    if isinstance(w, _CachedDense):
        w = w.op
    if isinstance(w, Dense):
        w = w.matrix
    if isinstance(w, ConvTranspose2d | Conv2d):
        tensor = as_tensor(f"weights[{i}]", w.weight, ndim=4, dtype=dtype)
        geometry = w.geometry()
        op = _conv_operator(tensor, geometry)  # validates the geometry against the cast kernel
        return tensor.detach().clone().contiguous(), geometry, op.shape
    if isinstance(w, LinearOperator):
        fail(f"weights[{i}]", "a matrix, or a Dense, ConvTranspose2d or Conv2d operator", w, UnsupportedError)
    tensor = as_tensor(f"weights[{i}]", w, ndim=2, dtype=dtype)
    if tensor.shape[0] < 1 or tensor.shape[1] < 1:
        fail(f"weights[{i}]", "a non-empty matrix", tensor, ShapeError)
    return tensor.detach().clone().contiguous(), None, (int(tensor.shape[0]), int(tensor.shape[1]))


def _check_widths(widths: Any) -> list[int]:
    if isinstance(widths, str | bytes) or not isinstance(widths, Sequence | np.ndarray):
        fail("widths", "a list of at least two positive integers", widths, ShapeError)
    widths = list(widths)
    if len(widths) < 2:
        fail("widths", "a list of at least two positive integers (latent and output sizes)", widths, ShapeError)
    return [check_int(f"widths[{i}]", w, low=1) for i, w in enumerate(widths)]
