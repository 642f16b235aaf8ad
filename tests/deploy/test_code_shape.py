"""The package stays readable in one sitting: no function over 60 lines, no class over 250
(from ``def``/``class`` to its last line, as Python's ast counts them)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {ast.FunctionDef: 60, ast.AsyncFunctionDef: 60, ast.ClassDef: 250}


def _too_long(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            limit = LIMITS.get(type(node))
            if limit is None:
                continue
            assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append(f"{path.relative_to(package)}:{node.lineno} {node.name}: {length}")
    return found


def test_no_function_or_class_in_the_package_is_too_long() -> None:
    assert _too_long(ROOT / "poller") == []


def test_the_check_finds_a_long_function_and_a_long_class(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (tmp_path / "ok.py").write_text(f"def fits():\n{body[: body.rindex(chr(10))]}\n")
    (tmp_path / "long.py").write_text(f"def f():\n{body}\n\nclass C:\n" + "    y = 1\n" * 250)
    assert _too_long(tmp_path) == ["long.py:1 f: 61", "long.py:63 C: 251"]
