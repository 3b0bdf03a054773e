"""Launch the equiseg_ros perception node.

    ros2 launch equiseg_ros perception.launch.py model_path:=/models/equiseg.onnx
    ros2 launch equiseg_ros perception.launch.py model_path:=/models/equiseg.engine namespace:=front \
        use_sim_time:=true remappings:="rgb/image:=/camera/color/image_raw;camera_info:=/camera/color/camera_info"
    ros2 launch equiseg_ros perception.launch.py model_path:=/models/equiseg.onnx managed:=true \
        engine_precision:=fp16 engine_cache_dir:=/var/cache/equiseg
    ros2 launch equiseg_ros perception.launch.py model_path:=/models/equiseg.onnx fastdds_profile:=none

Arguments (``ros2 launch ... --show-args`` prints them): model_path (required), params_file (default: the
installed config/perception.yaml), namespace, use_sim_time (bag replay with --clock), remappings ("from:=to" pairs
separated by ';' or ','), fastdds_profile (default: the installed config/fastdds_shm.xml; ``none`` = Fast DDS
defaults), managed (lifecycle node), autostart (managed: configure + activate from this launch), engine_precision /
engine_cache_dir / engine_build_on_start (TensorRT engine; empty = the params file's value), log_level.

Fast DDS profile: FASTDDS_DEFAULT_PROFILES_FILE is set to fastdds_profile for this launch (the node and anything
launched after it in the same scope) unless the environment already sets it: your own profile wins. ``none`` (or
``defaults``) removes the variable for the node, whatever the environment says, so it runs with Fast DDS's
built-in transports. (An empty value cannot be typed: ``ros2 launch`` rejects ``fastdds_profile:=``.) Sensor
drivers in OTHER launches must use the same profile for the shared-memory transport to help (see the README).

Managed: ``managed:=true`` starts the lifecycle variant (``perception_node --managed``) as a launch_ros
LifecycleNode: it waits in *unconfigured* until a lifecycle manager (or ``ros2 lifecycle set
/perception_node configure`` then ``activate``) brings it up; configure loads the model / builds the engine.
``autostart:=true`` makes this launch request configure, and activate once configure succeeded (a failed configure
leaves the node unconfigured, reported on /rosout and /diagnostics).

The helpers above ``generate_launch_description`` are plain Python (no ``launch`` import) so the tests can check
them; ``launch`` and ``launch_ros`` are imported only when ROS 2 actually launches this file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

PACKAGE = "equiseg_ros"
EXECUTABLE = "perception_node"
NODE_NAME = "perception_node"
PARAMS_FILE = "config/perception.yaml"  # relative to the package's share directory
SHM_PROFILE = "config/fastdds_shm.xml"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
NO_PROFILE = ("none", "defaults")  # fastdds_profile values meaning "Fast DDS built-in defaults"
MANAGED_FLAG = "--managed"
PRECISIONS = ("fp32", "fp16", "int8")

ARGUMENTS = {
    "model_path": ("", "exported model: .onnx, TensorRT .engine (+ sidecar) or .pt checkpoint (required)"),
    "params_file": (None, "node parameters YAML (default: <share>/config/perception.yaml)"),
    "namespace": ("", "namespace of the node and of its relative input topics (e.g. 'front')"),
    "use_sim_time": ("false", "true when replaying a bag with --clock"),
    "remappings": ("", "topic remappings 'from:=to' separated by ';' or ',', "
                       "e.g. 'rgb/image:=/camera/color/image_raw;camera_info:=/camera/color/camera_info'"),
    "fastdds_profile": (None, "Fast DDS XML profile (FASTDDS_DEFAULT_PROFILES_FILE) for the node, used unless that "
                              "variable is already set in your environment; 'none' = Fast DDS built-in defaults "
                              "(the variable is removed for the node, even if your environment sets it) "
                              "(default: <share>/config/fastdds_shm.xml)"),
    "managed": ("false", "true = lifecycle (managed) node: waits unconfigured; configure loads the model / builds "
                         "the engine, activate subscribes and publishes (drive it with a lifecycle manager or "
                         "'ros2 lifecycle set /<namespace>/perception_node configure|activate')"),
    "autostart": ("false", "with managed:=true: true = this launch configures and then activates the node itself "
                           "(activate only after a successful configure); false = wait for a lifecycle manager"),
    "engine_precision": ("", "TensorRT engine precision fp32, fp16 or int8 (node parameter engine.precision); "
                             "empty = the params file's value"),
    "engine_cache_dir": ("", "directory of built TensorRT engines (engine.cache_dir); empty = the params file's "
                             "value (default: beside the model)"),
    "engine_build_on_start": ("", "true = build a missing/stale engine at start (minutes on a Jetson), false = "
                                  "use a prebuilt one or fall back (engine.build_on_start); empty = the params "
                                  "file's value"),
    "log_level": ("info", "node log level (debug, info, warn, error)"),
}


def parse_remappings(text: str) -> list[tuple[str, str]]:
    """'a:=b;c:=d' (or ',') -> [('a', 'b'), ('c', 'd')]; ValueError naming the bad entry."""
    pairs = []
    for item in text.replace(",", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        src, sep, dst = item.partition(":=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"remappings: expected 'from:=to', got {item!r}")
        pairs.append((src.strip(), dst.strip()))
    return pairs


def profile_action(environ: Mapping[str, str], profile: str) -> tuple[str, str | None]:
    """What this launch does with FASTDDS_DEFAULT_PROFILES_FILE: ("unset", None) for ``none``/``defaults`` (or an
    empty value from an including launch file), ("keep", None) when the user's environment already sets it,
    ("set", path) otherwise. ValueError when the profile file does not exist."""
    value = str(profile).strip()
    if value.lower() in NO_PROFILE or not value:
        return ("unset", None)
    if environ.get(PROFILE_ENV):
        return ("keep", None)
    if not Path(value).is_file():
        raise ValueError(f"fastdds_profile: {value!r} is not a file (give an XML profile, or 'none' for the Fast "
                         "DDS defaults)")
    return ("set", value)


def node_environment(environ: Mapping[str, str], profile: str) -> dict[str, str]:
    """The environment the node process gets from this launch (for tests and for the log line)."""
    env = dict(environ)
    action, path = profile_action(environ, profile)
    if action == "unset":
        env.pop(PROFILE_ENV, None)
    elif action == "set":
        env[PROFILE_ENV] = path
    return env


def profile_to_set(environ: Mapping[str, str], profile: str) -> str | None:
    """The profile path this launch sets, or None (kept from the environment, or Fast DDS defaults)."""
    action, path = profile_action(environ, profile)
    return path if action == "set" else None


def as_bool(text: str, name: str = "use_sim_time") -> bool:
    t = str(text).strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"{name}: expected true or false, got {text!r}")


def inline_parameters(arg: Mapping[str, str]) -> dict[str, Any]:
    """Node parameters given on top of params_file: model_path, use_sim_time, and the engine.* ones set here."""
    params: dict[str, Any] = {"model_path": arg["model_path"], "use_sim_time": as_bool(arg["use_sim_time"])}
    precision = str(arg.get("engine_precision", "")).strip()
    if precision:
        if precision not in PRECISIONS:
            raise ValueError(f"engine_precision: expected one of {list(PRECISIONS)}, got {precision!r}")
        params["engine.precision"] = precision
    if str(arg.get("engine_cache_dir", "")).strip():
        params["engine.cache_dir"] = str(arg["engine_cache_dir"]).strip()
    if str(arg.get("engine_build_on_start", "")).strip():
        params["engine.build_on_start"] = as_bool(arg["engine_build_on_start"], "engine_build_on_start")
    return params


def node_arguments(arg: Mapping[str, str]) -> list[str]:
    """Command-line arguments of the node process (before the ones launch_ros adds)."""
    managed = as_bool(arg.get("managed", "false"), "managed")
    return ([MANAGED_FLAG] if managed else []) + ["--ros-args", "--log-level", arg["log_level"]]


def autostart_transitions(arg: Mapping[str, str]) -> list[str]:
    """Lifecycle transitions this launch requests itself: configure, then activate once configure succeeded."""
    managed = as_bool(arg.get("managed", "false"), "managed")
    auto = as_bool(arg.get("autostart", "false"), "autostart")
    if auto and not managed:
        raise ValueError("autostart: only meaningful with managed:=true (the plain node starts by itself)")
    return ["configure", "activate"] if auto else []


def _autostart_actions(node: Any) -> list[Any]:
    """configure now; activate when the node reaches inactive *from configuring* (not after a manual deactivate)."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    def request(transition_id: int) -> Any:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    return [RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                                   goal_state="inactive",
                                                   entities=[request(Transition.TRANSITION_ACTIVATE)])),
            request(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description():
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import (
        DeclareLaunchArgument,
        LogInfo,
        OpaqueFunction,
        SetEnvironmentVariable,
        UnsetEnvironmentVariable,
    )
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node

    from launch import LaunchDescription

    share = get_package_share_directory(PACKAGE)
    defaults = {"params_file": os.path.join(share, PARAMS_FILE), "fastdds_profile": os.path.join(share, SHM_PROFILE)}

    def setup(context, *args, **kwargs):
        arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        if not arg["model_path"]:
            raise RuntimeError("perception.launch.py: model_path:=<exported model> is required")
        actions = []
        action, profile = profile_action(dict(os.environ), arg["fastdds_profile"])
        if action == "set":
            actions.append(SetEnvironmentVariable(PROFILE_ENV, profile))
            actions.append(LogInfo(msg=f"Fast DDS profile: {profile} (set {PROFILE_ENV} yourself to override)"))
        elif action == "unset":
            actions.append(UnsetEnvironmentVariable(PROFILE_ENV))
            actions.append(LogInfo(msg=f"Fast DDS profile: built-in defaults ({PROFILE_ENV} removed)"))
        managed = as_bool(arg["managed"], "managed")
        auto = autostart_transitions(arg)
        node_cls = LifecycleNode if managed else Node
        node = node_cls(
            package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME, namespace=arg["namespace"], output="screen",
            parameters=[arg["params_file"], inline_parameters(arg)],
            remappings=parse_remappings(arg["remappings"]),
            arguments=node_arguments(arg))
        actions.append(node)
        if auto:
            actions += _autostart_actions(node)
        return actions

    declared = [DeclareLaunchArgument(name, default_value=default if default is not None else defaults[name],
                                      description=doc) for name, (default, doc) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=setup)])
