"""The experiments core stays pure: no web framework, no database, no service import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import experiments

PACKAGE = Path(experiments.__file__).resolve().parent
MODULES = tuple(sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"))
FORBIDDEN = {"flask", "flask_openapi3", "sqlalchemy", "alembic", "service"}


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_nothing_from_the_shell(module: str) -> None:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and not node.level}
    assert not {name.split(".")[0] for name in imported} & FORBIDDEN, imported


def test_importing_the_core_loads_no_shell_package() -> None:
    names = ", ".join(f"experiments.{m}" for m in MODULES)
    code = (f"import sys, {names}; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & " + repr(FORBIDDEN) + "))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
