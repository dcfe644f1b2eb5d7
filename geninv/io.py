"""Saving and loading generators in safe formats: safetensors weights + an architecture JSON.

File format (version 2; version 1 files, which have no ``layers``, still load). A generator saved
at ``path`` is two files side by side:

``path.json``
    ``{"format": "geninv-generator", "version": 2, "name": str, "widths": [n_0, ..., n_L],
    "bias": [bool per layer], "hidden": {"name": "relu" | "leaky_relu", "negative_slope": float},
    "output": {"name": "identity" | "tanh" | "sigmoid" | "relu"}, "dtype": "float32" | ...,
    "layers": [one object per layer]}``. ``layers`` is optional (absent: every layer is dense);
    an entry is ``{"type": "dense"}``, or a convolution with its shape parameters:
    ``{"type": "conv_transpose2d", "in_channels": C, "in_height": H, "in_width": W,
    "out_channels": C', "kernel": k, "stride": s, "padding": p, "output_padding": q}`` (``conv2d``:
    the same without ``output_padding``). ``widths`` are the flattened sizes ``C * H * W``.
``path.safetensors``
    tensors ``weight_i`` (a dense layer: shape ``(n_{i+1}, n_i)``; a ``conv_transpose2d``:
    ``(C, C', k, k)``; a ``conv2d``: ``(C', C, k, k)``, torch's conventions) and ``bias_i`` of shape
    ``(n_{i+1},)`` (one entry per output unit) for the layers whose ``bias`` entry is true; nothing else.

Loading is safe: files above :data:`MAX_FILE_BYTES` (an architecture JSON above
:data:`MAX_ARCH_BYTES`) are refused before they are read, the JSON may not nest or carry huge
numbers, the safetensors header is parsed by the safetensors library (never by pickle), the
architecture is validated (widths chain, activation names, expected tensor names, shapes, float16 /
bfloat16 / float32 / float64 tensors, finite values) before a :class:`~geninv.generator.Generator`
is built (float16 and bfloat16 files load as float32), an optional :class:`~geninv.limits.Budget`
refuses a generator too large for the server before the weights are parsed, and any failure raises
:class:`~geninv.errors.ModelFormatError` without leaving a half-built object behind. Torch checkpoints
are read only by :func:`from_state_dict`, and only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import re
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geninv._validation import _show
from geninv.errors import ModelFormatError
from geninv.generator import ACTIVATIONS, HIDDEN_ACTIVATIONS, LAYER_TYPES, OUTPUT_ACTIVATIONS, Generator

FORMAT_VERSION = 2
MAX_FILE_BYTES = 200_000_000
MAX_ARCH_BYTES = 65_536
"""An architecture JSON is a few hundred bytes; anything above this is refused before parsing."""
MAX_JSON_DEPTH = 3
MAX_JSON_DIGITS = 18
SHIPPED = ("mnist", "mnist-conv")
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
_BUILD_DTYPES = {"float16": torch.float32, "bfloat16": torch.float32}  # half precision files compute in float32
_SPEC_KEYS = ("format", "version", "name", "widths", "bias", "hidden", "output", "dtype", "layers")
_CONV_KEYS = {
    "conv_transpose2d": (
        "type",
        "in_channels",
        "in_height",
        "in_width",
        "out_channels",
        "kernel",
        "stride",
        "padding",
        "output_padding",
    ),
    "conv2d": ("type", "in_channels", "in_height", "in_width", "out_channels", "kernel", "stride", "padding"),
}


def _paths(path: str | PathLike[str]) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_suffix(".json"), base.with_suffix(".safetensors")


def save_generator(generator: Generator, path: str | PathLike[str]) -> tuple[Path, Path]:
    """Write ``path.json`` (architecture) and ``path.safetensors`` (weights); return both paths."""
    from safetensors.torch import save_file

    json_path, weights_path = _paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    spec = generator.describe() | {"format": "geninv-generator", "version": FORMAT_VERSION}
    tensors = {}
    for i in range(generator.n_layers):
        tensors[f"weight_{i}"] = generator.weight_of(i).detach().cpu().contiguous()
        if generator.bias(i) is not None:
            tensors[f"bias_{i}"] = generator.bias(i).detach().cpu().contiguous()
    save_file(tensors, str(weights_path), metadata={"format": "geninv-generator"})
    json_path.write_text(json.dumps(spec, indent=2) + "\n")
    return json_path, weights_path


def _parse_json(blob: bytes) -> Any:
    """Parse an architecture JSON: bounded size, no huge integers, no deep nesting."""
    if len(blob) > MAX_ARCH_BYTES:
        raise ModelFormatError(f"The architecture JSON is {len(blob)} bytes; the limit is {MAX_ARCH_BYTES}.")

    def small_int(text: str) -> int:
        if len(text.lstrip("-")) > MAX_JSON_DIGITS:
            raise ModelFormatError(f"The architecture JSON holds an integer of {len(text)} digits.")
        return int(text)

    try:
        spec = json.loads(bytes(blob).decode("utf-8"), parse_int=small_int)
    except ModelFormatError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFormatError(f"The architecture file is not valid JSON: {str(exc)[:120]}.") from None
    if _depth(spec) > MAX_JSON_DEPTH:
        raise ModelFormatError(f"The architecture JSON nests deeper than {MAX_JSON_DEPTH} levels.")
    return spec


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _check_spec(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ModelFormatError(
            f"The architecture JSON must be an object with 'widths', 'hidden' and 'output'. Got {type(spec).__name__}."
        )
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ModelFormatError(
            f"Unknown key(s) {_show(unknown)} in the architecture JSON; the known ones are {', '.join(_SPEC_KEYS)}."
        )
    fmt, version = spec.get("format", "geninv-generator"), spec.get("version", FORMAT_VERSION)
    if fmt != "geninv-generator":
        raise ModelFormatError(f"'format' must be 'geninv-generator'. Got {_show(fmt)}.")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ModelFormatError(
            f"'version' must be an integer from 1 to {FORMAT_VERSION} (this geninv reads format "
            f"{FORMAT_VERSION}). Got {_show(version)}."
        )
    widths = spec.get("widths")
    if (
        not isinstance(widths, list)
        or len(widths) < 2
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
    ):
        raise ModelFormatError(f"'widths' must be a list of at least two positive integers. Got {_show(widths)}.")
    n_layers = len(widths) - 1
    bias = spec.get("bias", [False] * n_layers)
    if isinstance(bias, bool):
        bias = [bias] * n_layers
    if not isinstance(bias, list) or len(bias) != n_layers or not all(isinstance(b, bool) for b in bias):
        raise ModelFormatError(f"'bias' must be a bool or a list of {n_layers} bools. Got {_show(bias)}.")
    acts = {}
    for key, allowed in (("hidden", HIDDEN_ACTIVATIONS), ("output", OUTPUT_ACTIVATIONS)):
        value = spec.get(key, "relu" if key == "hidden" else "identity")
        name = value.get("name") if isinstance(value, dict) else value
        slope = value.get("negative_slope", 0.2) if isinstance(value, dict) else 0.2
        if isinstance(value, dict) and set(value) - {"name", "negative_slope"}:
            raise ModelFormatError(f"'{key}' may only have 'name' and 'negative_slope'. Got {_show(value)}.")
        name = str(name).replace("-", "_").lower() if isinstance(name, str) else name
        if name not in allowed:
            raise ModelFormatError(
                f"Unknown {key} activation {_show(value)}: expected one of {', '.join(allowed)} "
                f"(all known: {ACTIVATIONS})."
            )
        if isinstance(slope, bool) or not isinstance(slope, int | float) or not 0 < slope < 1:
            raise ModelFormatError(f"'{key}.negative_slope' must be in (0, 1). Got {_show(slope)}.")
        acts[key] = (name, float(slope))
    dtype = spec.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise ModelFormatError(f"'dtype' must be one of {', '.join(_DTYPES)}. Got {_show(dtype)}.")
    name = spec.get("name", "uploaded")
    layers = _check_layers(spec.get("layers"), widths, version)
    return {"widths": widths, "bias": bias, "acts": acts, "dtype": dtype, "name": str(name)[:80], "layers": layers}


def _check_layers(layers: Any, widths: list[int], version: int) -> list[dict[str, int | str] | None]:
    """The per-layer types of a version-2 architecture (None per dense layer), checked against ``widths``."""
    from geninv.limits import check_conv_geometry

    n_layers = len(widths) - 1
    if layers is None:
        return [None] * n_layers
    if version < 2:
        raise ModelFormatError("'layers' needs format version 2 or later. Got it in a version 1 file.")
    if not isinstance(layers, list) or len(layers) != n_layers:
        raise ModelFormatError(f"'layers' must be a list of {n_layers} layer objects. Got {_show(layers)}.")
    out: list[dict[str, int | str] | None] = []
    for i, layer in enumerate(layers):
        kind = layer.get("type") if isinstance(layer, dict) else None
        if kind not in LAYER_TYPES:
            raise ModelFormatError(
                f"'layers[{i}]' must be an object with 'type' one of {', '.join(LAYER_TYPES)}. Got {_show(layer)}."
            )
        if kind == "dense":
            if set(layer) != {"type"}:
                raise ModelFormatError(f"'layers[{i}]' (dense) may only have 'type'. Got {_show(layer)}.")
            out.append(None)
            continue
        keys = _CONV_KEYS[kind]
        missing, extra = sorted(set(keys) - set(layer)), sorted(set(layer) - set(keys))
        if missing or extra:
            raise ModelFormatError(
                f"'layers[{i}]' ({kind}) must have exactly {', '.join(keys)}: missing {missing or 'none'}, "
                f"unexpected {extra or 'none'}."
            )
        for key in keys[1:]:
            value = layer[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ModelFormatError(f"'layers[{i}].{key}' must be a non-negative integer. Got {_show(value)}.")
        check_conv_geometry(layer, what=f"'layers[{i}]'")
        c, h, w = layer["in_channels"], layer["in_height"], layer["in_width"]
        if c * h * w != widths[i]:
            raise ModelFormatError(
                f"'layers[{i}]' reads {c}x{h}x{w} = {c * h * w} inputs; 'widths[{i}]' is {widths[i]}."
            )
        n_out = layer["out_channels"] * math.prod(_conv_out_size(layer))
        if n_out != widths[i + 1]:
            raise ModelFormatError(f"'layers[{i}]' gives {n_out} outputs; 'widths[{i + 1}]' is {widths[i + 1]}.")
        out.append(dict(layer))
    return out


def _conv_out_size(layer: dict[str, Any]) -> tuple[int, int]:
    k, s, p = layer["kernel"], layer["stride"], layer["padding"]
    if layer["type"] == "conv_transpose2d":
        q = layer["output_padding"]
        return ((layer["in_height"] - 1) * s - 2 * p + k + q, (layer["in_width"] - 1) * s - 2 * p + k + q)
    return ((layer["in_height"] + 2 * p - k) // s + 1, (layer["in_width"] + 2 * p - k) // s + 1)


def _build(spec: dict[str, Any], tensors: dict[str, torch.Tensor], dtype: torch.dtype | None) -> Generator:
    from geninv.generator import _conv_operator

    checked = _check_spec(spec)
    widths, bias, layers = checked["widths"], checked["bias"], checked["layers"]
    expected = {f"weight_{i}" for i in range(len(widths) - 1)} | {f"bias_{i}" for i, b in enumerate(bias) if b}
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        raise ModelFormatError(
            f"The weights file does not match the architecture: missing {missing or 'none'}, unexpected "
            f"{extra or 'none'}."
        )
    weights, biases = [], []
    for i in range(len(widths) - 1):
        layer = layers[i]
        if layer is None:
            shape: tuple[int, ...] = (widths[i + 1], widths[i])
        elif layer["type"] == "conv_transpose2d":
            shape = (layer["in_channels"], layer["out_channels"], layer["kernel"], layer["kernel"])
        else:
            shape = (layer["out_channels"], layer["in_channels"], layer["kernel"], layer["kernel"])
        w = tensors[f"weight_{i}"]
        if tuple(w.shape) != shape:
            need = "the widths chain needs" if layer is None else f"its {layer['type']} layer needs"
            raise ModelFormatError(f"'weight_{i}' has shape {tuple(w.shape)}; {need} {shape}.")
        weights.append(w)
        if bias[i]:
            b = tensors[f"bias_{i}"]
            if tuple(b.shape) != (widths[i + 1],):
                raise ModelFormatError(f"'bias_{i}' has shape {tuple(b.shape)}; expected ({widths[i + 1]},).")
            biases.append(b)
        else:
            biases.append(None)
    for key, t in tensors.items():
        if t.dtype not in _DTYPES.values():
            kind = "floating point" if not t.is_floating_point() else "float16, bfloat16, float32 or float64"
            raise ModelFormatError(f"'{key}' has dtype {t.dtype}; weights must be {kind}.")
        if not bool(torch.isfinite(t).all()):
            raise ModelFormatError(f"'{key}' contains NaN or inf values.")
    (hidden, slope), (output, _) = checked["acts"]["hidden"], checked["acts"]["output"]
    weights = [w if layer is None else _conv_operator(w, layer) for w, layer in zip(weights, layers, strict=True)]
    return _generator_or_format_error(
        weights,
        biases,
        hidden=hidden,
        output=output,
        negative_slope=slope,
        name=checked["name"],
        dtype=dtype or _BUILD_DTYPES.get(checked["dtype"], _DTYPES[checked["dtype"]]),
    )


def _generator_or_format_error(*args: Any, **kwargs: Any) -> Generator:
    """Build a Generator; its validation errors become ModelFormatError (same message)."""
    try:
        return Generator(*args, **kwargs)
    except ValueError as exc:
        if isinstance(exc, ModelFormatError):
            raise
        raise ModelFormatError(str(exc)) from None


def _looks_like_pickle(blob: bytes) -> bool:
    """Pickle protocol 2+ starts with 0x80; ``torch.save`` archives are zip files (``PK``)."""
    return blob[:1] == b"\x80" or blob[:2] == b"PK"


def load_generator_bytes(
    arch_json: bytes, weights: bytes, *, dtype: torch.dtype | None = None, limits: Any = None
) -> Generator:
    """Load from in-memory files (uploads): architecture JSON bytes and safetensors bytes.

    ``limits`` (a :class:`geninv.limits.Budget`), when given, refuses a generator larger than the
    budget from its architecture alone, before the weights are parsed.

    Raises
    ------
    ModelFormatError
        Oversized, malformed, pickled or inconsistent files; nothing is kept on failure.
    BudgetError
        The architecture exceeds ``limits``.
    """
    from safetensors.torch import load

    for label, blob in (("architecture JSON", arch_json), ("weights file", weights)):
        if not isinstance(blob, bytes | bytearray):
            raise ModelFormatError(f"The {label} must be bytes. Got {type(blob).__name__}.")
        if len(blob) > MAX_FILE_BYTES:
            raise ModelFormatError(f"The {label} is {len(blob)} bytes; the limit is {MAX_FILE_BYTES}.")
    spec = _parse_json(arch_json)
    if limits is not None:
        limits.check_widths(_check_spec(spec)["widths"], what="The uploaded generator")
    weights = bytes(weights)
    try:
        # The safetensors library parses the header; a pickle is never handed to an unpickler.
        tensors = load(weights)
    except Exception as exc:  # safetensors raises its own SafetensorError (no stable import path)
        if _looks_like_pickle(weights):
            raise ModelFormatError(
                "The weights file looks like a pickle / torch.save archive, which geninv never unpickles; "
                "it reads safetensors only (convert with geninv.io.from_state_dict, then save_generator)."
            ) from None
        raise ModelFormatError(
            f"The weights file is not a valid safetensors file (truncated or corrupt: {exc})."
        ) from None
    return _build(spec, tensors, dtype)


def load_generator(
    source: str | PathLike[str] | tuple[Any, Any],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Generator:
    """Load a shipped generator by name (``"mnist"``), a saved ``path``, or a (json, safetensors) pair.

    Parameters
    ----------
    source : str, path or tuple
        ``"mnist"`` or ``"mnist-conv"`` (shipped in ``assets/``, see :mod:`geninv._assets`); a path
        ``p`` (reads ``p.json`` and ``p.safetensors``; a suffix on ``p`` is ignored); a pair of paths
        ``(json_path, safetensors_path)``; or a pair of ``bytes`` (uploaded files, as
        :func:`load_generator_bytes`).
    dtype : torch.dtype, optional
        Cast the weights (default: the dtype stored in the architecture JSON).
    device : torch.device or str, optional

    Returns
    -------
    Generator

    Raises
    ------
    ModelFormatError
        Missing, oversized, malformed, pickled or inconsistent files.

    Examples
    --------
    >>> G = load_generator("mnist")
    >>> G.widths
    (20, 128, 392, 784)
    """
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ModelFormatError(f"A source pair must be (architecture JSON, safetensors). Got {len(source)} items.")
        if all(isinstance(part, bytes | bytearray) for part in source):
            gen = load_generator_bytes(bytes(source[0]), bytes(source[1]), dtype=dtype)
            return gen.to(device) if device is not None else gen
        json_path, weights_path = Path(source[0]), Path(source[1])
    elif isinstance(source, str) and source in SHIPPED:
        from geninv._assets import asset

        arch = asset(f"{source}.json").read_bytes()
        weights = asset(f"{source}.safetensors").read_bytes()
        gen = load_generator_bytes(arch, weights, dtype=dtype)
        return gen.to(device) if device is not None else gen
    else:
        json_path, weights_path = _paths(source)
    for p in (json_path, weights_path):
        if not p.is_file():
            raise ModelFormatError(
                f"No such generator file: {p} (expected {json_path.name} and {weights_path.name}; "
                f"shipped generators: {', '.join(SHIPPED)})."
            )
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ModelFormatError(f"{p} is {p.stat().st_size} bytes; the limit is {MAX_FILE_BYTES}.")
    gen = load_generator_bytes(json_path.read_bytes(), weights_path.read_bytes(), dtype=dtype)
    return gen.to(device) if device is not None else gen


_ACT_MODULES = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}


def _flatten(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    out = []
    for child_name, child in module.named_children():
        full = f"{prefix}{child_name}"
        out += _flatten(child, full + ".") if isinstance(child, nn.Sequential) else [(full, child)]
    return out


def from_sequential(module: nn.Sequential, *, name: str | None = None) -> Generator:
    """Convert a stack of ``Linear / ConvTranspose2d / Conv2d`` layers and activations into a :class:`Generator`.

    Hidden layers must share one activation (relu, or leaky-relu with one slope); the last layer may be
    followed by an output activation (identity, tanh, sigmoid or relu) or nothing. Nested
    ``nn.Sequential`` blocks are flattened and ``nn.Identity`` is skipped. A convolution needs its
    input as an image: an ``nn.Unflatten(1, (C, H, W))`` after a Linear layer (or a convolution
    before it) gives the shape; a trailing ``nn.Flatten`` is skipped. Convolutions must have square
    kernels, one group, no dilation, zero padding and integer stride / padding. The result computes
    the module's own forward on flattened inputs and outputs (in the module's dtype).

    Raises
    ------
    ModelFormatError
        Any other module (named by its position), an activation that does not follow a layer, mixed
        hidden activations, or a convolution whose input shape is unknown.

    Examples
    --------
    >>> from torch import nn
    >>> G = from_sequential(nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 30), nn.Sigmoid()))
    >>> G.widths, G.output_activation.name
    ((4, 12, 30), 'sigmoid')
    """
    from geninv.operators import Conv2d, ConvTranspose2d

    if not isinstance(module, nn.Sequential):
        raise ModelFormatError(f"from_sequential expects an nn.Sequential. Got {type(module).__name__}.")
    layers: list[Any] = []
    biases: list[torch.Tensor | None] = []
    acts: list[str] = []
    slopes: set[float] = set()
    image: tuple[int, ...] | None = None  # shape of the current activation when it is an image
    flattened = False
    for child_name, child in _flatten(module, ""):
        if isinstance(child, nn.Identity):
            continue
        if flattened and type(child) not in _ACT_MODULES:  # an elementwise activation may follow the flattening
            raise ModelFormatError(
                f"Module '{child_name}' follows an nn.Flatten; only activations may come after the flattening."
            )
        if type(child) is nn.Linear:
            if len(acts) < len(layers):
                acts.append("identity")
            layers.append(child.weight.detach())
            biases.append(None if child.bias is None else child.bias.detach())
            image = None
        elif type(child) in (nn.ConvTranspose2d, nn.Conv2d):
            if len(acts) < len(layers):
                acts.append("identity")
            if image is None or len(image) != 3:
                raise ModelFormatError(
                    f"Module '{child_name}' ({type(child).__name__}) needs its input shape: put an "
                    "nn.Unflatten(1, (C, H, W)) after the Linear layer before it."
                )
            op = _conv_from_module(child_name, child, image, ConvTranspose2d, Conv2d)
            layers.append(op)
            image = op.out_shape
            b = None if child.bias is None else child.bias.detach().repeat_interleave(image[1] * image[2])
            biases.append(b)
        elif type(child) is nn.Unflatten:
            shape = tuple(int(d) for d in child.unflattened_size)
            n_prev = layers[-1].shape[0] if layers else None
            if child.dim not in (1, -1) or len(shape) != 3 or (n_prev is not None and math.prod(shape) != n_prev):
                raise ModelFormatError(
                    f"Module '{child_name}' (Unflatten) must turn the previous layer's {n_prev} outputs into "
                    f"(C, H, W) along dim 1. Got dim {child.dim} and size {shape}."
                )
            image = shape
        elif type(child) is nn.Flatten:
            flattened = True
        elif type(child) in _ACT_MODULES:
            if len(acts) != len(layers) - 1:
                where = "the first layer" if not layers else "another activation"
                raise ModelFormatError(
                    f"Module '{child_name}' ({type(child).__name__}) must directly follow a Linear or convolution "
                    f"layer; it follows {where}."
                )
            if isinstance(child, nn.LeakyReLU):
                slopes.add(float(child.negative_slope))
            acts.append(_ACT_MODULES[type(child)])
        else:
            raise ModelFormatError(
                f"Unsupported module '{child_name}' ({type(child).__name__}): only Linear, ConvTranspose2d, Conv2d, "
                "ReLU, LeakyReLU, Tanh, Sigmoid, Unflatten, Flatten and Identity can be converted."
            )
    if not layers:
        raise ModelFormatError("The nn.Sequential has no Linear layer (nor a convolution).")
    if len(acts) < len(layers):
        acts.append("identity")
    hidden = sorted(set(acts[:-1]))
    if len(hidden) > 1 or (hidden and hidden[0] not in HIDDEN_ACTIVATIONS):
        raise ModelFormatError(
            f"Hidden activations must all be relu or all leaky-relu (a layer without an activation is not "
            f"allowed between layers). Got {acts[:-1]}."
        )
    if len(slopes) > 1:
        raise ModelFormatError(f"All LeakyReLU modules must share one negative_slope. Got {sorted(slopes)}.")
    if acts[-1] == "leaky_relu":
        raise ModelFormatError(
            "The output activation must be identity, tanh, sigmoid or relu. Got LeakyReLU after the last layer."
        )
    return _generator_or_format_error(
        layers,
        biases,
        hidden=hidden[0] if hidden else "relu",
        output=acts[-1],
        negative_slope=slopes.pop() if slopes else 0.2,
        name=name or "sequential",
    )


def _conv_from_module(child_name: str, child: nn.Module, image: tuple[int, ...], transposed: type, plain: type) -> Any:
    """The geninv operator of an ``nn.ConvTranspose2d`` / ``nn.Conv2d`` reading ``image`` (C, H, W)."""

    def one(value: Any, label: str) -> int:
        values = tuple(value) if isinstance(value, tuple | list) else (value,)
        if len(set(values)) != 1 or not isinstance(values[0], int):
            raise ModelFormatError(f"Module '{child_name}': {label} must be one integer for both axes. Got {value}.")
        return int(values[0])

    one(child.kernel_size, "the kernel size")  # square kernels only
    stride, padding = one(child.stride, "the stride"), one(child.padding, "the padding")
    if child.groups != 1 or one(child.dilation, "the dilation") != 1 or child.padding_mode != "zeros":
        raise ModelFormatError(f"Module '{child_name}': only groups=1, dilation=1 and zero padding can be converted.")
    weight = child.weight.detach()
    try:
        if isinstance(child, nn.ConvTranspose2d):
            q = one(child.output_padding, "the output padding")
            return transposed(weight, image, stride=stride, padding=padding, output_padding=q)
        return plain(weight, image, stride=stride, padding=padding)
    except ValueError as exc:
        raise ModelFormatError(f"Module '{child_name}' ({type(child).__name__}): {exc}") from None


def _read_state_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFormatError(f"No such state-dict file: {path}.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ModelFormatError(f"{path} is {size} bytes; the limit is {MAX_FILE_BYTES}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load

        try:
            return load(path.read_bytes())
        except Exception as exc:  # SafetensorError
            raise ModelFormatError(f"{path} is not a valid safetensors file ({exc}).") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError variants
        raise ModelFormatError(
            f"Could not read {path} as a weights-only torch file (arbitrary pickled objects are refused): {exc}"
        ) from None
    if not isinstance(state, dict):
        raise ModelFormatError(f"{path} does not hold a state dict (a dict of tensors). Got {type(state).__name__}.")
    return state


def from_state_dict(
    state_dict: dict[str, torch.Tensor] | str | PathLike[str],
    keys: list[str],
    *,
    hidden: str = "relu",
    output: str = "identity",
    negative_slope: float = 0.2,
    name: str | None = None,
) -> Generator:
    """Build a generator from the weight entries ``keys`` of a state dict.

    Parameters
    ----------
    state_dict : dict of str to Tensor, or path
        A path is read with ``torch.load(weights_only=True)`` (which refuses arbitrary pickled objects),
        or with the safetensors library when it ends in ``.safetensors``.
    keys : list of str
        Weight entries in forward order, e.g. ``["fc3.weight", "fc4.weight"]``. Each layer's bias is its
        ``.bias`` twin when present (bias-free layers simply have none).
    hidden, output, negative_slope, name
        As for :class:`~geninv.generator.Generator`.

    Raises
    ------
    ModelFormatError
        Unreadable file, missing key, non-floating or non-finite tensor, shapes that do not chain.

    Examples
    --------
    >>> sd = {"fc1.weight": torch.randn(12, 4), "fc2.weight": torch.randn(30, 12), "fc2.bias": torch.zeros(30)}
    >>> G = from_state_dict(sd, ["fc1.weight", "fc2.weight"])
    >>> G.widths, [G.bias(i) is not None for i in range(2)]
    ((4, 12, 30), [False, True])
    """
    if not isinstance(state_dict, dict):
        state_dict = _read_state_dict(Path(state_dict))
    if isinstance(keys, str) or not isinstance(keys, list | tuple) or not keys:
        raise ModelFormatError(
            f"'keys' must be a non-empty list of weight names, e.g. ['fc3.weight', 'fc4.weight']. Got {keys!r}."
        )
    weights, biases = [], []
    for key in keys:
        if key not in state_dict:
            known = sorted(map(str, state_dict))
            shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
            raise ModelFormatError(f"Key {key!r} is not in the state dict (it has: {shown}).")
        bias_key = key.removesuffix("weight") + "bias" if key.endswith("weight") else None
        for label in (key, bias_key):
            if label is None or label not in state_dict:
                continue
            t = state_dict[label]
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise ModelFormatError(f"{label!r} must be a floating-point tensor. Got {_describe(t)}.")
            if not bool(torch.isfinite(t).all()):
                raise ModelFormatError(f"{label!r} contains NaN or inf values.")
        weights.append(state_dict[key])
        biases.append(state_dict.get(bias_key) if bias_key else None)
    return _generator_or_format_error(
        weights, biases, hidden=hidden, output=output, negative_slope=negative_slope, name=name
    )


def _describe(t: Any) -> str:
    return f"a tensor of dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__


_WIDTHS = re.compile(r"[0-9]{1,9}(?:[-,][0-9]{1,9})+", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,20}", re.ASCII)
_BOOLS = {"": True, "1": True, "true": True, "True": True, "0": False, "false": False, "False": False}


def parse_spec(spec: str) -> dict[str, Any]:
    """Parse a generator spec string: ``"mnist"``, ``"mnist-conv"`` or ``"random:20-128-392-784[:seed=0][:bias]
    [:hidden=leaky_relu][:output=sigmoid]"``. Raises ModelFormatError on anything else.

    The spec is read exactly as written: widths are ASCII digits joined by '-', each option appears
    at most once, and the generator stays within :data:`geninv.limits.HARD_LIMITS`.
    """
    from geninv.errors import BudgetError
    from geninv.limits import HARD_LIMITS

    if not isinstance(spec, str) or not spec.strip():
        raise ModelFormatError(f"A generator spec must be a non-empty string. Got {_show(spec)}.")
    spec = spec.strip()
    if spec in SHIPPED:
        return {"kind": "shipped", "name": spec}
    parts = spec.split(":")
    if parts[0] != "random" or len(parts) < 2:
        raise ModelFormatError(
            f"Unknown generator spec {_show(spec)}: use 'mnist', 'mnist-conv' or 'random:20-128-392-784[:seed=0][:bias]"
            "[:hidden=relu|leaky_relu][:output=identity|sigmoid|tanh|relu]'."
        )
    if not _WIDTHS.fullmatch(parts[1]):
        raise ModelFormatError(
            f"Widths {_show(parts[1])} must be positive integers separated by '-', e.g. 20-128-392-784."
        )
    widths = [int(w) for w in re.split("[-,]", parts[1])]
    if min(widths) < 1:
        raise ModelFormatError(f"Widths {_show(parts[1])} must be positive integers (no zero width).")
    try:
        HARD_LIMITS.check_widths(widths, what=f"The generator spec {spec[:40]!r}", hard=True)
    except BudgetError as exc:
        raise ModelFormatError(str(exc)) from None
    out: dict[str, Any] = {"kind": "random", "widths": widths, "seed": 0, "bias": False}
    out |= {"hidden": "relu", "output": "identity"}
    seen: set[str] = set()
    for part in parts[2:]:
        key, _, value = part.partition("=")
        if key in seen:
            raise ModelFormatError(f"Option {key!r} appears twice in generator spec {_show(spec)}.")
        seen.add(key)
        if key == "bias" and value in _BOOLS:
            out["bias"] = _BOOLS[value]
        elif key == "seed" and _DIGITS.fullmatch(value):
            out["seed"] = int(value)
        elif key in ("hidden", "output") and value:
            out[key] = value
        else:
            raise ModelFormatError(f"Unknown option {_show(part)} in generator spec {_show(spec)}.")
    return out


def spec_widths(spec: str) -> tuple[int, ...]:
    """The widths a spec names, without building its generator (the shipped ones read their JSON)."""
    parsed = parse_spec(spec)
    if parsed["kind"] == "random":
        return tuple(parsed["widths"])
    from geninv._assets import asset

    arch = asset(f"{parsed['name']}.json").read_bytes()
    return tuple(_check_spec(_parse_json(arch))["widths"])


def generator_from_spec(spec: str, *, dtype: torch.dtype | None = None) -> Generator:
    """Build the generator a spec string names (see :func:`parse_spec`); random ones are float64."""
    parsed = parse_spec(spec)
    if parsed["kind"] == "shipped":
        return load_generator(parsed["name"], dtype=dtype)
    try:
        gen = Generator.random(
            parsed["widths"],
            seed=parsed["seed"],
            bias=parsed["bias"],
            hidden=parsed["hidden"],
            output=parsed["output"],
            dtype=dtype or torch.float64,
        )
    except ValueError as exc:
        raise ModelFormatError(f"Generator spec {_show(spec)}: {exc}") from None
    gen.name = spec
    return gen
