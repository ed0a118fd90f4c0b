"""Only ``servesync.applying`` may import ``ray`` (DESIGN.md: one module talks to Ray)."""

from __future__ import annotations

import ast
from pathlib import Path

import servesync

PACKAGE_DIR = Path(servesync.__file__).parent
ALLOWED = {"applying.py"}


def ray_imports(path: Path) -> list[str]:
    """``file:line module`` for every import of ray or a ray submodule in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path.name}:{node.lineno} {n}" for n in names
                  if n == "ray" or n.startswith("ray.")]
    return found


def test_the_scan_sees_the_applier_import_ray() -> None:
    assert ray_imports(PACKAGE_DIR / "applying.py"), "the scan would miss real imports"


def test_no_other_module_imports_ray() -> None:
    sources = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(sources) > 5
    offenders = [hit for path in sources if path.name not in ALLOWED
                 for hit in ray_imports(path)]
    assert offenders == []
