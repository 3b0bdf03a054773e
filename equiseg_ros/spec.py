"""The model spec: the one place where modalities, classes, palette, normalisation and input size live.

Training writes it into checkpoints, export writes it into ONNX ``metadata_props`` and engine sidecars, and the
ROS node reads it back from whichever artefact it loads. Nothing else in the project hard-codes these facts.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

SPEC_SCHEMA_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Representation -> channel count the model input needs. The model contract is x[B, M, 3, H, W], so every
# representation fed to a model is 3-channel; the table exists so a spec naming an unknown one fails loudly.
REPRESENTATIONS: dict[str, int] = {
    "rgb8": 3,  # camera image, RGB order, uint8
    "hha": 3,  # DeLiVER's hha/ folder: 3-channel 8-bit depth encoding (the papers' "depth" input)
    "depth8": 3,  # metric depth mapped to 8 bit and repeated to 3 channels (DeLiVER's depth/ folder)
    "event_frame": 3,  # event counts/frame as 8-bit image (DeLiVER event PNG; MUSES pos/neg/0)
    "lidar_image": 3,  # LiDAR projected to the camera: DeLiVER-style 8-bit image
    "lidar_rih": 3,  # MUSES-style 3 channels: range, intensity, height
    "radar_rih": 3,  # MUSES radar: range, intensity, height (height 0 at ground level)
}


class SpecError(ValueError):
    """A spec (or its JSON) is invalid; the message names the offending field."""


@dataclass(frozen=True)
class Modality:
    """One model input: its name, how raw sensor data is represented, and how it is normalised.

    Normalisation is ``(value / 255 - mean) / std`` per channel, applied to the 8-bit representation.
    """

    name: str
    representation: str
    short: str  # letter(s) used in tables: R, D, E, L (DeLiVER); F, L, R, E (MUSES, after AnySeg)
    channels: int = 3
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class ModelSpec:
    """Ordered modalities, classes with their palette, ignore index and the deployed input size (H, W)."""

    name: str
    modalities: tuple[Modality, ...]
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255
    input_size: tuple[int, int] = (1024, 1024)
    schema_version: int = SPEC_SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        self.validate()

    # ---- facts derived from the spec -------------------------------------------------------------
    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def modality(self, name: str) -> Modality:
        for m in self.modalities:
            if m.name == name:
                return m
        raise SpecError(f"modalities: no modality named {name!r} in spec {self.name!r} "
                        f"(has {list(self.modality_names)})")

    def index(self, name: str) -> int:
        return self.modality_names.index(self.modality(name).name)

    def subset_name(self, present: Sequence[bool] | Iterable[str]) -> str:
        """Table name of a modality subset, e.g. ``RDL``; accepts a presence mask or modality names."""
        items = list(present)
        if items and isinstance(items[0], str):
            chosen = set(items)
            return "".join(m.short for m in self.modalities if m.name in chosen)
        if len(items) != self.num_modalities:
            raise SpecError(f"present: expected {self.num_modalities} flags, got {len(items)}")
        return "".join(m.short for m, p in zip(self.modalities, items) if p)

    def palette_array(self) -> np.ndarray:
        """Palette as uint8 [256, 3]; ids without a class (incl. ignore) are black."""
        lut = np.zeros((256, 3), np.uint8)
        lut[: self.num_classes] = np.asarray(self.palette, np.uint8)
        return lut

    def norm_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std as float32 [M, 3, 1, 1], in the spec's modality order."""
        mean = np.asarray([m.mean for m in self.modalities], np.float32)[:, :, None, None]
        std = np.asarray([m.std for m in self.modalities], np.float32)[:, :, None, None]
        return mean, std

    def normalize(self, name: str, image: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] in the modality's representation -> float32 [3, H, W] as the model expects."""
        mod = self.modality(name)
        if image.ndim != 3 or image.shape[2] != mod.channels:
            raise SpecError(f"{name}: expected an [H, W, {mod.channels}] image, got shape {image.shape}")
        x = image.astype(np.float32).transpose(2, 0, 1) / 255.0
        mean = np.asarray(mod.mean, np.float32)[:, None, None]
        std = np.asarray(mod.std, np.float32)[:, None, None]
        return (x - mean) / std

    # ---- derived specs ---------------------------------------------------------------------------
    def with_modalities(self, names: Sequence[str]) -> "ModelSpec":
        """A spec with a subset (and order) of this one's modalities, e.g. for an RGB-D model."""
        return replace(self, modalities=tuple(self.modality(n) for n in names))

    def with_input_size(self, height: int, width: int) -> "ModelSpec":
        return replace(self, input_size=(int(height), int(width)))

    # ---- validation and JSON ---------------------------------------------------------------------
    def validate(self) -> None:
        """Raise SpecError naming the first bad field."""
        if not self.name:
            raise SpecError("name: must be a non-empty string")
        if not self.modalities:
            raise SpecError("modalities: at least one modality is required")
        seen: set[str] = set()
        shorts: set[str] = set()
        for i, m in enumerate(self.modalities):
            where = f"modalities[{i}] ({m.name!r})"
            if not m.name or not m.name.isidentifier():
                raise SpecError(f"{where}.name: must be a non-empty identifier")
            if m.name in seen:
                raise SpecError(f"{where}.name: duplicate modality {m.name!r}")
            seen.add(m.name)
            if not m.short or m.short in shorts:
                raise SpecError(f"{where}.short: must be non-empty and unique, got {m.short!r}")
            shorts.add(m.short)
            if m.representation not in REPRESENTATIONS:
                raise SpecError(f"{where}.representation: unknown {m.representation!r}; "
                                f"known: {sorted(REPRESENTATIONS)}")
            need = REPRESENTATIONS[m.representation]
            if m.channels != need:
                raise SpecError(f"{where}.channels: representation {m.representation!r} requires {need} "
                                f"channels, got {m.channels}")
            for key in ("mean", "std"):
                vals = getattr(m, key)
                if len(vals) != m.channels:
                    raise SpecError(f"{where}.{key}: needs {m.channels} values, got {len(vals)}")
            if any(s <= 0 for s in m.std):
                raise SpecError(f"{where}.std: every value must be > 0, got {list(m.std)}")
        if not self.classes:
            raise SpecError("classes: at least one class is required")
        if len(set(self.classes)) != len(self.classes):
            raise SpecError("classes: class names must be unique")
        if len(self.palette) != len(self.classes):
            raise SpecError(f"palette: has {len(self.palette)} colours for {len(self.classes)} classes")
        for i, c in enumerate(self.palette):
            if len(c) != 3 or any(not (0 <= int(v) <= 255) for v in c):
                raise SpecError(f"palette[{i}]: must be 3 integers in 0..255, got {list(c)}")
        if not 0 <= self.ignore_index <= 255 or self.ignore_index < len(self.classes):
            raise SpecError(f"ignore_index: must be in {len(self.classes)}..255 (uint8 masks), got {self.ignore_index}")
        if len(self.input_size) != 2 or any(int(s) <= 0 or int(s) % 32 for s in self.input_size):
            raise SpecError(f"input_size: must be (H, W), positive multiples of 32, got {self.input_size}")
        if self.schema_version > SPEC_SCHEMA_VERSION:
            raise SpecError(f"schema_version: {self.schema_version} is newer than this code "
                            f"understands ({SPEC_SCHEMA_VERSION}); update equiseg_ros")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        if not isinstance(data, dict):
            raise SpecError(f"spec: expected a JSON object, got {type(data).__name__}")
        known = {"name", "modalities", "classes", "palette", "ignore_index", "input_size", "schema_version", "extra"}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"spec: unknown field(s) {sorted(unknown)}")
        for key in ("name", "modalities", "classes", "palette"):
            if key not in data:
                raise SpecError(f"{key}: missing")
        mods = []
        for i, m in enumerate(data["modalities"]):
            if not isinstance(m, dict):
                raise SpecError(f"modalities[{i}]: expected an object, got {type(m).__name__}")
            try:
                mods.append(Modality(name=m["name"], representation=m["representation"], short=m["short"],
                                     channels=int(m.get("channels", 3)),
                                     mean=tuple(float(v) for v in m.get("mean", (0.0, 0.0, 0.0))),
                                     std=tuple(float(v) for v in m.get("std", (1.0, 1.0, 1.0)))))
            except KeyError as exc:
                raise SpecError(f"modalities[{i}].{exc.args[0]}: missing") from None
        return cls(
            name=str(data["name"]),
            modalities=tuple(mods),
            classes=tuple(str(c) for c in data["classes"]),
            palette=tuple(tuple(int(v) for v in c) for c in data["palette"]),
            ignore_index=int(data.get("ignore_index", 255)),
            input_size=tuple(int(v) for v in data.get("input_size", (1024, 1024))),
            schema_version=int(data.get("schema_version", SPEC_SCHEMA_VERSION)),
            extra=dict(data.get("extra", {})),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec: not valid JSON ({exc})") from None
        return cls.from_dict(data)


# ---- presets --------------------------------------------------------------------------------------------

DELIVER_CLASSES = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk", "Vegetation", "Cars",
    "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack", "GroundRail", "TrafficLight", "Static",
    "Dynamic", "Water", "Terrain", "TwoWheeler", "Bus", "Truck",
)
DELIVER_PALETTE = (
    (70, 70, 70), (100, 40, 40), (55, 90, 80), (220, 20, 60), (153, 153, 153), (157, 234, 50), (128, 64, 128),
    (244, 35, 232), (107, 142, 35), (0, 0, 142), (102, 102, 156), (220, 220, 0), (70, 130, 180), (81, 0, 81),
    (150, 100, 100), (230, 150, 140), (180, 165, 180), (250, 170, 30), (110, 190, 160), (170, 120, 50),
    (45, 60, 150), (145, 170, 100), (0, 0, 230), (0, 60, 100), (0, 0, 70),
)
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)


