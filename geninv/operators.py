"""Linear maps as objects: one contract for generator layers and measurement operators.

Every linear map geninv uses (a dense weight matrix, a transposed or plain 2-D convolution, a
mask, a Gaussian compressed-sensing matrix, a blur, a subsampled DCT, and any composition or
row restriction of these) is a :class:`LinearOperator` with

- ``shape``: ``(m, n)``, output size by input size, on flattened vectors;
- ``forward(x)``: ``(..., n) -> (..., m)``, batched over the leading dimensions;
- ``adjoint(y)``: ``(..., m) -> (..., n)``, the transpose (``<A x, y> = <x, A^T y>``, checked by
  :func:`dottest`);
- ``dense()``: the ``(m, n)`` matrix when it is affordable (at most :func:`dense_limit` bytes),
  else None; solvers that factorise a matrix ask for it and fall back to matrix-free products
  (forward / adjoint) when it is None;
- ``restrict(rows)``: the operator on a subset of its output rows;
- ``A @ B``: composition; ``selection()``: the kept coordinates of a selection (identity, mask),
  None for any other operator.

This is PyLops' ``LinearOperator`` (``_matvec`` / ``_rmatvec``) and deepinv's ``LinearPhysics``
(``A`` / ``A_adjoint``), written in torch. Images are flattened in (channels, rows, columns) order,
the order of ``tensor.flatten(1)`` on a ``(B, C, H, W)`` batch.

Measurement operators can be built from a spec string (:func:`from_spec`):
``gaussian:300:seed=1``, ``dct:200:seed=0``, ``blur:sigma=1.5:stride=2``, ``subsample:300:seed=2``.
"""

from __future__ import annotations

import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geninv._random import torch_generator
from geninv._validation import _show, check_int, check_real, fail
from geninv.errors import InvalidValueError, ShapeError

DENSE_LIMIT_DEFAULT = 512 * 2**20
"""Largest matrix (bytes, at the operator's dtype) that ``dense()`` materialises by default."""
_dense_override: int | None = None


def dense_limit() -> int:
    """Bytes up to which ``dense()`` materialises a matrix-free operator.

    512 MiB by default (an 8192 x 8192 float64 matrix); the environment variable
    ``GENINV_DENSE_LIMIT`` (bytes, or a number with a KiB / MiB / GiB suffix) or
    :func:`set_dense_limit` change it. Above it ``dense()`` returns None and the solvers work
    matrix-free.
    """
    if _dense_override is not None:
        return _dense_override
    env = os.environ.get("GENINV_DENSE_LIMIT")
    if env:
        from geninv._memory import parse_bytes

        return parse_bytes(env, name="GENINV_DENSE_LIMIT", minimum=0)
    return DENSE_LIMIT_DEFAULT


def set_dense_limit(n_bytes: int | None) -> None:
    """Set :func:`dense_limit` for this process (0 forces matrix-free solvers; None restores the default)."""
    global _dense_override
    _dense_override = None if n_bytes is None else check_int("n_bytes", n_bytes, low=0)


def _as_index(rows: Any, m: int) -> torch.Tensor:
    """Row indices (int64, CPU) from a bool mask of length ``m`` or a sequence of indices."""
    if isinstance(rows, np.ndarray):
        rows = torch.from_numpy(rows)
    rows = torch.as_tensor(rows)
    if rows.dtype == torch.bool:
        if rows.ndim != 1 or rows.shape[0] != m:
            fail("rows", f"a bool mask of length {m} or a list of row indices", rows, ShapeError)
        return torch.nonzero(rows.cpu()).flatten()
    if rows.ndim != 1 or rows.is_floating_point() or rows.is_complex():
        fail("rows", f"a bool mask of length {m} or a 1-D list of row indices", rows, ShapeError)
    rows = rows.to(torch.int64).cpu()
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= m):
        fail("rows", f"indices in [0, {m})", rows, ShapeError)
    return rows


