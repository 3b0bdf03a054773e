"""One YAML loader for every config of the project: YAML -> typed dataclasses, with ``--set key=value`` overrides.

Configs are plain dataclasses (``DataConfig``, ``ModelConfig`` here; the training recipe in ``training/config.py``;
the node's parameters in ``equiseg_ros/ros``). ``load_config`` checks every key and type against the dataclass, so a
typo or a wrong type fails at start with the file, the dotted key and the expected type, never hours into a run.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the source, the dotted key and the problem."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the type hint ``tp`` (recursing into dataclasses, lists, tuples, dicts)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        vt = args[1] if args else Any
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key for {cls.__name__} (known: {sorted(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{prefix}{exc}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict of YAML-safe values (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value), the value parsed as YAML (``3`` int, ``[1,2]`` list...)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a nested dict (returns a new dict; nested keys are created)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a mapping")
            node = nxt
        node[path[-1]] = value
    return out


def load_yaml_dict(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None) -> T:
    """Load ``path`` (YAML) into ``cls``, after applying ``overrides``; errors name the file and dotted key."""
    data = dict(base or {})
    if path is not None:
        data.update(load_yaml_dict(path))
    data = apply_overrides(data, overrides)
    source = str(path) if path is not None else "<config>"
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def save_config(obj: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML beside a run's outputs (atomically)."""
    from equiseg_ros.checkpoint import atomic_write

    text = yaml.safe_dump(to_dict(obj), sort_keys=False)
    return atomic_write(path, lambda f: f.write(text.encode()))


# ---- the shared schemas ----------------------------------------------------------------------------------

@dataclass
class DataConfig:
    """Which dataset, where, which modalities (in model order) and how frames are sized."""

    dataset: typing.Literal["deliver", "muses", "synthetic"] = "synthetic"
    root: str = "data/synthetic"
    modalities: list[str] = field(default_factory=lambda: ["rgb", "depth", "event", "lidar"])
    train_split: str = "train"
    val_split: str = "val"
    conditions: list[str] = field(default_factory=list)  # DeLiVER: cloud, fog, night, rain, sun; empty = all
    corner_cases: list[str] = field(default_factory=list)  # motionblur, overexposure, ... ; empty = all
    depth_source: typing.Literal["hha", "depth"] = "hha"  # DeLiVER "depth" is read from hha/ by default
    image_size: int = 256  # training crop / validation short side
    muses_resize: typing.Literal["square", "aspect"] = "square"  # AnySeg's 1024x1024 or aspect-preserving
    num_workers: int = 0

    def check(self) -> None:
        if not self.modalities:
            raise ValueError("modalities: at least one modality is required")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities: duplicates in {self.modalities}")
        if self.image_size <= 0 or self.image_size % 32:
            raise ValueError(f"image_size: must be a positive multiple of 32, got {self.image_size}")

    def spec(self) -> "ModelSpec":
        """The ModelSpec this data config implies (preset restricted to the modalities, at image_size)."""
        from dataclasses import replace

        from equiseg_ros.spec import get_preset

        spec = get_preset(self.dataset, self.modalities).with_input_size(self.image_size, self.image_size)
        if self.depth_source == "depth" and "depth" in spec.modality_names:
            # DeLiVER's depth/ folder holds plain depth, not HHA: the representation must say so, since the node
            # picks the depth encoding from the spec.
            mods = tuple(replace(m, representation="depth8") if m.name == "depth" else m for m in spec.modalities)
            spec = replace(spec, modalities=mods)
        return spec


@dataclass
class ModelConfig:
    """Which network: architecture, backbone size, head width, ablation switches, optional pretrained weights."""

    name: typing.Literal["equiseg", "m_segformer", "cmnext", "segformer"] = "equiseg"
    backbone: typing.Literal["mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5"] = "mit_b0"
    decoder_dim: int | None = None  # None = the architecture's default for the backbone
    pretrained: str | None = None  # local path of an official mit_b*.pth (never downloaded)
    drop_path: float = 0.1
    fusion: typing.Literal["sqhub", "mean"] = "sqhub"  # EQUISeg ablation: Self-Query Hub or plain mean
    cross_attention: bool = True  # EQUISeg ablation: inject auxiliary features by cross-attention
    residual: bool = True  # EQUISeg ablation: residual add of the cross-attention output
    # Compute exactly what a published checkpoint's source computed (set by `python -m equiseg_ros.models convert`):
    # "deliver" = DELIVER's CMNeXt (scored auxiliary maps carried in place, their [B,C,H,W]->[B,H,W,C] buffer
    # reinterpretation before adding x_f, presence ignored beyond zero-fill, MiT LayerNorm eps 1e-5 everywhere);
    # "anyseg" / "ummss" = their M-SegFormer (official MiT eps split); "none" = the project's own semantics.
    compat: typing.Literal["none", "deliver", "anyseg", "ummss"] = "none"
    # MiT LayerNorm eps (patch embedding, attention spatial reduction, block norms, stage norms);
    # None = the compat's source (deliver: all 1e-5) or the official MiT split (1e-5, 1e-5, 1e-6, 1e-6).
    mit_eps: tuple[float, float, float, float] | None = None

    def check(self) -> None:
        if self.mit_eps is not None and any(not e > 0 for e in self.mit_eps):
            raise ValueError(f"mit_eps: every value must be > 0, got {list(self.mit_eps)}")
        if self.compat == "deliver" and self.name != "cmnext":
            raise ValueError(f"compat: 'deliver' is DELIVER's CMNeXt, not {self.name!r}")
        if self.compat in ("anyseg", "ummss") and self.name != "m_segformer":
            raise ValueError(f"compat: {self.compat!r} is an M-SegFormer, not {self.name!r}")
        if self.decoder_dim is not None and self.decoder_dim <= 0:
            raise ValueError(f"decoder_dim: must be positive, got {self.decoder_dim}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path: must be in [0, 1), got {self.drop_path}")


if typing.TYPE_CHECKING:
    from equiseg_ros.spec import ModelSpec
