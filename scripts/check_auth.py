"""Fail when a tfenv REST handler method is not both authenticated and authorized.

Reads the handler modules' source (the decorators as written), so a handler that forgot
``@web.authenticated`` or ``@authorized`` fails CI before it reaches a user.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

HANDLERS = Path(__file__).resolve().parent.parent / "jupyter_tfenv" / "handlers"
VERBS = {"get", "post", "put", "patch", "delete", "head", "options"}


def decorator_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return f"{decorator_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def problems_in(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(), str(path))
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for func in cls.body:
            if not isinstance(func, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            if func.name not in VERBS:
                continue
            names = [decorator_name(d) for d in func.decorator_list]
            if "web.authenticated" not in names:
                found.append(
                    f"{path.name}:{func.lineno} {cls.name}.{func.name} lacks @web.authenticated"
                )
            if "authorized" not in names:
                found.append(f"{path.name}:{func.lineno} {cls.name}.{func.name} lacks @authorized")
            elif (
                names.index("authorized") < names.index("web.authenticated")
                if ("web.authenticated" in names)
                else False
            ):
                found.append(
                    f"{path.name}:{func.lineno} {cls.name}.{func.name}: "
                    "@web.authenticated must come first"
                )
    return found


def main() -> int:
    files = sorted(HANDLERS.glob("*.py"))
    problems = [p for f in files for p in problems_in(f)]
    for problem in problems:
        print(f"check_auth: {problem}")
    print(f"check_auth: {len(files)} handler modules, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