class LinearOperator(ABC):
    """A linear map on flattened vectors, batched over leading dimensions (see the module docstring).

    Subclasses implement :attr:`shape`, :meth:`_forward` and :meth:`_adjoint` on 2-D batches
    ``(B, n)`` / ``(B, m)``; they may override :meth:`dense`, :meth:`selection` and :meth:`describe`.
    """

    # ------------------------------------------------------------------ the contract
    @property
    @abstractmethod
    def shape(self) -> tuple[int, int]:
        """``(m, n)``: outputs by inputs."""

    @abstractmethod
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n) -> (B, m)``."""

    @abstractmethod
    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, m) -> (B, n)``."""

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype of the operator's own tensors (None when it has none, e.g. a mask)."""
        return None

    @property
    def device(self) -> torch.device | None:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` of shape (..., n); returns (..., m)."""
        return self._batched(x, self.shape[1], self._forward)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` for ``y`` of shape (..., m); returns (..., n)."""
        return self._batched(y, self.shape[0], self._adjoint)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @staticmethod
    def _batched(x: torch.Tensor, size: int, fn) -> torch.Tensor:
        if x.shape[-1] != size:
            fail("x", f"a tensor whose last dimension is {size}", x, ShapeError)
        if x.ndim == 2:
            return fn(x)
        lead = x.shape[:-1]
        out = fn(x.reshape(-1, size))
        return out.reshape(*lead, out.shape[-1])

    def dense(self) -> torch.Tensor | None:
        """The ``(m, n)`` matrix, or None when it exceeds :func:`dense_limit` bytes.

        The default pushes the ``n`` unit vectors through :meth:`forward` (in chunks); subclasses
        that hold their matrix return it directly.
        """
        m, n = self.shape
        dtype = self.dtype or torch.float64
        if m * n * torch.finfo(dtype).bits // 8 > dense_limit():
            return None
        cols = []
        step = max(1, min(n, (64 * 2**20) // max(8 * m, 1)))
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            eye = torch.zeros(hi - lo, n, dtype=dtype, device=self.device)
            eye[torch.arange(hi - lo), torch.arange(lo, hi)] = 1
            cols.append(self.forward(eye))
        return torch.cat(cols).T.contiguous()

    def selection(self) -> torch.Tensor | None:
        """Indices of the input coordinates this operator keeps, in order, when it is a selection
        (``A x = x[idx]``: identity, mask); None for any other operator."""
        return None

    @property
    def is_selection(self) -> bool:
        """True when the operator keeps a subset of coordinates (identity or mask)."""
        return self.selection() is not None

    def restrict(self, rows: Any) -> LinearOperator:
        """The operator on output ``rows`` only (a bool mask of length m, or indices)."""
        return Restricted(self, rows)

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, LinearOperator):
            return Composed(self, other)
        if isinstance(other, torch.Tensor):  # A @ X for a matrix X of shape (n, k)
            return self.forward(other.mT).mT
        return NotImplemented

    @property
    def T(self) -> LinearOperator:
        """The adjoint as an operator."""
        return Adjoint(self)

    def to(self, dtype: torch.dtype | None = None, device: Any = None) -> LinearOperator:
        """The operator with its tensors in ``dtype`` / on ``device`` (self when nothing changes)."""
        return self

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description."""
        m, n = self.shape
        return {"type": type(self).__name__.lower(), "m": m, "n": n}

    def __repr__(self) -> str:
        m, n = self.shape
        return f"{type(self).__name__}(shape=({m}, {n}))"


def dottest(op: LinearOperator, *, batch: int = 3, dtype: torch.dtype = torch.float64, seed: int = 0) -> float:
    """Relative error of ``<A x, y> = <x, A^T y>`` on random ``x``, ``y`` (PyLops' ``dottest``).

    Returns ``max |<Ax, y> - <x, A^T y>| / (||Ax|| ||y|| + ||x|| ||A^T y||)`` over the batch: of the
    order of the dtype's precision for a correct adjoint.
    """
    m, n = op.shape
    rng = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, generator=rng, dtype=torch.float64).to(dtype=dtype, device=op.device)
    y = torch.randn(batch, m, generator=rng, dtype=torch.float64).to(dtype=dtype, device=op.device)
    ax, aty = op.forward(x), op.adjoint(y)
    if ax.shape != (batch, m) or aty.shape != (batch, n):
        raise ShapeError(f"{op!r}: forward gave {tuple(ax.shape)} and adjoint {tuple(aty.shape)}.")
    lhs = (ax.double() * y.double()).sum(-1)
    rhs = (x.double() * aty.double()).sum(-1)
    scale = torch.linalg.vector_norm(ax.double(), dim=-1) * torch.linalg.vector_norm(y.double(), dim=-1)
    scale = scale + torch.linalg.vector_norm(x.double(), dim=-1) * torch.linalg.vector_norm(aty.double(), dim=-1)
    return float(((lhs - rhs).abs() / scale.clamp_min(1e-300)).max())


