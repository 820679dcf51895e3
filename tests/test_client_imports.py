"""The device library's import graph: no circles, and no server or Flask.

Read from the source (every import statement, function-level ones too), so a
circle hidden behind a late import counts as one.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that the file at `path` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule `pkg.sub`.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules or t.split(".")[0] in ("server", "flask"))
    return found


def graph(package: str) -> dict[str, set[str]]:
    files = [p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def find_cycle(edges: dict[str, set[str]]):
    """One import circle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_sees_a_circle_through_a_late_import(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert find_cycle(graph("pkg")) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import sub\n")
    assert find_cycle(graph("pkg")) is None


def test_client_sync_has_no_import_circle():
    edges = graph("client_sync")
    assert {"client_sync.store", "client_sync.store.outbox"} <= set(edges)
    assert find_cycle(edges) is None


@pytest.mark.parametrize("forbidden", ["server", "flask"])
def test_client_sync_never_imports_the_server_or_flask(forbidden):
    # client_sync.app (`fieldsync app`, the local web app) is the one part
    # built on Flask; nothing else imports it but the `app` command, late.
    offenders = {m for m, deps in graph("client_sync").items()
                 if any(d.split(".")[0] == forbidden for d in deps)
                 and not (forbidden == "flask" and m.startswith("client_sync.app"))}
    assert not offenders
    assert not any(d.split(".")[0] == "server" for m, deps in graph("client_sync").items()
                   for d in deps)


def test_importing_the_library_loads_no_flask():
    import subprocess
    code = ("import sys, client_sync, client_sync.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('flask', 'flask_babel', 'flask_wtf', 'werkzeug', 'client_sync.app')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[]"
