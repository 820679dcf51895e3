"""schemas/ stays easy to live in: no import circle among its modules
(issue 13), and no module there reaches for Flask, the server or the device.

The graph is of module-level imports (those run when a module is first
imported), read from the source with ast, relative imports resolved.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported (not inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                found.add(module)
                # `from . import evaluate` imports the submodule itself.
                found.update(f"{module}.{alias.name}" for alias in node.names)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SCHEMAS.rglob("*.py")}
    return {name: {m for m in top_level_imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def test_the_graph_is_read_from_the_source():
    g = graph()
    assert "schemas.forms.load" in g["schemas.forms"]
    assert "schemas.forms.compiled" in g["schemas.forms.load"]
    assert "schemas.compute" in g["schemas.forms.compiler"]


def test_no_import_circle_in_schemas():
    g = graph()
    done, trail = set(), []

    def visit(name):
        if name in trail:
            cycle = trail[trail.index(name):] + [name]
            raise AssertionError("import circle: " + " -> ".join(cycle))
        if name in done:
            return
        trail.append(name)
        for other in sorted(g[name]):
            # A package's own __init__ runs before its submodules: importing
            # a submodule of the package one sits in is no edge back.
            if not (name.startswith(other + ".")):
                visit(other)
        trail.pop()
        done.add(name)

    for name in sorted(g):
        visit(name)


def test_schemas_imports_neither_flask_nor_server_nor_device():
    for path in SCHEMAS.rglob("*.py"):
        for module in top_level_imports(path):
            assert module.split(".")[0] not in ("flask", "server", "client_sync"), (path, module)
