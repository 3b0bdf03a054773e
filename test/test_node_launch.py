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

from equiseg_ros.ros.params import PARAM_INDEX

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "perception.launch.py"
# Public API names of launch / launch_ros used by the file (docs.ros.org launch and launch_ros references).
KNOWN_API = {
    "launch": {"LaunchDescription"},
    "launch.actions": {"DeclareLaunchArgument", "LogInfo", "OpaqueFunction", "SetEnvironmentVariable",
                       "IncludeLaunchDescription", "GroupAction"},
    "launch.substitutions": {"LaunchConfiguration", "EnvironmentVariable", "PathJoinSubstitution"},
    "launch_ros.actions": {"Node", "PushRosNamespace"},
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
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]
    assert len(calls) == 1
    kw = {k.arg: k.value for k in calls[0].keywords}
    assert isinstance(kw["package"], ast.Name) and kw["package"].id == "PACKAGE"
    assert isinstance(kw["executable"], ast.Name) and kw["executable"].id == "EXECUTABLE"
    for key in ("name", "namespace", "parameters", "remappings"):
        assert key in kw
    # parameters passed inline are parameters the node declares (or rclpy's use_sim_time)
    inline = [n for n in ast.walk(kw["parameters"]) if isinstance(n, ast.Dict)]
    keys = {k.value for d in inline for k in d.keys if isinstance(k, ast.Constant)}
    assert keys == {"model_path", "use_sim_time"} and "model_path" in PARAM_INDEX


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


def test_launch_imports_are_known_api_and_only_inside_generate():
    tree = _tree()
    top_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [n for n in top_imports if isinstance(n, ast.ImportFrom) and n.module and
                n.module.split(".")[0] in ("launch", "launch_ros", "ament_index_python")]
    gen = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description")
    for node in ast.walk(gen):
        if isinstance(node, ast.ImportFrom):
            assert node.module in KNOWN_API, node.module
            for alias in node.names:
                assert alias.name in KNOWN_API[node.module], f"{node.module}.{alias.name}"


def test_launch_arguments_and_helpers():
    mod = _load_module()
    assert {"model_path", "params_file", "namespace", "use_sim_time", "remappings", "fastdds_profile"} \
        <= set(mod.ARGUMENTS)
    assert all(doc for _, doc in mod.ARGUMENTS.values())
    assert mod.parse_remappings("rgb/image:=/cam/image_raw; camera_info:=/cam/info,") == [
        ("rgb/image", "/cam/image_raw"), ("camera_info", "/cam/info")]
    with pytest.raises(ValueError, match="expected 'from:=to'"):
        mod.parse_remappings("rgb/image=/cam")
    assert mod.profile_to_set({}, "/share/config/fastdds_shm.xml") == "/share/config/fastdds_shm.xml"
    assert mod.profile_to_set({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}, "/share/x.xml") is None
    assert mod.profile_to_set({}, "") is None
    assert mod.as_bool("True") is True and mod.as_bool("false") is False
    with pytest.raises(ValueError):
        mod.as_bool("sometimes")


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
