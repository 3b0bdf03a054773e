"""The ament_python package: package.xml agrees with setup.py; the CLI answers --version and --help."""
import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import equiseg_ros
from equiseg_ros.tools import TOOLS

ROOT = Path(__file__).resolve().parents[1]


def _setup_call() -> dict:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup":
            return {kw.arg: kw.value for kw in node.keywords if kw.arg}
    raise AssertionError("setup() call not found")


def _data_files() -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", (
        "import setuptools, json, sys; captured = {}\n"
        "setuptools.setup = lambda **kw: captured.update(kw)\n"
        "sys.argv = ['setup.py']\n"
        "exec(open('setup.py').read(), {'__file__': 'setup.py', '__name__': '__main__'})\n"
        "print(json.dumps({'data_files': captured['data_files'], 'name': captured['name'],"
        " 'version': captured['version'], 'entry_points': captured['entry_points']}))")],
        cwd=ROOT, capture_output=True, text=True, check=True)
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_package_xml_is_format3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "equiseg_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    for key in ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "python3-numpy", "python3-opencv",
                "python3-yaml"):
        assert key in deps, key
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}


def test_setup_matches_package_xml_and_installs_everything():
    root = ET.parse(ROOT / "package.xml").getroot()
    info = _data_files()
    assert info["name"] == root.findtext("name")
    assert info["version"] == root.findtext("version") == equiseg_ros.__version__
    installed = {f for _, files in info["data_files"] for f in files}
    assert "resource/equiseg_ros" in installed and "package.xml" in installed
    wanted = [p for p in ROOT.glob("launch/*") if p.is_file()] + [p for p in ROOT.glob("config/**/*") if p.is_file()]
    for p in wanted:
        assert p.relative_to(ROOT).as_posix() in installed, f"{p} is not installed by setup.py"
    scripts = info["entry_points"]["console_scripts"]
    assert any(s.startswith("perception_node = ") for s in scripts)


def test_cli_version_and_help():
    v = subprocess.run([sys.executable, "-m", "equiseg_ros", "--version"], capture_output=True, text=True, check=True)
    assert re.fullmatch(r"equiseg_ros \d+\.\d+\.\d+\n", v.stdout)
    h = subprocess.run([sys.executable, "-m", "equiseg_ros", "--help"], capture_output=True, text=True, check=True)
    for t in TOOLS:
        assert t.command in h.stdout


def test_demo_runs():
    out = subprocess.run([sys.executable, "-m", "equiseg_ros.demo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--force" in out.stdout
