"""All settings go through `app.settings.Settings`: no module of ``app`` or ``agents`` reads
the environment itself (``os.environ``, ``os.getenv``...), apart from the settings module and
the demo's copy of its environment for the worker it starts (handing an environment to a
child process is not reading a setting)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENVIRON_NAMES = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})
SETTINGS_MODULE = "app/settings.py"
#: (file, function) where reading os.environ is legitimate.
ALLOWED = {("app/dev/demo.py", "_start_worker")}


def environ_reads(source: str) -> list[tuple[int, str | None]]:
    """(line, enclosing function) of every use of the process environment in ``source``."""
    tree = ast.parse(source)
    os_names = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {a.asname or a.name for a in node.names if a.name == "os"}
    found: list[tuple[int, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENVIRON_NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id in os_names
        ):
            found.append((node.lineno, function))
        if (
            isinstance(node, ast.ImportFrom)
            and node.module in ("os", "posix", "nt")
            and any(a.name in ENVIRON_NAMES for a in node.names)
        ):
            found.append((node.lineno, function))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    return found


def _python_files() -> list[Path]:
    return sorted(
        p
        for top in ("app", "agents")
        for p in (ROOT / top).rglob("*.py")
        if "__pycache__" not in p.parts
    )


def test_no_module_reads_the_environment_but_the_settings() -> None:
    strays: list[str] = []
    allowed_seen: set[tuple[str, str | None]] = set()
    for path in _python_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == SETTINGS_MODULE:
            continue
        for line, function in environ_reads(path.read_text()):
            if (rel, function) in ALLOWED:
                allowed_seen.add((rel, function))
            else:
                strays.append(f"{rel}:{line} (in {function or 'module'})")
    assert strays == [], "read it through app.settings.Settings: " + ", ".join(strays)
    assert allowed_seen == ALLOWED  # the scan sees the one it allows; the list is not stale


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.environ.get('PSO_X')",
        "import os\ndef f():\n    return os.getenv('JAVA_HOME')",
        "import os as o\nx = o.environ['A']",
        "from os import environ",
        "from os import getenv as g",
    ],
)
def test_the_scan_sees_every_way_to_read_it(source: str) -> None:
    assert environ_reads(source)


def test_the_scan_leaves_other_os_calls_alone() -> None:
    assert environ_reads("import os\nos.path.expanduser('~')\nos.replace('a', 'b')") == []
