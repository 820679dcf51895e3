"""A non-editable install works from any folder: the forms ship as package data.

Builds a wheel from a copy of the source tree with the pinned setuptools of
this virtualenv (no build isolation, no package index), installs it into a
fresh virtualenv (no system site-packages) from that file alone, and from a
folder outside the source tree loads and compiles every bundled form. The
dependencies come from this virtualenv's site-packages (a path, not its
.pth files, so not its editable fieldsync): nothing is downloaded, and the
test runs offline once `.venv` exists.
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
import server.cli  # every server package is in the wheel (server.exports, server.api)
from schemas.forms import bundled_definitions, compile_form
forms = [compile_form(d) for d in bundled_definitions()]
import client_sync, server
print(json.dumps({"file": schemas.__file__, "forms": sorted(f"{f.id}/v{f.version}" for f in forms),
                  "others": [client_sync.__file__, server.__file__]}))
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
    offline = ["--no-index", "--disable-pip-version-check", "--quiet"]
    run([sys.executable, "-m", "pip", "wheel", *offline, "--no-deps", "--no-build-isolation",
         str(source), "-w", str(wheels)], cwd=tmp_path)
    wheel = next(wheels.glob("fieldsync-*.whl"))

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False, clear=True)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run([python, "-m", "pip", "install", *offline, "--no-deps", str(wheel)], cwd=tmp_path)
    # The dependencies: this virtualenv's site-packages, after the fresh one's.
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               cwd=tmp_path).strip()
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p, "flask").is_dir()]
    Path(site, "deps-of-the-test-venv.pth").write_text("\n".join(ours) + "\n")
    run([python, "-m", "pip", "check"], cwd=tmp_path)  # every Requires-Dist is met

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = json.loads(run([python, "-c", SNIPPET], cwd=elsewhere).strip().splitlines()[-1])

    assert str(ROOT) not in out["file"] and str(env_dir) in out["file"]
    assert all(str(env_dir) in f for f in out["others"]), out["others"]
    expected = sorted(f"{p.parent.name}/{p.stem}" for p in (ROOT / "schemas" / "forms").glob("*/v*.json"))
    assert out["forms"] == expected and len(expected) > 0

    # Every package of the source tree ships: pyproject.toml lists them one by
    # one, and a subpackage left out would import only from the source tree.
    packages = sorted(".".join(p.parent.relative_to(ROOT).parts)
                      for name in PACKAGES for p in (ROOT / name).rglob("__init__.py"))
    assert "client_sync.store" in packages
    run([python, "-c", "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)",
         *packages], cwd=elsewhere)

    # The console's templates, static files and compiled catalogs ship too:
    # the sign-in page renders in Vietnamese from the installed package.
    run([python, "-c", "from server.cli import main; main()", "--db", "c.db", "init"],
        cwd=elsewhere)
    page = run([python, "-c", CONSOLE_SNIPPET], cwd=elsewhere)
    assert "Đăng nhập bảng điều khiển giám sát" in page and "css ok" in page
    # The fieldsync command's compiled catalog ships as well (issue 17).
    said = run([python, "-c", "from client_sync.cli import main; main()", "--data-dir", "d",
                "--lang", "vi", "lock"], cwd=elsewhere)
    assert said.startswith("Đã khóa"), said


def test_the_build_backend_is_pinned_and_is_the_one_installed_here():
    """The build requirement is pinned (a build next year uses the same
    setuptools), the test extra pins the same one, and that is what this
    virtualenv holds: the offline build above tests the real backend."""
    import tomllib
    from importlib.metadata import version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [backend] = project["build-system"]["requires"]
    assert backend.startswith("setuptools==")
    assert backend in project["project"]["optional-dependencies"]["test"]
    assert version("setuptools") == backend.split("==")[1]
    assert project["project"]["license"] == "MIT"  # an SPDX expression, not {text = ...}


CONSOLE_SNIPPET = """
from server import create_app
client = create_app({"DB": "c.db"}).test_client()
print(client.get("/sign-in").text)
css = client.get("/console-static/console.css")
print("css ok" if css.status_code == 200 and b"--accent" in css.data else "css missing")
"""