# ---------------------------------------------------------------------- matrices
class Dense(LinearOperator):
    """A stored matrix ``W`` of shape (m, n): ``forward(x) = x W^T`` (``nn.Linear``'s convention)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2:
            fail("matrix", "a 2-D tensor", matrix, ShapeError)
        self.matrix = matrix

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def _w(self, x: torch.Tensor) -> torch.Tensor:
        w = self.matrix
        return w if (w.dtype == x.dtype and w.device == x.device) else w.to(dtype=x.dtype, device=x.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self._w(x).T

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self._w(y)

    def dense(self) -> torch.Tensor:
        return self.matrix

    def restrict(self, rows: Any) -> LinearOperator:
        return Dense(self.matrix[_as_index(rows, self.shape[0]).to(self.matrix.device)])

    def to(self, dtype: torch.dtype | None = None, device: Any = None) -> Dense:
        return Dense(self.matrix.to(dtype=dtype or self.matrix.dtype, device=device or self.matrix.device))

    def describe(self) -> dict[str, Any]:
        return {"type": "dense", "m": self.shape[0], "n": self.shape[1]}


class GaussianMatrix(Dense):
    """Compressed sensing: ``A`` with i.i.d. N(0, 1/m) entries (Bora et al. 2017), seeded."""

    def __init__(self, m: int, n: int, seed: int = 0) -> None:
        self.m = check_int("m", m, low=1)
        self.n = check_int("n", n, low=1)
        self.seed = check_int("seed", seed, low=0)
        rng = torch_generator(self.seed, "measurement")
        super().__init__(torch.randn(self.m, self.n, generator=rng, dtype=torch.float64) / math.sqrt(self.m))

    def restrict(self, rows: Any) -> LinearOperator:
        return Dense(self.matrix).restrict(rows)

    def to(self, dtype: torch.dtype | None = None, device: Any = None) -> LinearOperator:
        return Dense(self.matrix).to(dtype, device)

    def describe(self) -> dict[str, Any]:
        return {"type": "gaussian", "m": self.m, "n": self.n, "seed": self.seed, "spec": self.spec}

    @property
    def spec(self) -> str:
        return f"gaussian:{self.m}:seed={self.seed}"

    def __repr__(self) -> str:
        return f"GaussianMatrix(m={self.m}, n={self.n}, seed={self.seed})"


# ---------------------------------------------------------------------- selections
class Identity(LinearOperator):
    """Every coordinate observed."""

    def __init__(self, n: int) -> None:
        self.n = check_int("n", n, low=1)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def mask(self) -> np.ndarray:
        return np.ones(self.n, dtype=bool)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def selection(self) -> torch.Tensor:
        return torch.arange(self.n)

    def dense(self) -> torch.Tensor:
        return torch.eye(self.n, dtype=torch.float64)

    def restrict(self, rows: Any) -> LinearOperator:
        idx = _as_index(rows, self.n)
        mask = np.zeros(self.n, dtype=bool)
        mask[idx.numpy()] = True
        if np.array_equal(np.flatnonzero(mask), idx.numpy()):
            return Mask(mask)
        return Restricted(self, idx)

    def describe(self) -> dict[str, Any]:
        return {"type": "identity", "n": self.n}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.n == self.n

    def __hash__(self) -> int:
        return hash(("identity", self.n))

    def __repr__(self) -> str:
        return f"Identity(n={self.n})"


class Mask(LinearOperator):
    """Keep the coordinates where ``mask`` is True (inpainting, or subsampling)."""

    def __init__(self, mask: Any) -> None:
        from geninv import masks as _masks

        self.mask = _masks.validate(mask)
        self.mask.setflags(write=False)
        self._index = torch.from_numpy(np.flatnonzero(self.mask))

    @property
    def rows(self) -> torch.Tensor:
        """Indices of the observed coordinates."""
        return self._index

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self._index.numel()), int(self.mask.size))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self._index.to(x.device)]

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = y.new_zeros((y.shape[0], self.mask.size))
        out[:, self._index.to(y.device)] = y
        return out

    def selection(self) -> torch.Tensor:
        return self._index

    def dense(self) -> torch.Tensor:
        return torch.eye(self.mask.size, dtype=torch.float64)[self._index]

    def restrict(self, rows: Any) -> LinearOperator:
        idx = _as_index(rows, self.shape[0])
        return Restricted(self, idx)

    def describe(self) -> dict[str, Any]:
        return {"type": "mask", "n": int(self.mask.size), "observed": int(self.mask.sum())}

    def __repr__(self) -> str:
        return f"Mask(observed={int(self.mask.sum())} of {self.mask.size})"


class Subsample(Mask):
    """Keep ``m`` of ``n`` coordinates chosen at random (seeded): a mask drawn from a spec."""

    def __init__(self, m: int, n: int, seed: int = 0) -> None:
        self.m = check_int("m", m, low=1, high=check_int("n", n, low=1))
        self.seed = check_int("seed", seed, low=0)
        rng = torch_generator(self.seed, "measurement")
        keep = torch.randperm(n, generator=rng)[: self.m]
        mask = np.zeros(n, dtype=bool)
        mask[keep.numpy()] = True
        super().__init__(mask)

    @property
    def spec(self) -> str:
        return f"subsample:{self.m}:seed={self.seed}"

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"type": "subsample", "m": self.m, "seed": self.seed, "spec": self.spec}


# ---------------------------------------------------------------------- convolutions
class _Convolution(LinearOperator):
    """What both convolutions share: a square 4-D ``weight`` on flattened ``(C, H, W)`` images whose
    subclass sets ``in_shape``, ``out_shape``, ``stride`` and ``padding``."""

    weight: torch.Tensor
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    stride: int
    padding: int

    def _set_geometry(self, weight: Any, in_shape: Any, stride: Any, padding: Any, *, layout: str, in_axis: int) -> int:
        """Check and set ``weight`` (4-D, square kernel, ``layout``), ``in_shape`` (its channels on the
        weight's ``in_axis``), ``stride`` and ``padding``; returns the kernel size."""
        if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
            fail("weight", f"a 4-D tensor {layout}", weight, ShapeError)
        if weight.shape[2] != weight.shape[3]:
            fail("weight", f"a square kernel {layout}", weight, ShapeError)
        self.weight = weight
        self.in_shape = _check_image_shape("in_shape", in_shape)
        self.stride = check_int("stride", stride, low=1)
        self.padding = check_int("padding", padding, low=0)
        channels = int(weight.shape[in_axis])
        if self.in_shape[0] != channels:
            what = f"({channels}, H, W) to match the weight's {channels} input channels"
            fail("in_shape", what, in_shape, ShapeError)
        return int(weight.shape[2])

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[2])

    @property
    def shape(self) -> tuple[int, int]:
        return (math.prod(self.out_shape), math.prod(self.in_shape))

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def _w(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        return w if (w.dtype == x.dtype and w.device == x.device) else w.to(dtype=x.dtype, device=x.device)

    def geometry(self) -> dict[str, int]:
        """The shape parameters (what the architecture JSON stores)."""
        c, h, w = self.in_shape
        return {
            "type": self.kind,
            "in_channels": c,
            "in_height": h,
            "in_width": w,
            "out_channels": self.out_shape[0],
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
        }

    def describe(self) -> dict[str, Any]:
        return self.geometry() | {"m": self.shape[0], "n": self.shape[1]}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_shape} -> {self.out_shape}, kernel={self.kernel}, "
            f"stride={self.stride}, padding={self.padding})"
        )


