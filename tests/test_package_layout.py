"""The packages' layout: setuptools lists every package, and no module of
schemas/, server/ or client_sync/ imports another in a circle (issue 13).

The import graph is read from the source with `ast`, every `import` statement
counted, those inside functions too: a function-level import only hides a
circle, it does not remove it.
"""
import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "server", "client_sync")


def _modules(root=ROOT, packages=PACKAGES):
    """{dotted module name: (path, is_package)} of every module in `packages`."""
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def import_graph(root=ROOT, packages=PACKAGES):
    """{module: set of the modules of `packages` it imports}."""
    modules = _modules(root, packages)

    def ours(name):
        # The module itself, or the package that holds the imported name.
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return None

    graph = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets |= {ours(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the module; `from mod import name` the module.
                targets |= {ours(f"{base}.{alias.name}") if f"{base}.{alias.name}" in modules
                            else ours(base) for alias in node.names}
        graph[name] = targets - {None, name}
    return graph


def circles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_modules_import_each_other_in_a_circle():
    graph = import_graph()
    assert "server.cli" in graph and "server.exports" in graph["server.cli"]
    assert circles(graph) == []


def test_a_circle_through_a_function_level_import_is_found(tmp_path):
    # The shape issue 13 removed: cli -> exports -> export_cli -> cli, the
    # last two edges hidden in a module __getattr__ and inside a command.
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "db.py").write_text("")
    (package / "cli.py").write_text("from .sub import exports\nfrom . import db\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "exports.py").write_text(
        "def __getattr__(name):\n    from .. import export_cli\n    return export_cli\n")
    (package / "export_cli.py").write_text("def command():\n    from .cli import main\n")
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.cli"] == {"pkg.sub.exports", "pkg.db"}
    assert circles(graph) == [["pkg.cli", "pkg.export_cli", "pkg.sub.exports"]]


def test_every_package_is_listed_for_setuptools():
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    listed = set(listed["tool"]["setuptools"]["packages"])
    present = {name for name, (_, is_package) in _modules().items() if is_package}
    assert present == listed
