"""rosbag2 writing with ``rosbags`` for one target ROS 2 distro (storage, metadata version, typestore, QoS).

Why a wrapper: ``rosbags`` 0.11 writes metadata versions 8 and 9 only. Jazzy and newer read both; Humble's
``ros2 bag`` (rosbag2 0.15) knows metadata up to version 5, stores ``offered_qos_profiles`` as a YAML *string* with
integer enums (the v8 style) and has no ``type_description_hash`` / ``ros_distro`` keys. So for Humble we write v8
with sqlite3 (Humble's default storage; its mcap plugin is not in the default install) and rewrite metadata.yaml to
version 5 afterwards. The sqlite3 file keeps rosbags' extra tables/columns, which Humble's by-name queries ignore.
Not verified against a real Humble install (none here); verified: rosbags reads every variant back, rclpy Kilted
deserialises the CDR bytes.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from equiseg_ros.checkpoint import atomic_write

DISTROS: dict[str, Stores] = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
CUSTOM_PREFIX = "equiseg_ros."


class BagWriteError(RuntimeError):
    """The bag cannot be written as asked (existing output, unsupported distro/storage combination...)."""


def _qos(reliable: bool, depth: int, transient_local: bool = False) -> Qos:
    zero = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth,
               reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)


# The QoS a driver offers (recorded per topic): sensor data is best effort, shallow (rclcpp's SensorDataQoS has
# depth 5); ground truth and frame info are reliable so that scoring sees every frame; /tf_static is latched.
QOS_SENSOR = _qos(reliable=False, depth=5)
QOS_RELIABLE = _qos(reliable=True, depth=10)
QOS_STATIC = _qos(reliable=True, depth=1, transient_local=True)


@dataclass(frozen=True)
class Target:
    """What to write: distro (typestore, metadata flavour) and storage plugin."""

    distro: str = "kilted"
    storage: str = "mcap"

    def __post_init__(self) -> None:
        if self.distro not in DISTROS:
            raise BagWriteError(f"--distro: unknown {self.distro!r}; known: {sorted(DISTROS)}")
        if self.storage not in STORAGES:
            raise BagWriteError(f"--storage: unknown {self.storage!r}; known: {sorted(STORAGES)}")
        if self.distro == "humble" and self.storage != "sqlite3":
            raise BagWriteError("--distro humble needs --storage sqlite3 (Humble's default install has no mcap "
                                "storage plugin)")

    @property
    def writer_version(self) -> int:
        return 8 if self.distro == "humble" else 9

    def typestore(self) -> Typestore:
        return get_typestore(DISTROS[self.distro])


def default_storage(distro: str) -> str:
    """Humble reads sqlite3 out of the box; Iron and newer default to mcap."""
    return "sqlite3" if distro == "humble" else "mcap"


class BagSink:
    """Open a rosbag2 for writing; topics are added on first use; messages are rosbags dataclasses.

    Refuses to overwrite an existing path unless ``overwrite`` (then the old bag directory is removed first).
    """

    def __init__(self, path: str | Path, target: Target, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.target = target
        if self.path.exists():
            if not overwrite:
                raise BagWriteError(f"{self.path}: exists; pass --overwrite to replace it (never done silently)")
            if not _looks_like_bag(self.path):
                raise BagWriteError(f"{self.path}: exists and is not a rosbag2 directory; refusing to delete it")
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.typestore = target.typestore()
        self.writer = Writer(self.path, version=target.writer_version, storage_plugin=STORAGES[target.storage])
        self.custom: dict[str, str] = {}
        self.connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.writer.open()

    def add_topic(self, topic: str, msgtype: str, qos: Qos) -> None:
        if topic in self.connections:
            return
        self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.typestore,
                                                             offered_qos_profiles=[qos])
        self.counts[topic] = 0

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Serialize ``msg`` (a rosbags dataclass of the target typestore) at receive time ``stamp_ns``."""
        conn = self.connections[topic]
        self.writer.write(conn, int(stamp_ns), self.typestore.serialize_cdr(msg, conn.msgtype))
        self.counts[topic] += 1

    def set_custom(self, key: str, value: Any) -> None:
        """Custom metadata (metadata.yaml ``custom_data``); non-strings are stored as JSON."""
        self.custom[CUSTOM_PREFIX + key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    def close(self) -> None:
        for k, v in self.custom.items():
            self.writer.set_custom_data(k, v)
        self.writer.close()
        if self.target.distro == "humble":
            _rewrite_metadata_for_humble(self.path / "metadata.yaml")

    def abort(self) -> None:
        self.writer.abort()
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "BagSink":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _looks_like_bag(path: Path) -> bool:
    """A directory --overwrite may delete: a rosbag2 (metadata.yaml) or only storage files (an interrupted write)."""
    if not path.is_dir():
        return False
    if (path / "metadata.yaml").exists():
        return True
    return all(f.is_file() and (f.suffix in (".mcap", ".db3", ".zstd", ".tmp") or f.name.endswith(("-wal", "-shm",
               "-journal"))) for f in path.iterdir())


def _rewrite_metadata_for_humble(path: Path) -> None:
    """v8 metadata -> the v5 layout Humble's rosbag2 reads (keys it does not know removed; custom data kept as a
    string map, which Humble ignores and rosbags reads)."""
    data = yaml.safe_load(path.read_text())
    info = data["rosbag2_bagfile_information"]
    info["version"] = 5
    info.pop("ros_distro", None)
    for entry in info["topics_with_message_count"]:
        entry["topic_metadata"].pop("type_description_hash", None)
    if not info.get("custom_data"):
        info.pop("custom_data", None)
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
    atomic_write(path, lambda f: f.write(text.encode()))


def read_custom(path: str | Path) -> dict[str, Any]:
    """The ``equiseg_ros.*`` custom metadata of a bag, JSON values decoded, prefix stripped."""
    meta = bag_metadata(path)
    out: dict[str, Any] = {}
    for k, v in (meta.get("custom_data") or {}).items():
        if not k.startswith(CUSTOM_PREFIX):
            continue
        try:
            out[k[len(CUSTOM_PREFIX):]] = json.loads(v)
        except (TypeError, json.JSONDecodeError):
            out[k[len(CUSTOM_PREFIX):]] = v
    return out


def bag_metadata(path: str | Path) -> Mapping[str, Any]:
    """The raw ``rosbag2_bagfile_information`` mapping of metadata.yaml."""
    return yaml.safe_load((Path(path) / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
