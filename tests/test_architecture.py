"""The rules docs/architecture.md states about the code's shape, checked on the code."""

import ast
import re
from pathlib import Path

from pydantic import BaseModel

from tunesmith.methods import METHODS
from tunesmith.serve.schemas import response_schema
from tunesmith.tasks import TASKS, TaskDefaults

SRC = Path(__file__).resolve().parents[1] / "src" / "tunesmith"
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_the_registration_examples_in_the_docs_are_the_code():
    doc = DOC.read_text(encoding="utf-8")
    section = doc[doc.index("## Adding a task, a method, a verb or a tracker"):]
    examples = re.findall(r"```python\n(.*?)\n```", section, flags=re.S)
    assert len(examples) == 2
    assert examples[0] in (SRC / "tasks" / "text_classification.py").read_text(encoding="utf-8")
    assert examples[1] in (SRC / "methods" / "lora.py").read_text(encoding="utf-8")


# The layers (docs/architecture.md): the core below the applications, imports one way. A
# unit is a top-level module or package of tunesmith.
CORE = {"errors", "io", "cards", "durations", "databases", "data", "evaluate", "quality", "models", "e5small", "gguf",
        "runtimes", "forward", "generation", "tasks", "methods", "config", "plan", "runs", "track", "train",
        "inference", "ensemble"}
APPLICATIONS = {"serve", "ui", "monitor", "assistant", "search", "compress", "commands", "cli", "__main__"}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tunesmith" and len(parts) > 1 else None


def _imports() -> dict[str, dict[str, list[str]]]:
    """unit -> {imported unit: [file:line, ...]} over every import of tunesmith's own modules,
    module-level and function-level alike."""
    found: dict[str, dict[str, list[str]]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        here = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "tunesmith":
                targets = [f"tunesmith.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for unit in filter(None, map(_unit, targets)):
                if unit != here:
                    found.setdefault(here, {}).setdefault(unit, []).append(f"{rel}:{node.lineno}")
    return found


def test_every_unit_is_placed_in_a_layer():
    units = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in SRC.rglob("*.py")} - {"__init__"}
    assert units - CORE - APPLICATIONS == set(), "add the new module to CORE or APPLICATIONS (and the map)"


def test_the_core_never_imports_an_application():
    graph = _imports()
    upward = [where for unit in CORE for target, places in graph.get(unit, {}).items() if target in APPLICATIONS
              for where in places]
    assert upward == []


def test_no_import_cycle_among_core_units():
    """Tarjan's strongly connected components over the core's import graph: each must be one unit."""
    graph = {unit: {t for t in targets if t in CORE} for unit, targets in _imports().items() if unit in CORE}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for target in graph.get(unit, ()):
            if target not in index:
                visit(target)
                low[unit] = min(low[unit], low[target])
            elif target in stack:
                low[unit] = min(low[unit], index[target])
        if low[unit] == index[unit]:
            component = {stack.pop()}
            while unit not in component:
                component.add(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    edges = {f"{a} -> {b}: {_imports()[a][b][0]}" for c in cycles for a in c for b in graph.get(a, ()) if b in c}
    assert cycles == [], sorted(edges)


def test_every_path_the_map_names_exists():
    doc = DOC.read_text(encoding="utf-8")
    root = SRC.parents[1]
    named = set()
    for path in re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py|(?:[a-z_]+/)+)`", doc):
        rooted = path.startswith(("src/", "tests/", "docs/", "bench/"))
        named.add(path if rooted else f"src/tunesmith/{path}")
    assert len(named) > 20
    assert sorted(p for p in named if not (root / p).exists()) == []


def test_the_map_is_one_page():
    assert len(DOC.read_text(encoding="utf-8").splitlines()) <= 150


def test_no_library_module_imports_from_commands():
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "cli.py" or "commands" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tunesmith.commands"):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, offenders


def test_every_task_and_method_declares_its_capabilities():
    for name, task in TASKS.items():
        assert isinstance(task, TaskDefaults), name
        assert set(task.ensemble) <= {"mean", "vote"}, name
        assert "truncate" in task.long_text_modes, name
        if task.servable:  # its answers are documented in /openapi.json and checked in test_registry_walk
            assert issubclass(response_schema(task), BaseModel), name
    for name, method in METHODS.items():
        assert method.tasks is None or set(method.tasks) <= set(TASKS), name
        assert "truncate" in method.long_text_modes, name


def test_no_task_or_method_name_lists_outside_the_registries():
    """A list of two or more registered names in code (not in a description or a docstring)
    is knowledge a declaration should hold."""
    names = set(TASKS) | set(METHODS)
    found = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if sum(v in names for v in values) >= 2:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {values}")
    # a method's own `tasks` declaration; a task's own `methods` one
    allowed = {"methods/qlora.py", "methods/embedding.py", "tasks/sentence_embedding.py"}
    assert [f for f in found if f.split(":")[0] not in allowed] == []


def test_a_settings_section_is_read_only_where_it_is_declared():
    """`cfg.lora_r` may appear only in the modules of the plug-ins that declare LoraSettings,
    so the config's refusal of keys the run never reads (`unread_sections`) stays true."""
    import inspect

    declared: dict[type, set[Path]] = {}
    for plugin in [*TASKS.values(), *METHODS.values()]:
        for section in plugin.settings:
            declared.setdefault(section, set()).add(Path(inspect.getsourcefile(type(plugin))).resolve())
    assert declared, "no plug-in declares a settings section"
    stray = []
    for section, homes in declared.items():
        keys = "|".join(section.model_fields)
        for path in SRC.rglob("*.py"):
            if path.resolve() in homes or path.name == "config.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(rf"\bcfg\.({keys})\b", line):
                    stray.append(f"{path.relative_to(SRC)}:{number} reads {section.__name__}")
    assert stray == []


def test_a_key_only_another_method_or_task_reads_is_refused():
    import pytest

    from tunesmith.config import build_config, run_settings
    from tunesmith.errors import UserError

    with pytest.raises(UserError, match="lora_r is read only with --method adalora or lora or qlora"):
        build_config({"method": "full", "lora_r": 16}, "flags")
    with pytest.raises(UserError, match="image_flip is read only with --task image-classification"):
        build_config({"task": "text-classification", "image_flip": True}, "flags")
    assert build_config({"method": "adalora", "lora_r": 16}, "flags").lora_r == 16
    # A finished run written before the refusal still loads; the key it never read is dropped.
    assert run_settings({"method": "full", "lora_r": 16, "config_version": 2}, "config.yaml").lora_r == 8
