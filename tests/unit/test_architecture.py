"""DESIGN.md section 1, enforced: imports point inward and only the outer ring knows platforms."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import studiobot

PACKAGE = Path(studiobot.__file__).parent

# What each part of the package may import from studiobot (besides itself, config and errors).
ALLOWED = {
    "db": set(),
    "media": set(),
    "providers": set(),
    "billing": {"db"},
    "vault": {"db", "providers"},
    "scheduler": {"db", "billing", "providers", "media", "vault"},
    "commands": {"db", "billing", "providers", "media", "scheduler", "vault"},
    "bot": {"commands", "db", "scheduler", "providers", "media", "billing", "vault"},
    "web": {"commands", "db", "scheduler", "providers", "media", "billing", "vault"},
}
PLATFORM_LIBRARIES = {"discord", "telegram"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules() -> list[tuple[str, Path]]:
    return [(p.relative_to(PACKAGE).parts[0], p) for p in sorted(PACKAGE.rglob("*.py"))
            if "migrations" not in p.parts]


def test_imports_point_inward() -> None:
    offences = []
    for part, path in modules():
        if part not in ALLOWED:
            continue  # app.py, cli.py, config.py, errors.py: the composition root and leaves
        for name in imports_of(path):
            if not name.startswith("studiobot."):
                continue
            target = name.split(".")[1]
            if target in {part, "config", "errors"} or target in ALLOWED[part]:
                continue
            offences.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offences == []


def test_only_the_outer_ring_imports_platform_libraries() -> None:
    offences = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for part, path in modules()
        if part != "bot"
        for name in imports_of(path)
        if name.split(".")[0] in PLATFORM_LIBRARIES
    ]
    assert offences == []


def test_importing_every_module_does_no_work() -> None:
    """No module connects, reads settings or starts threads at import time."""
    names = sorted(
        "studiobot." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        for _, p in modules()
        if p.name != "__main__.py"
    )
    script = (
        "import threading, socket\n"
        "def refuse(*a, **k): raise AssertionError('network at import time')\n"
        "socket.socket.connect = refuse\n"
        f"for name in {names!r}: __import__(name)\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
