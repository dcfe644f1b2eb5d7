"""Saving and loading generators in safe formats: safetensors weights + an architecture JSON.

Nothing here unpickles arbitrary objects. A generator ``path`` is stored as two files,
``path.safetensors`` (tensors ``weight_0``, ``bias_0``, ...) and ``path.json`` (the architecture).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geninv.errors import ModelFormatError
from geninv.generator import ACTIVATIONS, HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, Generator

FORMAT_VERSION = 1
MAX_FILE_BYTES = 200_000_000
SHIPPED = ("mnist",)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


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
        tensors[f"weight_{i}"] = generator.weight(i).detach().cpu().contiguous()
        if generator.bias(i) is not None:
            tensors[f"bias_{i}"] = generator.bias(i).detach().cpu().contiguous()
    save_file(tensors, str(weights_path), metadata={"format": "geninv-generator"})
    json_path.write_text(json.dumps(spec, indent=2) + "\n")
    return json_path, weights_path


def _check_spec(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ModelFormatError("The architecture JSON must be an object with 'widths', 'hidden' and 'output'.")
    widths = spec.get("widths")
    if (
        not isinstance(widths, list)
        or len(widths) < 2
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
    ):
        raise ModelFormatError(f"'widths' must be a list of at least two positive integers. Got {widths!r}.")
    n_layers = len(widths) - 1
    bias = spec.get("bias", [False] * n_layers)
    if isinstance(bias, bool):
        bias = [bias] * n_layers
    if not isinstance(bias, list) or len(bias) != n_layers or not all(isinstance(b, bool) for b in bias):
        raise ModelFormatError(f"'bias' must be a bool or a list of {n_layers} bools. Got {bias!r}.")
    acts = {}
    for key, allowed in (("hidden", HIDDEN_ACTIVATIONS), ("output", OUTPUT_ACTIVATIONS)):
        value = spec.get(key, "relu" if key == "hidden" else "identity")
        name = value.get("name") if isinstance(value, dict) else value
        slope = value.get("negative_slope", 0.2) if isinstance(value, dict) else 0.2
        name = str(name).replace("-", "_").lower()
        if name not in allowed:
            raise ModelFormatError(
                f"Unknown {key} activation {value!r}: expected one of {', '.join(allowed)} (all known: {ACTIVATIONS})."
            )
        if not isinstance(slope, int | float) or not 0 < slope < 1:
            raise ModelFormatError(f"'{key}.negative_slope' must be in (0, 1). Got {slope!r}.")
        acts[key] = (name, float(slope))
    dtype = spec.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise ModelFormatError(f"'dtype' must be one of {', '.join(_DTYPES)}. Got {dtype!r}.")
    name = spec.get("name", "uploaded")
    return {"widths": widths, "bias": bias, "acts": acts, "dtype": dtype, "name": str(name)[:80]}


def _build(spec: dict[str, Any], tensors: dict[str, torch.Tensor], dtype: torch.dtype | None) -> Generator:
    checked = _check_spec(spec)
    widths, bias = checked["widths"], checked["bias"]
    expected = {f"weight_{i}" for i in range(len(widths) - 1)} | {f"bias_{i}" for i, b in enumerate(bias) if b}
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        raise ModelFormatError(
            f"The weights file does not match the architecture: missing {missing or 'none'}, unexpected "
            f"{extra or 'none'}."
        )
    weights, biases = [], []
    for i in range(len(widths) - 1):
        shape = (widths[i + 1], widths[i])
        w = tensors[f"weight_{i}"]
        if tuple(w.shape) != shape:
            raise ModelFormatError(f"'weight_{i}' has shape {tuple(w.shape)}; the widths chain needs {shape}.")
        weights.append(w)
        if bias[i]:
            b = tensors[f"bias_{i}"]
            if tuple(b.shape) != (widths[i + 1],):
                raise ModelFormatError(f"'bias_{i}' has shape {tuple(b.shape)}; expected ({widths[i + 1]},).")
            biases.append(b)
        else:
            biases.append(None)
    for key, t in tensors.items():
        if not t.is_floating_point():
            raise ModelFormatError(f"'{key}' has dtype {t.dtype}; weights must be floating point.")
        if not bool(torch.isfinite(t).all()):
            raise ModelFormatError(f"'{key}' contains NaN or inf values.")
    (hidden, slope), (output, _) = checked["acts"]["hidden"], checked["acts"]["output"]
    return Generator(
        weights,
        biases,
        hidden=hidden,
        output=output,
        negative_slope=slope,
        name=checked["name"],
        dtype=dtype or _DTYPES[checked["dtype"]],
    )


def load_generator_bytes(arch_json: bytes, weights: bytes, *, dtype: torch.dtype | None = None) -> Generator:
    """Load from in-memory files (uploads): architecture JSON bytes and safetensors bytes.

    Raises
    ------
    ModelFormatError
        Oversized, malformed, pickled or inconsistent files; nothing is kept on failure.
    """
    from safetensors.torch import load

    for label, blob in (("architecture JSON", arch_json), ("weights file", weights)):
        if not isinstance(blob, bytes | bytearray):
            raise ModelFormatError(f"The {label} must be bytes. Got {type(blob).__name__}.")
        if len(blob) > MAX_FILE_BYTES:
            raise ModelFormatError(f"The {label} is {len(blob)} bytes; the limit is {MAX_FILE_BYTES}.")
    if weights[:2] == b"\x80\x02" or weights[:1] == b"\x80" or weights[:2] == b"PK":
        raise ModelFormatError(
            "The weights file looks like a pickle / torch.save archive; geninv only reads safetensors "
            "(convert with geninv.io.from_state_dict and save_generator)."
        )
    try:
        spec = json.loads(bytes(arch_json).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"The architecture file is not valid JSON: {exc}.") from None
    try:
        tensors = load(bytes(weights))
    except Exception as exc:  # safetensors raises its own SafetensorsError (no stable import path)
        raise ModelFormatError(f"The weights file is not a valid safetensors file ({exc}).") from None
    return _build(spec, tensors, dtype)


def load_generator(
    source: str | PathLike[str] | tuple[Any, Any],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Generator:
    """Load a shipped generator by name (``"mnist"``), a saved ``path``, or a (json, safetensors) pair.

    Examples
    --------
    >>> G = load_generator("mnist")
    >>> G.widths
    (20, 128, 392, 784)
    """
    if isinstance(source, tuple):
        json_path, weights_path = Path(source[0]), Path(source[1])
    elif isinstance(source, str) and source in SHIPPED:
        base = resources.files("geninv") / "assets"
        arch = (base / f"{source}.json").read_bytes()
        weights = (base / f"{source}.safetensors").read_bytes()
        gen = load_generator_bytes(arch, weights, dtype=dtype)
        return gen.to(device) if device is not None else gen
    else:
        json_path, weights_path = _paths(source)
    for p in (json_path, weights_path):
        if not p.is_file():
            raise ModelFormatError(f"No such generator file: {p} (expected {json_path.name} and {weights_path.name}).")
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ModelFormatError(f"{p} is {p.stat().st_size} bytes; the limit is {MAX_FILE_BYTES}.")
    gen = load_generator_bytes(json_path.read_bytes(), weights_path.read_bytes(), dtype=dtype)
    return gen.to(device) if device is not None else gen


_ACT_MODULES = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Identity: None}


def from_sequential(module: nn.Sequential, *, name: str | None = None) -> Generator:
    """Convert ``Linear / ReLU / LeakyReLU / Tanh / Sigmoid`` stacks into a :class:`Generator`.

    Hidden layers must share one activation (relu or leaky-relu); the last Linear may be followed by
    an output activation or nothing (identity).
    """
    if not isinstance(module, nn.Sequential):
        raise ModelFormatError(f"from_sequential expects an nn.Sequential. Got {type(module).__name__}.")
    linears: list[nn.Linear] = []
    acts: list[str | None] = []
    slope = 0.2
    for child in module:
        if isinstance(child, nn.Linear):
            if len(acts) < len(linears):
                acts.append("identity")
            linears.append(child)
        elif type(child) in _ACT_MODULES:
            act = _ACT_MODULES[type(child)]
            if act is None:
                continue
            if len(acts) != len(linears) - 1 or not linears:
                raise ModelFormatError(f"Activation {child!r} must follow a Linear layer.")
            if isinstance(child, nn.LeakyReLU):
                slope = float(child.negative_slope)
            acts.append(act)
        else:
            raise ModelFormatError(
                f"Unsupported module {type(child).__name__}: only Linear, ReLU, LeakyReLU, Tanh, Sigmoid, Identity."
            )
    if not linears:
        raise ModelFormatError("The nn.Sequential has no Linear layer.")
    if len(acts) < len(linears):
        acts.append("identity")
    hidden = set(acts[:-1])
    if len(hidden) > 1 or (hidden and hidden.pop() not in HIDDEN_ACTIVATIONS):
        raise ModelFormatError(f"Hidden activations must all be relu or all leaky-relu. Got {acts[:-1]}.")
    return Generator(
        [m.weight.detach() for m in linears],
        [None if m.bias is None else m.bias.detach() for m in linears],
        hidden=acts[0] if len(acts) > 1 else "relu",
        output=acts[-1],
        negative_slope=slope,
        name=name or "sequential",
    )


def from_state_dict(
    state_dict: dict[str, torch.Tensor] | str | PathLike[str],
    keys: list[str],
    *,
    hidden: str = "relu",
    output: str = "identity",
    negative_slope: float = 0.2,
    name: str | None = None,
) -> Generator:
    """Build a generator from the weight entries ``keys`` of a state dict (biases: the ``.bias`` twins).

    A path is read with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
    """
    if not isinstance(state_dict, dict):
        path = Path(state_dict)
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ModelFormatError(f"{path} is {path.stat().st_size} bytes; the limit is {MAX_FILE_BYTES}.")
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError / RuntimeError variants
            raise ModelFormatError(f"Could not read {path} as a weights-only torch file: {exc}") from None
        if not isinstance(state_dict, dict):
            raise ModelFormatError(f"{path} does not hold a state dict.")
    if not keys:
        raise ModelFormatError("'keys' must name at least one weight entry, e.g. ['fc3.weight', 'fc4.weight'].")
    weights, biases = [], []
    for key in keys:
        if key not in state_dict:
            raise ModelFormatError(f"Key {key!r} is not in the state dict (it has {sorted(state_dict)[:10]}...).")
        weights.append(state_dict[key])
        bias_key = key.removesuffix("weight") + "bias" if key.endswith("weight") else None
        biases.append(state_dict.get(bias_key) if bias_key else None)
    for key, w in zip(keys, weights):
        if not isinstance(w, torch.Tensor) or not w.is_floating_point() or not bool(torch.isfinite(w).all()):
            raise ModelFormatError(f"{key!r} must be a finite floating-point tensor.")
    return Generator(weights, biases, hidden=hidden, output=output, negative_slope=negative_slope, name=name)


def file_size_ok(n_bytes: int) -> bool:
    """True when an upload of ``n_bytes`` is within the size cap."""
    return 0 < n_bytes <= MAX_FILE_BYTES and math.isfinite(n_bytes)


def parse_spec(spec: str) -> dict[str, Any]:
    """Parse a generator spec string: ``"mnist"`` or ``"random:20-128-392-784[:seed=0][:bias]
    [:hidden=leaky_relu][:output=sigmoid]"``. Raises ModelFormatError on anything else."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelFormatError(f"A generator spec must be a non-empty string. Got {spec!r}.")
    spec = spec.strip()
    if spec in SHIPPED:
        return {"kind": "shipped", "name": spec}
    parts = spec.split(":")
    if parts[0] != "random" or len(parts) < 2:
        raise ModelFormatError(
            f"Unknown generator spec {spec!r}: use 'mnist' or 'random:20-128-392-784[:seed=0][:bias]"
            "[:hidden=relu|leaky_relu][:output=identity|sigmoid|tanh|relu]'."
        )
    try:
        widths = [int(w) for w in parts[1].replace(",", "-").split("-") if w.strip()]
    except ValueError:
        raise ModelFormatError(f"Widths {parts[1]!r} must be integers separated by '-', e.g. 20-128-392-784.") from None
    out: dict[str, Any] = {"kind": "random", "widths": widths, "seed": 0, "bias": False}
    out |= {"hidden": "relu", "output": "identity"}
    for part in parts[2:]:
        key, _, value = part.partition("=")
        if key == "bias":
            out["bias"] = value in ("", "1", "true", "True")
        elif key == "seed" and value.isdigit():
            out["seed"] = int(value)
        elif key in ("hidden", "output") and value:
            out[key] = value
        else:
            raise ModelFormatError(f"Unknown option {part!r} in generator spec {spec!r}.")
    return out


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
        raise ModelFormatError(f"Generator spec {spec!r}: {exc}") from None
    gen.name = spec
    return gen
