"""Launch the equiseg_ros perception node.

    ros2 launch equiseg_ros perception.launch.py model_path:=/models/equiseg.onnx
    ros2 launch equiseg_ros perception.launch.py model_path:=/models/equiseg.engine namespace:=front \
        use_sim_time:=true remappings:="rgb/image:=/camera/color/image_raw;camera_info:=/camera/color/camera_info"

Arguments: model_path (required), params_file (default: the installed config/perception.yaml), namespace,
use_sim_time (bag replay with --clock), remappings ("from:=to" pairs separated by ';' or ','), fastdds_profile
(default: the installed config/fastdds_shm.xml; "" = Fast DDS defaults), log_level.

FASTDDS_DEFAULT_PROFILES_FILE is set to fastdds_profile for this launch (the node and anything launched after it in
the same scope) unless the environment already sets it: your own profile always wins. Sensor drivers in OTHER
launches must use the same profile for the shared-memory transport to help (see the README).

The helpers above ``generate_launch_description`` are plain Python (no ``launch`` import) so the tests can check
them; ``launch`` and ``launch_ros`` are imported only when ROS 2 actually launches this file.
"""
from __future__ import annotations

import os

PACKAGE = "equiseg_ros"
EXECUTABLE = "perception_node"
NODE_NAME = "perception_node"
PARAMS_FILE = "config/perception.yaml"  # relative to the package's share directory
SHM_PROFILE = "config/fastdds_shm.xml"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"

ARGUMENTS = {
    "model_path": ("", "exported model: .onnx, TensorRT .engine (+ sidecar) or .pt checkpoint (required)"),
    "params_file": (None, "node parameters YAML (default: <share>/config/perception.yaml)"),
    "namespace": ("", "namespace of the node and of its relative input topics (e.g. 'front')"),
    "use_sim_time": ("false", "true when replaying a bag with --clock"),
    "remappings": ("", "topic remappings 'from:=to' separated by ';' or ',', "
                       "e.g. 'rgb/image:=/camera/color/image_raw;camera_info:=/camera/color/camera_info'"),
    "fastdds_profile": (None, "Fast DDS XML profile for this launch unless FASTDDS_DEFAULT_PROFILES_FILE is already "
                              "set; '' keeps the Fast DDS defaults (default: <share>/config/fastdds_shm.xml)"),
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


def profile_to_set(environ: dict[str, str], profile: str) -> str | None:
    """The Fast DDS profile this launch should set: None when the user already set one or asked for defaults."""
    if environ.get(PROFILE_ENV):
        return None
    return profile or None


def as_bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"use_sim_time: expected true or false, got {text!r}")


def generate_launch_description():
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    share = get_package_share_directory(PACKAGE)
    defaults = {"params_file": os.path.join(share, PARAMS_FILE), "fastdds_profile": os.path.join(share, SHM_PROFILE)}

    def setup(context, *args, **kwargs):
        arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        if not arg["model_path"]:
            raise RuntimeError("perception.launch.py: model_path:=<exported model> is required")
        actions = []
        profile = profile_to_set(dict(os.environ), arg["fastdds_profile"])
        if profile:
            actions.append(SetEnvironmentVariable(PROFILE_ENV, profile))
            actions.append(LogInfo(msg=f"Fast DDS profile: {profile} (set {PROFILE_ENV} yourself to override)"))
        actions.append(Node(
            package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME, namespace=arg["namespace"], output="screen",
            parameters=[arg["params_file"], {"model_path": arg["model_path"],
                                             "use_sim_time": as_bool(arg["use_sim_time"])}],
            remappings=parse_remappings(arg["remappings"]),
            arguments=["--ros-args", "--log-level", arg["log_level"]]))
        return actions

    declared = [DeclareLaunchArgument(name, default_value=default if default is not None else defaults[name],
                                      description=doc) for name, (default, doc) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=setup)])
