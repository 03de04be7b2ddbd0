"""The package's layout, read from its source with ``ast``: no import cycle between its modules, no module
using another one's private names, every module small and opening with a docstring that says its job,
and the decoding process free of the UI libraries."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llm_memory"
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name that a ``from ... import`` names, relative ones resolved against ``module``."""
    if not node.level:
        return node.module
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports(module: str) -> list[tuple[str, str | None, ast.AST]]:
    """(imported module, name taken from it or None, node) for every import in ``module``, those inside
    functions too: an import done late is still a dependency."""
    found = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule, None, node) if submodule in MODULES else (source, alias.name, node))
    return [(target, name, node) for target, name, node in found if target.split(".")[0] == "llm_memory"]


def graph() -> dict[str, set[str]]:
    return {module: {target for target, _, _ in imports(module) if target in MODULES} for module in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), and modules importing themselves."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_the_walker_sees_the_packages_imports():
    edges = graph()
    assert "llm_memory.serving.batcher" in edges["llm_memory.serving.decoder_process"]
    assert "llm_memory.modeling.configuration_memory_transformer" in edges["llm_memory"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_the_packages_modules():
    assert cycles(graph()) == []


def module_aliases(module: str) -> dict[str, str]:
    """Local name -> the package's module it is bound to, in ``module``."""
    aliases = {}
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            aliases |= {
                alias.asname: alias.name for alias in node.names if alias.asname and alias.name in MODULES
            }
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
    return aliases


def test_no_module_imports_or_reads_another_modules_private_names():
    offences = []
    for module in MODULES:
        for target, name, _ in imports(module):
            if name is not None and is_private(name):
                offences.append(f"{module} imports {name} from {target}")
            if any(is_private(part) for part in target.split(".")):
                offences.append(f"{module} imports the private module {target}")
        aliases = module_aliases(module)
        for node in ast.walk(TREES[module]):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and is_private(node.attr)
            ):
                offences.append(f"{module} reads {aliases[node.value.id]}.{node.attr}")
    assert offences == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_is_small_and_says_its_job_first(module):
    path = MODULES[module]
    relative = path.relative_to(PACKAGE).as_posix()
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{relative} has {lines} lines"
    docstring = ast.get_docstring(TREES[module])
    assert docstring, f"{relative} has no module docstring"
    summary = docstring.split("\n")[0]
    assert summary.endswith(".") and len(summary) <= 120, (
        f"{relative}: the docstring's first line should be one sentence that says what the module does, "
        f"got {summary!r}"
    )


def test_the_decoding_process_imports_neither_gradio_nor_plotly():
    code = (
        "import sys; import llm_memory.serving.decoder_process; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'gradio', 'plotly', 'matplotlib'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