def _rgb(short: str = "R") -> Modality:
    return Modality("rgb", "rgb8", short, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def deliver_spec(modalities: Sequence[str] | None = None) -> ModelSpec:
    """DeLiVER: RGB (ImageNet mean/std), depth read from hha/, event, LiDAR (all /255 only), 25 classes."""
    spec = ModelSpec(
        name="deliver",
        modalities=(_rgb(), Modality("depth", "hha", "D"), Modality("event", "event_frame", "E"),
                    Modality("lidar", "lidar_image", "L")),
        classes=DELIVER_CLASSES, palette=DELIVER_PALETTE, ignore_index=255, input_size=(1024, 1024),
    )
    return spec.with_modalities(modalities) if modalities else spec


def muses_spec(modalities: Sequence[str] | None = None) -> ModelSpec:
    """MUSES: frame camera (F), LiDAR, radar, event; 19 Cityscapes classes.

    Normalisation is chosen to match DeLiVER (ImageNet for RGB, /255 for the rest); AnySeg feeds raw 0..255,
    which we do not copy.
    """
    spec = ModelSpec(
        name="muses",
        modalities=(_rgb("F"), Modality("lidar", "lidar_rih", "L"), Modality("radar", "radar_rih", "R"),
                    Modality("event", "event_frame", "E")),
        classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE, ignore_index=255, input_size=(1024, 1024),
    )
    return spec.with_modalities(modalities) if modalities else spec


def synthetic_spec(modalities: Sequence[str] | None = None) -> ModelSpec:
    """The embedded default: DeLiVER's classes and modalities on procedural scenes, small input size."""
    spec = replace(deliver_spec(), name="synthetic", input_size=(256, 256))
    return spec.with_modalities(modalities) if modalities else spec


PRESETS = {"deliver": deliver_spec, "muses": muses_spec, "synthetic": synthetic_spec}


def get_preset(name: str, modalities: Sequence[str] | None = None) -> ModelSpec:
    """The spec preset for a dataset name, optionally restricted to (and ordered by) ``modalities``."""
    if name not in PRESETS:
        raise SpecError(f"dataset: unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](modalities)
