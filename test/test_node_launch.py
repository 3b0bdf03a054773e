"""launch/perception.launch.py, checked statically (``launch``/``launch_ros`` are not installable from PyPI).

It parses; the package and executable it starts are the ones setup.py installs; every file it references exists
and is installed to share/; its arguments are the documented ones; its plain-Python helpers behave.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from equiseg_ros.ros.params import PARAM_INDEX, PRECISIONS, check_value

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "perception.launch.py"
# Public API names of launch / launch_ros used by the file (docs.ros.org launch and launch_ros references).
KNOWN_API = {
    "launch": {"LaunchDescription"},
    "launch.actions": {"DeclareLaunchArgument", "LogInfo", "OpaqueFunction", "SetEnvironmentVariable",
                       "UnsetEnvironmentVariable", "IncludeLaunchDescription", "GroupAction", "EmitEvent",
                       "RegisterEventHandler"},
    "launch.events": {"matches_action"},
    "launch_ros.event_handlers": {"OnStateTransition"},
    "launch_ros.events.lifecycle": {"ChangeState"},
    "lifecycle_msgs.msg": {"Transition"},
    "launch.substitutions": {"LaunchConfiguration", "EnvironmentVariable", "PathJoinSubstitution"},
    "launch_ros.actions": {"Node", "LifecycleNode", "PushRosNamespace"},
    "ament_index_python.packages": {"get_package_share_directory"},
}


def _tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = node.value.value
    return out


def _setup_info() -> dict:
    code = ("import setuptools, json, sys; captured = {}\n"
            "setuptools.setup = lambda **kw: captured.update(kw)\n"
            "sys.argv = ['setup.py']\n"
            "exec(open('setup.py').read(), {'__file__': 'setup.py', '__name__': '__main__'})\n"
            "print(json.dumps({'data_files': captured['data_files'], 'name': captured['name'],"
            " 'entry_points': captured['entry_points']}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load_module():
    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # must not need `launch`: its imports live inside generate_launch_description
    return mod


def test_launch_file_parses_and_starts_the_installed_executable():
    tree = _tree()
    consts = _constants(tree)
    info = _setup_info()
    scripts = dict(s.split(" = ", 1) for s in info["entry_points"]["console_scripts"])
    assert consts["PACKAGE"] == info["name"] == "equiseg_ros"
    assert consts["EXECUTABLE"] in scripts and scripts[consts["EXECUTABLE"]] == "equiseg_ros.ros.node:main"
    # one call builds the node: node_cls(...) where node_cls is Node or LifecycleNode
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "node_cls"]
    assert len(calls) == 1
    kw = {k.arg: k.value for k in calls[0].keywords}
    assert isinstance(kw["package"], ast.Name) and kw["package"].id == "PACKAGE"
    assert isinstance(kw["executable"], ast.Name) and kw["executable"].id == "EXECUTABLE"
    for key in ("name", "namespace", "parameters", "remappings", "arguments"):  # LifecycleNode needs name+namespace
        assert key in kw
    choice = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and any(
        getattr(t, "id", "") == "node_cls" for t in n.targets))
    assert {getattr(x, "id", "") for x in ast.walk(choice.value)} >= {"LifecycleNode", "Node", "managed"}


def test_inline_parameters_are_declared_node_parameters():
    mod = _load_module()
    base = {"model_path": "/m.onnx", "use_sim_time": "false"}
    assert mod.inline_parameters(base) == {"model_path": "/m.onnx", "use_sim_time": False}
    full = mod.inline_parameters({**base, "use_sim_time": "true", "engine_precision": "fp16",
                                  "engine_cache_dir": "/cache", "engine_build_on_start": "false"})
    assert full == {"model_path": "/m.onnx", "use_sim_time": True, "engine.precision": "fp16",
                    "engine.cache_dir": "/cache", "engine.build_on_start": False}
    assert set(full) - {"use_sim_time"} <= set(PARAM_INDEX)
    assert tuple(mod.PRECISIONS) == PRECISIONS
    assert check_value(PARAM_INDEX["engine.precision"], "fp8") and not check_value(PARAM_INDEX["engine.precision"],
                                                                                    "int8")
    for p in ("engine.precision", "engine.cache_dir", "engine.build_on_start"):
        assert PARAM_INDEX[p].default == {"engine.precision": "fp32", "engine.cache_dir": "",
                                          "engine.build_on_start": True}[p]
    with pytest.raises(ValueError, match="engine_precision"):
        mod.inline_parameters({**base, "engine_precision": "fp8"})
    with pytest.raises(ValueError, match="engine_build_on_start"):
        mod.inline_parameters({**base, "engine_build_on_start": "maybe"})


def test_managed_argument_selects_the_lifecycle_flag_the_node_accepts():
    mod = _load_module()
    assert mod.node_arguments({"managed": "false", "log_level": "info"}) == ["--ros-args", "--log-level", "info"]
    args = mod.node_arguments({"managed": "true", "log_level": "debug"})
    assert args == ["--managed", "--ros-args", "--log-level", "debug"]
    with pytest.raises(ValueError, match="managed"):
        mod.node_arguments({"managed": "perhaps", "log_level": "info"})
    # the flag is the one perception_node understands (its --help documents it)
    out = subprocess.run([sys.executable, "-m", "equiseg_ros.ros.node", "--help"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0 and mod.MANAGED_FLAG in out.stdout


def test_every_referenced_file_exists_and_is_installed():
    consts = _constants(_tree())
    info = _setup_info()
    installed = {(dest, f) for dest, files in info["data_files"] for f in files}
    refs = [v for k, v in consts.items() if v.startswith("config/")]
    assert sorted(refs) == ["config/fastdds_shm.xml", "config/perception.yaml"]
    for rel in refs + ["launch/perception.launch.py"]:
        assert (ROOT / rel).is_file(), rel
        dest = f"share/equiseg_ros/{Path(rel).parent.as_posix()}"
        assert (dest, rel) in installed, f"{rel} is not installed to {dest} by setup.py"


def test_launch_imports_are_known_api_and_only_inside_functions():
    tree = _tree()
    top_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [n for n in top_imports if isinstance(n, ast.ImportFrom) and n.module and
                n.module.split(".")[0] in ("launch", "launch_ros", "ament_index_python", "lifecycle_msgs")]
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in (
        "generate_launch_description", "_autostart_actions")]
    assert len(funcs) == 2
    seen = set()
    for func in funcs:
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom):
                assert node.module in KNOWN_API, node.module
                for alias in node.names:
                    assert alias.name in KNOWN_API[node.module], f"{node.module}.{alias.name}"
                    seen.add(f"{node.module}.{alias.name}")
    assert "launch_ros.actions.LifecycleNode" in seen and "launch_ros.events.lifecycle.ChangeState" in seen


def test_autostart_configures_then_activates_only_managed_nodes():
    mod = _load_module()
    assert mod.autostart_transitions({"managed": "true", "autostart": "true"}) == ["configure", "activate"]
    assert mod.autostart_transitions({"managed": "true", "autostart": "false"}) == []
    assert mod.autostart_transitions({"managed": "false", "autostart": "false"}) == []
    with pytest.raises(ValueError, match="managed:=true"):
        mod.autostart_transitions({"managed": "false", "autostart": "true"})
    # activate is requested only on configuring -> inactive (a manual deactivate must not re-activate the node)
    func = next(n for n in _tree().body if isinstance(n, ast.FunctionDef) and n.name == "_autostart_actions")
    kws = {k.arg: k.value.value for n in ast.walk(func) if isinstance(n, ast.Call)
           and getattr(n.func, "id", "") == "OnStateTransition" for k in n.keywords
           if isinstance(k.value, ast.Constant)}
    assert kws == {"start_state": "configuring", "goal_state": "inactive"}
    # (the state labels are the ones the real node's transition_event carries: test_node_lifecycle.py checks them)
    from lifecycle_msgs.msg import Transition

    attrs = {n.attr for n in ast.walk(func) if isinstance(n, ast.Attribute)}
    assert {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"} <= attrs
    assert Transition.TRANSITION_CONFIGURE == 1 and Transition.TRANSITION_ACTIVATE == 3


def test_launch_arguments_and_helpers():
    mod = _load_module()
    assert {"model_path", "params_file", "namespace", "use_sim_time", "remappings", "fastdds_profile"} \
        <= set(mod.ARGUMENTS)
    assert all(doc for _, doc in mod.ARGUMENTS.values())
    assert mod.parse_remappings("rgb/image:=/cam/image_raw; camera_info:=/cam/info,") == [
        ("rgb/image", "/cam/image_raw"), ("camera_info", "/cam/info")]
    with pytest.raises(ValueError, match="expected 'from:=to'"):
        mod.parse_remappings("rgb/image=/cam")
    profile = ROOT / "config" / "fastdds_shm.xml"
    assert mod.profile_to_set({}, str(profile)) == str(profile)
    assert mod.profile_to_set({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}, str(profile)) is None
    assert mod.profile_to_set({}, "none") is None
    assert mod.as_bool("True") is True and mod.as_bool("false") is False
    with pytest.raises(ValueError):
        mod.as_bool("sometimes")


@pytest.mark.parametrize("value", ["none", "None", "defaults", "", " none "])
def test_fastdds_profile_none_removes_the_variable_for_the_node(value):
    mod = _load_module()
    profile = ROOT / "config" / "fastdds_shm.xml"
    # `none` wins even over the user's own variable: it is an explicit request for Fast DDS defaults
    for environ in ({}, {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile), "OTHER": "1"}):
        assert mod.profile_action(environ, value) == ("unset", None)
        env = mod.node_environment(environ, value)
        assert "FASTDDS_DEFAULT_PROFILES_FILE" not in env  # removed, not set empty
        assert env.get("OTHER") == environ.get("OTHER")


def test_fastdds_profile_set_keep_and_missing_file(tmp_path):
    mod = _load_module()
    profile = ROOT / "config" / "fastdds_shm.xml"
    assert mod.node_environment({}, str(profile))["FASTDDS_DEFAULT_PROFILES_FILE"] == str(profile)
    mine = {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"}
    assert mod.profile_action(mine, str(profile)) == ("keep", None)
    assert mod.node_environment(mine, str(profile)) == mine
    with pytest.raises(ValueError, match="not a file.*'none'"):
        mod.profile_action({}, str(tmp_path / "missing.xml"))


def test_launch_arguments_are_typeable_and_documented():
    """Every argument's documented special values can be typed as `name:=value` (ros2launch rejects `name:=`)."""
    mod = _load_module()
    doc = mod.ARGUMENTS["fastdds_profile"][1]
    assert "'none'" in doc and "defaults" in doc
    assert "fastdds_profile:=none" in mod.__doc__
    for name, (_default, text) in mod.ARGUMENTS.items():
        assert text, name
        assert "''" not in text, f"{name}: documents a value that cannot be typed on a shell"
    assert {"managed", "engine_precision", "engine_cache_dir", "engine_build_on_start"} <= set(mod.ARGUMENTS)


def test_shm_profile_is_the_measured_64mb_segment():
    import xml.etree.ElementTree as ET

    ns = {"p": "http://www.eprosima.com"}
    root = ET.parse(ROOT / "config" / "fastdds_shm.xml").getroot()
    desc = root.find("p:transport_descriptors/p:transport_descriptor", ns)
    assert desc.findtext("p:type", namespaces=ns) == "SHM"
    assert int(desc.findtext("p:segment_size", namespaces=ns)) == 64 * 1024 * 1024
    part = root.find("p:participant", ns)
    assert part.get("is_default_profile") == "true"
    assert part.findtext("p:rtps/p:useBuiltinTransports", namespaces=ns) == "false"
    assert part.findtext("p:rtps/p:userTransports/p:transport_id", namespaces=ns) == desc.findtext(
        "p:transport_id", namespaces=ns)