class ConvTranspose2d(_Convolution):
    """A transposed 2-D convolution (DCGAN's up-sampling layer) on flattened ``(C, H, W)`` images.

    ``forward`` is ``torch.nn.functional.conv_transpose2d`` and ``adjoint`` is ``conv2d`` with the same
    weight, stride and padding.

    Parameters
    ----------
    weight : Tensor of shape (C_in, C_out, k, k)
        ``nn.ConvTranspose2d.weight``.
    in_shape : (C_in, H, W)
    stride, padding, output_padding : int
        As in ``nn.ConvTranspose2d``; the output is ``(C_out, H', W')`` with
        ``H' = (H - 1) stride - 2 padding + k + output_padding``.
    """

    kind = "conv_transpose2d"

    def __init__(
        self,
        weight: torch.Tensor,
        in_shape: Sequence[int],
        *,
        stride: int = 1,
        padding: int = 0,
        output_padding: int = 0,
    ) -> None:
        k = self._set_geometry(weight, in_shape, stride, padding, layout="(C_in, C_out, k, k)", in_axis=0)
        self.output_padding = check_int("output_padding", output_padding, low=0)
        if self.output_padding >= self.stride:
            fail("output_padding", f"smaller than the stride {self.stride}", output_padding)
        if self.padding >= k:
            fail("padding", f"smaller than the kernel size {k}", padding)
        h = (self.in_shape[1] - 1) * self.stride - 2 * self.padding + k + self.output_padding
        w = (self.in_shape[2] - 1) * self.stride - 2 * self.padding + k + self.output_padding
        if h < 1 or w < 1:
            fail("padding", "small enough to leave a non-empty output", padding, ShapeError)
        self.out_shape = (int(weight.shape[1]), h, w)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(
            x.reshape(-1, *self.in_shape),
            self._w(x),
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
        )
        return out.flatten(1)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(y.reshape(-1, *self.out_shape), self._w(y), stride=self.stride, padding=self.padding)
        return out.flatten(1)

    def to(self, dtype: torch.dtype | None = None, device: Any = None) -> ConvTranspose2d:
        w = self.weight.to(dtype=dtype or self.weight.dtype, device=device or self.weight.device)
        return ConvTranspose2d(
            w, self.in_shape, stride=self.stride, padding=self.padding, output_padding=self.output_padding
        )

    def geometry(self) -> dict[str, int]:
        return super().geometry() | {"output_padding": self.output_padding}


