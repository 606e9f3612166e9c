"""Layering of knot_core, read from the source (imports inside functions included): no import cycle; the engine
imports no render, media or checkpoint module; adapters never import the checkpoint-file modules; the render
path knows no file front end."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "knot_core"
ENGINE_MAY_IMPORT = {"knot_core.config", "knot_core.dit", "knot_core.driving", "knot_core.errors", "knot_core.rope"}
CHECKPOINT_FILES = {"knot_core.model_file", "knot_core.checkpoints", "knot_core.checkpoint_formats"}
FRONT_ENDS = {"knot_core.render", "knot_core.render_job", "knot_core.render_session", "knot_core.batch",
              "knot_core.batch_ray", "knot_core.cli", "knot_core.api", "knot_core.demo", "knot_core.checkpoints"}


def module_name(path: Path) -> str:
    parts = ("knot_core", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """knot_core modules that `name` imports anywhere in its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def test_the_graph_is_read():
    assert "knot_core.engine.stream" in GRAPH["knot_core.render_path"]
    assert {"knot_core.engine.memory", "knot_core.engine.sampler"} <= GRAPH["knot_core.engine.stream"]


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(GRAPH[name]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path[path.index(dep):] + [dep]) \
                if dep in path else dep
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_the_engine_imports_only_the_model_and_its_configs():
    for name, deps in GRAPH.items():
        if name.startswith("knot_core.engine"):
            outside = {d for d in deps if not d.startswith("knot_core.engine")} - ENGINE_MAY_IMPORT
            assert outside == set(), f"{name} imports {sorted(outside)}"


def test_adapters_do_not_know_the_checkpoint_files():
    for name, deps in GRAPH.items():
        if name.startswith("knot_core.adapters"):
            assert deps & CHECKPOINT_FILES == set(), name


def test_the_render_path_knows_no_front_end():
    for name in ("knot_core.render_path", "knot_core.render_plan", "knot_core.file_sink"):
        assert GRAPH[name] & FRONT_ENDS == set(), (name, GRAPH[name] & FRONT_ENDS)
