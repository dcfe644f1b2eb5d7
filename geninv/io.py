"""Saving and loading generators in safe formats: safetensors weights + an architecture JSON.

File format (version 1). A generator saved at ``path`` is two files side by side:

``path.json``
    ``{"format": "geninv-generator", "version": 1, "name": str, "widths": [n_0, ..., n_L],
    "bias": [bool per layer], "hidden": {"name": "relu" | "leaky_relu", "negative_slope": float},
    "output": {"name": "identity" | "tanh" | "sigmoid" | "relu"}, "dtype": "float32" | ...}``
``path.safetensors``
    tensors ``weight_i`` of shape ``(n_{i+1}, n_i)`` and ``bias_i`` of shape ``(n_{i+1},)`` for the
    layers whose ``bias`` entry is true; nothing else.

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
import re
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geninv._validation import _show
from geninv.errors import ModelFormatError
from geninv.generator import ACTIVATIONS, HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, Generator

FORMAT_VERSION = 1
MAX_FILE_BYTES = 200_000_000
MAX_ARCH_BYTES = 65_536
"""An architecture JSON is a few hundred bytes; anything above this is refused before parsing."""
MAX_JSON_DEPTH = 3
MAX_JSON_DIGITS = 18
SHIPPED = ("mnist",)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
_BUILD_DTYPES = {"float16": torch.float32, "bfloat16": torch.float32}  # half precision files compute in float32
_SPEC_KEYS = ("format", "version", "name", "widths", "bias", "hidden", "output", "dtype")


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
        if t.dtype not in _DTYPES.values():
            kind = "floating point" if not t.is_floating_point() else "float16, bfloat16, float32 or float64"
            raise ModelFormatError(f"'{key}' has dtype {t.dtype}; weights must be {kind}.")
        if not bool(torch.isfinite(t).all()):
            raise ModelFormatError(f"'{key}' contains NaN or inf values.")
    (hidden, slope), (output, _) = checked["acts"]["hidden"], checked["acts"]["output"]
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
        ``"mnist"`` (shipped in ``geninv/assets``, found through :mod:`importlib.resources`); a path
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
        base = resources.files("geninv") / "assets"
        arch = (base / f"{source}.json").read_bytes()
        weights = (base / f"{source}.safetensors").read_bytes()
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
    """Convert a ``Linear / ReLU / LeakyReLU / Tanh / Sigmoid / Identity`` stack into a :class:`Generator`.

    Hidden layers must share one activation (relu, or leaky-relu with one slope); the last Linear may be
    followed by an output activation (identity, tanh, sigmoid or relu) or nothing. Nested
    ``nn.Sequential`` blocks are flattened and ``nn.Identity`` is skipped. The result computes the
    module's own forward (in the module's dtype).

    Raises
    ------
    ModelFormatError
        Any other module (named by its position), an activation that does not follow a Linear, or
        mixed hidden activations.

    Examples
    --------
    >>> from torch import nn
    >>> G = from_sequential(nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 30), nn.Sigmoid()))
    >>> G.widths, G.output_activation.name
    ((4, 12, 30), 'sigmoid')
    """
    if not isinstance(module, nn.Sequential):
        raise ModelFormatError(f"from_sequential expects an nn.Sequential. Got {type(module).__name__}.")
    linears: list[nn.Linear] = []
    acts: list[str] = []
    slopes: set[float] = set()
    for child_name, child in _flatten(module, ""):
        if isinstance(child, nn.Identity):
            continue
        if type(child) is nn.Linear:
            if len(acts) < len(linears):
                acts.append("identity")
            linears.append(child)
        elif type(child) in _ACT_MODULES:
            if len(acts) != len(linears) - 1:
                where = "the first Linear" if not linears else "another activation"
                raise ModelFormatError(
                    f"Module '{child_name}' ({type(child).__name__}) must directly follow a Linear layer; "
                    f"it follows {where}."
                )
            if isinstance(child, nn.LeakyReLU):
                slopes.add(float(child.negative_slope))
            acts.append(_ACT_MODULES[type(child)])
        else:
            raise ModelFormatError(
                f"Unsupported module '{child_name}' ({type(child).__name__}): only Linear, ReLU, LeakyReLU, "
                "Tanh, Sigmoid and Identity can be converted."
            )
    if not linears:
        raise ModelFormatError("The nn.Sequential has no Linear layer.")
    if len(acts) < len(linears):
        acts.append("identity")
    hidden = sorted(set(acts[:-1]))
    if len(hidden) > 1 or (hidden and hidden[0] not in HIDDEN_ACTIVATIONS):
        raise ModelFormatError(
            f"Hidden activations must all be relu or all leaky-relu (a Linear without an activation is not "
            f"allowed between layers). Got {acts[:-1]}."
        )
    if len(slopes) > 1:
        raise ModelFormatError(f"All LeakyReLU modules must share one negative_slope. Got {sorted(slopes)}.")
    if acts[-1] == "leaky_relu":
        raise ModelFormatError(
            "The output activation must be identity, tanh, sigmoid or relu. Got LeakyReLU after the last Linear."
        )
    return _generator_or_format_error(
        [m.weight.detach() for m in linears],
        [None if m.bias is None else m.bias.detach() for m in linears],
        hidden=hidden[0] if hidden else "relu",
        output=acts[-1],
        negative_slope=slopes.pop() if slopes else 0.2,
        name=name or "sequential",
    )


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
    """Parse a generator spec string: ``"mnist"`` or ``"random:20-128-392-784[:seed=0][:bias]
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
            f"Unknown generator spec {_show(spec)}: use 'mnist' or 'random:20-128-392-784[:seed=0][:bias]"
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
    arch = (resources.files("geninv") / "assets" / f"{parsed['name']}.json").read_bytes()
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
