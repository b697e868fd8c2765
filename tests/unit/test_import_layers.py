"""The package's import graph, read from the source with ast (nothing is imported): no circles, and the
lower layers never reach up into the training driver, ops or tune (docs/architecture.md, "Layers").

Every import counts, module-level and inside functions alike: a function-level import only defers a
circle to the first call. Importing `pipeline.a.b` also runs `pipeline/a/__init__.py`, so that
package is an edge too.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pipeline"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _known(name: str) -> str | None:
    """The module a dotted name lands in: the longest prefix that is a module of ours."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> dict[str, int]:
    """{imported module of ours: first line}, for every import statement anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        target = _known(name)
        if target is None or target == module:
            return
        # The packages on the way run their __init__ first (not those that hold `module` itself).
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            step = ".".join(parts[:i])
            if step in MODULES and not module.startswith(step + ".") and step != module:
                found.setdefault(step, line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pipeline":
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "pipeline":
                continue
            for alias in node.names:  # `from pipeline.data import s3` imports the module pipeline.data.s3
                add(f"{source}.{alias.name}", node.lineno)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _where(a: str, b: str) -> str:
    return f"{MODULES[a].relative_to(ROOT)}:{GRAPH[a][b]} imports {b}"


def _cycles() -> list[list[str]]:
    """One circle per strongly connected group of modules (Tarjan), as a path a → ... → a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    circles = []
    for group in groups:  # walk inside the group from its first member back to it
        start = min(group)
        path, seen = [start], {start}
        while True:
            nxt = sorted(w for w in GRAPH[path[-1]] if w in group)
            back = start if start in nxt else next((w for w in nxt if w not in seen), nxt[0])
            path.append(back)
            if back == start or back in seen:
                break
            seen.add(back)
        circles.append(path)
    return circles


def _reach(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for w in GRAPH[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_graph_is_read():
    # Guards the reader itself: these edges exist, one at module level and one inside a function.
    assert "pipeline.tracking.run" in GRAPH["pipeline.train.launch"]
    assert "pipeline.data.s3" in GRAPH["pipeline.data.store"]
    assert "pipeline.checkpoints" in GRAPH["pipeline.tracking.recover"]


def test_no_import_circles():
    circles = _cycles()
    shown = ["\n  ".join(_where(a, b) for a, b in zip(c, c[1:])) for c in circles]
    assert not circles, "import circles among pipeline modules:\n  " + "\n\n  ".join(shown)


def test_the_circles_mended_once_stay_mended():
    for a, b in (("pipeline.data.s3", "pipeline.data.store"), ("pipeline.train.launch", "pipeline.train.runs")):
        assert not (b in _reach(a) and a in _reach(b)), f"{a} and {b} import each other again"


def test_tracking_and_data_do_not_import_training_ops_or_tune():
    lower = [m for m in GRAPH if _under(m, "pipeline.tracking", "pipeline.data")]
    direct = [_where(m, t) for m in lower for t in GRAPH[m] if _under(t, "pipeline.train", "pipeline.ops", "pipeline.tune", "pipeline.cli")]
    assert not direct, "imports that run up the layers:\n  " + "\n  ".join(direct)
    # Nor through another module: reading a checkpoint may build G with train/build.py (the no-Ray
    # half, via pipeline/checkpoints.py), but never pulls in the driver, the worker, ops or tune.
    driver = ("pipeline.train.launch", "pipeline.train.runs", "pipeline.train.trainer", "pipeline.train.worker",
              "pipeline.ops", "pipeline.tune", "pipeline.cli")
    reached = sorted({(m, t) for m in lower for t in _reach(m) if _under(t, *driver)})
    assert not reached, f"tracking/ or data/ reaches the driver through other modules: {reached}"


def test_the_tracking_uri_is_resolved_by_the_tracking_module():
    # Not through the training driver (ops and tune once took it from train/launch.py).
    wrong = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and any(a.name == "resolve_tracking_uri" for a in node.names):
                if node.module != "pipeline.tracking.run":
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module}")
    assert not wrong, wrong