class Conv2d(_Convolution):
    """A 2-D convolution on flattened ``(C, H, W)`` images (``conv2d`` forward, ``conv_transpose2d`` adjoint).

    Parameters
    ----------
    weight : Tensor of shape (C_out, C_in, k, k)
        ``nn.Conv2d.weight``.
    in_shape : (C_in, H, W)
    stride, padding : int
        As in ``nn.Conv2d``; the output is ``(C_out, H', W')`` with
        ``H' = floor((H + 2 padding - k) / stride) + 1``.
    """

    kind = "conv2d"

    def __init__(self, weight: torch.Tensor, in_shape: Sequence[int], *, stride: int = 1, padding: int = 0) -> None:
        k = self._set_geometry(weight, in_shape, stride, padding, layout="(C_out, C_in, k, k)", in_axis=1)
        if self.padding >= k:
            fail("padding", f"smaller than the kernel size {k}", padding)
        h = (self.in_shape[1] + 2 * self.padding - k) // self.stride + 1
        w = (self.in_shape[2] + 2 * self.padding - k) // self.stride + 1
        if h < 1 or w < 1:
            fail(
                "weight",
                f"a kernel that fits the {self.in_shape[1]}x{self.in_shape[2]} image (with padding)",
                weight,
                ShapeError,
            )
        self.out_shape = (int(weight.shape[0]), h, w)
        # conv2d skips up to stride - 1 trailing rows; the adjoint gives them back as output_padding.
        self._adjoint_padding = (
            self.in_shape[1] - ((h - 1) * self.stride - 2 * self.padding + k),
            self.in_shape[2] - ((w - 1) * self.stride - 2 * self.padding + k),
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x.reshape(-1, *self.in_shape), self._w(x), stride=self.stride, padding=self.padding)
        return out.flatten(1)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(
            y.reshape(-1, *self.out_shape),
            self._w(y),
            stride=self.stride,
            padding=self.padding,
            output_padding=self._adjoint_padding,
        )
        return out.flatten(1)

    def to(self, dtype: torch.dtype | None = None, device: Any = None) -> Conv2d:
        w = self.weight.to(dtype=dtype or self.weight.dtype, device=device or self.weight.device)
        return Conv2d(w, self.in_shape, stride=self.stride, padding=self.padding)


