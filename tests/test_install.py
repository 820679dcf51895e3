"""A non-editable install works from any folder: the forms ship as package data.

Builds a wheel from a copy of the source tree, installs it with its
dependencies into a fresh virtualenv (no system site-packages), and from a
folder outside the source tree loads and compiles every bundled form.
"""
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "client_sync", "server")

SNIPPET = """
import json, sys
import schemas
from schemas.forms import bundled_definitions, compile_form
forms = [compile_form(d) for d in bundled_definitions()]
print(json.dumps({"file": schemas.__file__, "forms": sorted(f"{f.id}/v{f.version}" for f in forms)}))
"""


def run(cmd, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_installed_wheel_loads_every_bundled_form(tmp_path):
    # Build from a copy, so the build leaves nothing (build/, egg-info) in the tree.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(source), "-w", str(wheels)],
        cwd=tmp_path)
    wheel = next(wheels.glob("fieldsync-*.whl"))

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False, clear=True)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # Dependencies come from the index (PyPI here); pip's cache makes reruns fast.
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = json.loads(run([python, "-c", SNIPPET], cwd=elsewhere).strip().splitlines()[-1])

    assert str(ROOT) not in out["file"] and str(env_dir) in out["file"]
    expected = sorted(f"{p.parent.name}/{p.stem}" for p in (ROOT / "schemas" / "forms").glob("*/v*.json"))
    assert out["forms"] == expected and len(expected) > 0

    # The console's templates, static files and compiled catalogs ship too:
    # the sign-in page renders in Vietnamese from the installed package.
    run([python, "-c", "from server.cli import main; main()", "--db", "c.db", "init"],
        cwd=elsewhere)
    page = run([python, "-c", CONSOLE_SNIPPET], cwd=elsewhere)
    assert "Đăng nhập bảng điều khiển giám sát" in page and "css ok" in page


CONSOLE_SNIPPET = """
from server import create_app
client = create_app({"DB": "c.db"}).test_client()
print(client.get("/sign-in").text)
css = client.get("/console-static/console.css")
print("css ok" if css.status_code == 200 and b"--accent" in css.data else "css missing")
"""
