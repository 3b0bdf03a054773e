"""DESIGN.md "Dependencies point down", enforced on the source: floors, no import circles, no ROS below ros/.

Every ``import`` statement of every module under ``equiseg_ros/`` counts, wherever it stands: at module level, inside
a function (lazy), under ``if TYPE_CHECKING`` or in a ``try``. A lazy import still ties two modules together, so it
counts for the floor rule and for circles alike (the circles issue 13.8 found were lazy on one side). Imports by
string (``importlib.import_module`` in the backend registry, ``find_spec`` in the tool list) are plugin look-ups,
not dependencies, and are not seen here.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PACKAGE = "equiseg_ros"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# From the bottom up (DESIGN.md): spec; sensors; data; models and evaluation; inference; ros; bag; demo.
# config.py and checkpoint.py (and the package's own __init__) share the spec's floor: they carry the spec and
# the typed config every floor reads. The command-line entry points sit with demo on the top floor.
FLOORS: dict[str, int] = {
    "": 0, "spec": 0, "config": 0, "checkpoint": 0,
    "sensors": 1,
    "data": 2,
    "models": 3, "evaluation": 3,
    "inference": 4,
    "ros": 5,
    "bag": 6,
    "demo": 7, "tools": 7, "__main__": 7,
}
FLOOR_NAMES = ["spec", "sensors", "data", "models/evaluation", "inference", "ros", "bag", "demo"]
NO_ROS_UP_TO = FLOORS["inference"]  # models, data, evaluation, inference, sensors (and spec) never import ROS
ROS_PACKAGES = {"rclpy", "rosidl_runtime_py", "rosbag2_py", "tf2_ros", "message_filters", "launch", "launch_ros",
                "cv_bridge", "sensor_msgs_py", "image_transport"}

@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (a package means its __init__)
    line: int
    lazy: bool  # inside a function or class body


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=1)
def _modules() -> dict[str, Path]:
    mods = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
    assert mods, f"no modules found under {ROOT}"
    return mods


def _resolve(base: str, name: str, modules: dict[str, Path]) -> str:
    """``from base import name``: the submodule ``base.name`` when there is one, else ``base`` itself."""
    return f"{base}.{name}" if f"{base}.{name}" in modules else base


def _lazy_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside a function or class body."""
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            inner.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return inner


@lru_cache(maxsize=1)
def _imports() -> tuple[tuple[Import, ...], tuple[tuple[str, str, int], ...]]:
    """(imports between equiseg_ros modules, other top-level imports as (source, top package, line))."""
    modules = _modules()
    internal: list[Import] = []
    external: list[tuple[str, str, int]] = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        lazy = _lazy_nodes(tree)
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base == PACKAGE or base.startswith(PACKAGE + "."):
                    targets = [_resolve(base, a.name, modules) for a in node.names]
                else:
                    targets = [base]
            for t in targets:
                if t == PACKAGE or t.startswith(PACKAGE + "."):
                    internal.append(Import(mod, t, node.lineno, id(node) in lazy))
                else:
                    external.append((mod, t.split(".")[0], node.lineno))
    return tuple(internal), tuple(external)


def _floor(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else ""
    assert key in FLOORS, (f"{module}: not on any floor of DESIGN.md 'Dependencies point down'; add "
                           f"{key!r} to FLOORS in {Path(__file__).name} (and to DESIGN.md)")
    return FLOORS[key]


def _where(imp: Import) -> str:
    return f"{_modules()[imp.source].relative_to(ROOT.parent)}:{imp.line}"


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (module graphs are small, but recursion limits are not worth the risk)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on_stack:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                out.append(comp)
    return out


def _cycles() -> list[set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in _modules()}
    for imp in _imports()[0]:
        if imp.target in edges and imp.target != imp.source:
            edges[imp.source].add(imp.target)
    return [c for c in _strongly_connected(edges) if len(c) > 1]


def test_every_internal_import_names_an_existing_module() -> None:
    missing = [f"{_where(i)} imports {i.target}" for i in _imports()[0] if i.target not in _modules()]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_dependencies_point_down() -> None:
    up = []
    for imp in _imports()[0]:
        if imp.target not in _modules():
            continue  # reported by the test above
        src, dst = _floor(imp.source), _floor(imp.target)
        if dst > src:
            up.append(f"{_where(imp)}: {imp.source} ({FLOOR_NAMES[src]}) imports {imp.target} "
                      f"({FLOOR_NAMES[dst]}){' lazily' if imp.lazy else ''}")
    up = sorted(set(up))
    assert not up, ("imports pointing up (DESIGN.md 'Dependencies point down'; move the shared piece to the lower "
                    "floor):\n" + "\n".join(up))


def test_no_import_circles() -> None:
    new = []
    for comp in _cycles():
        inside = sorted({f"  {_where(i)}: {i.source} -> {i.target}{' (lazy)' if i.lazy else ''}"
                         for i in _imports()[0] if i.source in comp and i.target in comp})
        new.append(" <-> ".join(sorted(comp)) + "\n" + "\n".join(inside))
    assert not new, "import circles (a type or rule two modules share lives below both):\n" + "\n".join(new)


def test_no_ros_below_ros_and_never_training() -> None:
    bad = []
    for src, top, line in _imports()[1]:
        where = f"{_modules()[src].relative_to(ROOT.parent)}:{line}"
        if top == "training":
            bad.append(f"{where}: {src} imports training (offline only, never imported by {PACKAGE})")
        ros = top in ROS_PACKAGES or top.endswith("_msgs") or top.endswith("_interfaces")
        if ros and _floor(src) <= NO_ROS_UP_TO:
            bad.append(f"{where}: {src} imports {top} (only ros/ and the bag tools may import ROS packages)")
    assert not bad, "\n".join(sorted(set(bad)))


def test_the_checker_sees_what_it_must() -> None:
    """The rules above are only as good as the import graph: check it on facts of this package."""
    internal = {(i.source, i.target) for i in _imports()[0]}
    assert ("equiseg_ros.sensors.frontend", "equiseg_ros.sensors.resize") in internal
    assert ("equiseg_ros.data.transforms", "equiseg_ros.sensors.resize") in internal
    assert ("equiseg_ros.ros.codecs", "equiseg_ros.sensors.geometry") in internal  # a lazy one
    assert any(i.lazy for i in _imports()[0]) and any(not i.lazy for i in _imports()[0])
    assert _floor("equiseg_ros.spec") < _floor("equiseg_ros.sensors.frontend") < _floor("equiseg_ros.data.dataset")
    ring = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert [c for c in _strongly_connected(ring) if len(c) > 1] == [{"a", "b", "c"}]