def _check_hw(name: str, shape: Any) -> tuple[int, int]:
    if isinstance(shape, str) or not isinstance(shape, Sequence) or len(shape) != 2:
        fail(name, "(height, width)", shape, ShapeError)
    return tuple(check_int(f"{name}[{i}]", s, low=1) for i, s in enumerate(shape))  # type: ignore[return-value]


def _check_image_shape(name: str, shape: Any) -> tuple[int, int, int]:
    if isinstance(shape, str) or not isinstance(shape, Sequence) or len(shape) != 3:
        fail(name, "(channels, height, width)", shape, ShapeError)
    return tuple(check_int(f"{name}[{i}]", s, low=1) for i, s in enumerate(shape))  # type: ignore[return-value]


class Blur(Conv2d):
    """A Gaussian blur of a single-channel ``(H, W)`` image, optionally subsampled by ``stride``.

    A :class:`Conv2d` with a normalised Gaussian kernel of standard deviation ``sigma`` pixels (side
    ``2 ceil(2 sigma) + 1``, zero padding that keeps the image size at stride 1); with ``stride`` s
    the blurred image is sampled every s pixels: ``ceil(H / s) x ceil(W / s)`` measurements.
    """

    def __init__(self, image_shape: Sequence[int], sigma: float = 1.0, stride: int = 1) -> None:
        h, w = _check_hw("image_shape", image_shape)
        self.sigma = check_real("sigma", sigma, low=0.1, high=20.0)
        radius = math.ceil(2 * self.sigma)
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        g = torch.exp(-0.5 * (t / self.sigma) ** 2)
        kernel = torch.outer(g, g)
        kernel = (kernel / kernel.sum()).reshape(1, 1, 2 * radius + 1, 2 * radius + 1)
        super().__init__(kernel, (1, h, w), stride=check_int("stride", stride, low=1, high=8), padding=radius)

    @property
    def spec(self) -> str:
        return f"blur:sigma={self.sigma:g}:stride={self.stride}"

    def describe(self) -> dict[str, Any]:
        return {
            "type": "blur",
            "m": self.shape[0],
            "n": self.shape[1],
            "sigma": self.sigma,
            "stride": self.stride,
            "spec": self.spec,
        }

    def __repr__(self) -> str:
        return f"Blur({self.in_shape[1]}x{self.in_shape[2]}, sigma={self.sigma:g}, stride={self.stride})"


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``C`` (n, n): ``C @ x`` is the DCT of x, ``C.T`` its inverse."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(dtype)


