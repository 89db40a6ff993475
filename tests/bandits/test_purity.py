"""The bandits core stays pure: no web framework, no database, no service import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bandits

FORBIDDEN = {"flask", "flask_openapi3", "sqlalchemy", "alembic", "service", "pickle"}


def test_importing_bandits_loads_no_shell_package() -> None:
    code = (
        "import sys, bandits, bandits.policy, bandits.encoding, bandits.rewards; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & " + repr(FORBIDDEN - {"pickle"}) + "))"
    )
    root = Path(bandits.__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_no_module_imports_the_shell_or_pickle() -> None:
    for path in Path(bandits.__file__).resolve().parent.glob("*.py"):
        text = path.read_text()
        for name in FORBIDDEN:
            assert f"import {name}" not in text and f"from {name}" not in text, (path.name, name)
