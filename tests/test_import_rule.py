"""The import rule of the README's architecture section, checked on the source: data flows one way, protocols are
the only shared surface, and only `wm/app` wires packages together."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("wm", "planners", "policies", "envs")


def project_imports(path: Path) -> set[str]:
    """Every project module a file imports (top level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(paths: list[Path], allowed) -> list[str]:
    return [
        f"{p.relative_to(ROOT)} imports {name}"
        for p in paths
        for name in sorted(project_imports(p))
        if not allowed(p, name)
    ]


def test_envs_import_only_themselves_and_the_error_type():
    assert violations(files("envs"), lambda p, n: within(n, "envs", "wm.errors")) == []


def test_planners_import_only_protocols_and_the_error_type():
    ok = ("planners", "wm.errors", "wm.models.protocol", "envs.robot.protocol")
    assert violations(files("planners"), lambda p, n: within(n, *ok)) == []


def test_models_and_data_know_no_planners_policies_or_apps():
    banned = ("planners", "policies", "wm.app")
    assert violations(files("wm/models", "wm/data"), lambda p, n: not within(n, *banned)) == []
    assert violations(files("wm/models"), lambda p, n: not within(n, "envs")) == []


def test_only_the_apps_wire_planners_and_policies_into_the_library():
    library = [p for p in files("wm") if "app" not in p.relative_to(ROOT / "wm").parts]
    assert violations(library, lambda p, n: not within(n, "planners", "policies", "wm.app")) == []
    assert violations(files("policies"), lambda p, n: not within(n, "wm.app")) == []


def test_no_app_module_imports_another_but_the_composers():
    """The CLI, the demo, `wm improve` (and its robot rounds) and the Python API compose the jobs; scripts use the
    library, the Python API and the command line's entry point (`wm.app.cli.main`, the commands as a user types
    them), never a job's module."""
    composers = {"cli.py", "demo.py", "improve.py", "improve_robot.py", "api.py"}
    ok = lambda p, n: p.name in composers or not within(n, "wm.app")  # noqa: E731
    assert violations(files("wm/app"), ok) == []
    entry_points = {"wm.app.api", "wm.app.cli"}
    assert violations(files("scripts"), lambda p, n: n in entry_points or not within(n, "wm.app")) == []


def test_a_folder_named_like_an_engine_package_is_named_in_one_line(tmp_path):
    """Issue 28 item 7: a user's `envs/` next to their script was imported instead of the engine's, and the engine
    failed later with `No module named 'envs.registry'`."""
    import subprocess
    import sys

    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text("")
    run = subprocess.run([sys.executable, "-c", "import wm"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert "shadows wm-engine's 'envs' package" in last and str(tmp_path / "envs") in last
    clean = subprocess.run([sys.executable, "-c", "import wm"], cwd=tmp_path.parent, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