class SubsampledDCT(LinearOperator):
    """Structured compressed sensing: ``m`` coefficients of the orthonormal 2-D DCT of an ``(H, W)`` image.

    The lowest frequency is always kept; the other ``m - 1`` coefficients are drawn at random (seeded).
    Matrix-free (two small matrix products per image); its rows are orthonormal.
    """

    def __init__(self, image_shape: Sequence[int], m: int, seed: int = 0) -> None:
        self.h, self.w = _check_hw("image_shape", image_shape)
        n = self.h * self.w
        self.m = check_int("m", m, low=1, high=n)
        self.seed = check_int("seed", seed, low=0)
        rng = torch_generator(self.seed, "measurement")
        rest = torch.randperm(n - 1, generator=rng)[: self.m - 1] + 1
        self._index = torch.cat([torch.zeros(1, dtype=torch.int64), rest.sort().values])
        self._ch = dct_matrix(self.h)
        self._cw = dct_matrix(self.w)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.m, self.h * self.w)

    def _mats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._ch.to(dtype=x.dtype, device=x.device), self._cw.to(dtype=x.dtype, device=x.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        ch, cw = self._mats(x)
        coef = ch @ x.reshape(-1, self.h, self.w) @ cw.T
        return coef.flatten(1)[:, self._index.to(x.device)]

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        ch, cw = self._mats(y)
        full = y.new_zeros(y.shape[0], self.h * self.w)
        full[:, self._index.to(y.device)] = y
        return (ch.T @ full.reshape(-1, self.h, self.w) @ cw).flatten(1)

    @property
    def spec(self) -> str:
        return f"dct:{self.m}:seed={self.seed}"

    def describe(self) -> dict[str, Any]:
        return {"type": "dct", "m": self.m, "n": self.h * self.w, "seed": self.seed, "spec": self.spec}

    def __repr__(self) -> str:
        return f"SubsampledDCT({self.h}x{self.w}, m={self.m}, seed={self.seed})"


# ---------------------------------------------------------------------- combinators
class Composed(LinearOperator):
    """``A @ B``: first ``B``, then ``A``."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        if outer.shape[1] != inner.shape[0]:
            raise ShapeError(f"Cannot compose {outer!r} with {inner!r}: {outer.shape[1]} != {inner.shape[0]}.")
        self.outer, self.inner = outer, inner

    @property
    def shape(self) -> tuple[int, int]:
        return (self.outer.shape[0], self.inner.shape[1])

    @property
    def dtype(self) -> torch.dtype | None:
        return self.inner.dtype or self.outer.dtype

    @property
    def device(self) -> torch.device | None:
        return self.inner.device or self.outer.device

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer.forward(self.inner.forward(x))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))

    def dense(self) -> torch.Tensor | None:
        sel = self.outer.selection()
        if sel is not None:
            inner = self.inner.dense()
            return None if inner is None else inner[sel.to(inner.device)]
        m, n = self.shape
        if m * n * 8 > dense_limit():
            return None
        a, b = self.outer.dense(), self.inner.dense()
        if a is None or b is None:
            return super().dense()
        dtype = torch.promote_types(a.dtype, b.dtype)
        return a.to(dtype=dtype, device=b.device) @ b.to(dtype)

    def selection(self) -> torch.Tensor | None:
        a, b = self.outer.selection(), self.inner.selection()
        return None if a is None or b is None else b[a]

    def to(self, dtype: torch.dtype | None = None, device: Any = None) -> Composed:
        return Composed(self.outer.to(dtype, device), self.inner.to(dtype, device))

    def describe(self) -> dict[str, Any]:
        return {
            "type": "composed",
            "m": self.shape[0],
            "n": self.shape[1],
            "outer": self.outer.describe(),
            "inner": self.inner.describe(),
        }

    def __repr__(self) -> str:
        return f"{self.outer!r} @ {self.inner!r}"


class Restricted(LinearOperator):
    """An operator on a subset of its output rows: ``A[rows]``."""

    def __init__(self, op: LinearOperator, rows: Any) -> None:
        self.op = op
        self.rows = _as_index(rows, op.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.rows.numel()), self.op.shape[1])

    @property
    def dtype(self) -> torch.dtype | None:
        return self.op.dtype

    @property
    def device(self) -> torch.device | None:
        return self.op.device

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.forward(x)[:, self.rows.to(x.device)]

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        full = y.new_zeros(y.shape[0], self.op.shape[0])
        full.index_add_(1, self.rows.to(y.device), y)
        return self.op.adjoint(full)

    def dense(self) -> torch.Tensor | None:
        d = self.op.dense()
        return None if d is None else d[self.rows.to(d.device)]

    def selection(self) -> torch.Tensor | None:
        sel = self.op.selection()
        return None if sel is None else sel[self.rows]

    def to(self, dtype: torch.dtype | None = None, device: Any = None) -> Restricted:
        return Restricted(self.op.to(dtype, device), self.rows)

    def describe(self) -> dict[str, Any]:
        return {"type": "restricted", "m": self.shape[0], "n": self.shape[1], "of": self.op.describe()}


class Adjoint(LinearOperator):
    """``A^T`` as an operator."""

    def __init__(self, op: LinearOperator) -> None:
        self.op = op

    @property
    def shape(self) -> tuple[int, int]:
        m, n = self.op.shape
        return (n, m)

    @property
    def dtype(self) -> torch.dtype | None:
        return self.op.dtype

    @property
    def device(self) -> torch.device | None:
        return self.op.device

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.forward(y)

    def dense(self) -> torch.Tensor | None:
        d = self.op.dense()
        return None if d is None else d.T

    @property
    def T(self) -> LinearOperator:
        return self.op


# ---------------------------------------------------------------------- specs
MEASUREMENT_KINDS = ("gaussian", "dct", "blur", "subsample")
MAX_MEASUREMENTS = 10**6
_SPEC_INT = re.compile(r"[0-9]{1,9}", re.ASCII)
_SPEC_SEED = re.compile(r"[0-9]{1,19}", re.ASCII)
_SPEC_REAL = re.compile(r"[0-9]{1,4}(\.[0-9]{1,6})?", re.ASCII)


def parse_spec(spec: str) -> dict[str, Any]:
    """Parse a measurement spec: ``gaussian:M[:seed=S]``, ``dct:M[:seed=S]``, ``subsample:M[:seed=S]`` or
    ``blur[:sigma=X][:stride=K]``. Read exactly as written; raises InvalidValueError naming ``measurements``."""

    def bad(why: str) -> None:
        raise InvalidValueError(
            f"The 'measurements' parameter must be 'gaussian:M[:seed=S]', 'dct:M[:seed=S]', "
            f"'subsample:M[:seed=S]' or 'blur[:sigma=X][:stride=K]' ({why}). Got {_show(spec)} instead."
        )

    if not isinstance(spec, str) or not spec.strip():
        bad("a non-empty string")
    parts = spec.strip().split(":")
    kind = parts[0]
    if kind not in MEASUREMENT_KINDS:
        bad(f"unknown kind {kind!r}")
    out: dict[str, Any] = {"kind": kind}
    rest = parts[1:]
    if kind != "blur":
        if not rest or not _SPEC_INT.fullmatch(rest[0]) or int(rest[0]) < 1:
            bad("M, the number of measurements, a positive integer")
        out["m"] = int(rest[0])
        if out["m"] > MAX_MEASUREMENTS:
            bad(f"at most {MAX_MEASUREMENTS} measurements")
        rest = rest[1:]
        out["seed"] = 0
        allowed = {"seed"}
    else:
        out |= {"sigma": 1.0, "stride": 1}
        allowed = {"sigma", "stride"}
    seen: set[str] = set()
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or key not in allowed or key in seen:
            bad(f"option {part!r} unknown or repeated")
        seen.add(key)
        if key == "sigma":
            if not _SPEC_REAL.fullmatch(value):
                bad("sigma a positive number")
            out["sigma"] = float(value)
        elif not (_SPEC_SEED if key == "seed" else _SPEC_INT).fullmatch(value):
            bad(f"{key} a non-negative integer")
        else:
            out[key] = int(value)
    return out


def from_spec(spec: str, n: int, *, image_shape: Sequence[int] | None = None) -> LinearOperator:
    """Build the measurement operator a spec string names (see :func:`parse_spec`) for an output of ``n``.

    ``image_shape`` (H, W) is needed by the image operators (dct, blur); by default a square image
    of ``n`` pixels. Raises InvalidValueError / ShapeError naming the parameter.

    Examples
    --------
    >>> from_spec("gaussian:300:seed=1", 784).shape
    (300, 784)
    >>> from_spec("blur:sigma=1:stride=2", 784).shape
    (196, 784)
    """
    n = check_int("n", n, low=1)
    parsed = parse_spec(spec)
    kind = parsed["kind"]
    if kind in ("gaussian", "subsample", "dct") and parsed["m"] > n:
        fail("measurements", f"at most {n} measurements (the generator's output size)", spec)
    if kind == "gaussian":
        return GaussianMatrix(parsed["m"], n, seed=parsed["seed"])
    if kind == "subsample":
        return Subsample(parsed["m"], n, seed=parsed["seed"])
    if image_shape is None:
        side = math.isqrt(n)
        if side * side != n:
            fail("measurements", f"gaussian or subsample for a non-image output of {n} values", spec)
        image_shape = (side, side)
    if image_shape[0] * image_shape[1] != n:
        fail("image_shape", f"(H, W) with H * W = {n}", image_shape, ShapeError)
    if kind == "dct":
        return SubsampledDCT(image_shape, parsed["m"], seed=parsed["seed"])
    if not 0.1 <= parsed["sigma"] <= 20 or not 1 <= parsed["stride"] <= 8:
        fail("measurements", "blur with 0.1 <= sigma <= 20 and 1 <= stride <= 8", spec)
    return Blur(image_shape, sigma=parsed["sigma"], stride=parsed["stride"])


__all__ = [
    "Adjoint",
    "Blur",
    "Composed",
    "Conv2d",
    "ConvTranspose2d",
    "Dense",
    "GaussianMatrix",
    "Identity",
    "LinearOperator",
    "Mask",
    "Restricted",
    "Subsample",
    "SubsampledDCT",
    "dense_limit",
    "dottest",
    "from_spec",
    "parse_spec",
    "set_dense_limit",
]
