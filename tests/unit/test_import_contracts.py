"""The import contracts of ``.importlinter`` cover every module and fail on a break.

``lint-imports`` itself runs in scripts/test; these tests make sure it can
fail: a new top-level module left out of the Ray contract is caught, and a
copy of the package with layer-crossing imports is refused by the real tool.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import servesync

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"
PACKAGE_DIR = Path(servesync.__file__).parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    assert parser.read(CONFIG), f"{CONFIG} is missing"
    return parser


def listed(section: str, key: str) -> set[str]:
    return {line.strip() for line in contracts()[section][key].splitlines() if line.strip()}


def top_level_modules() -> set[str]:
    names = {p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file()}
    return {f"servesync.{n}" for n in names}


def test_every_module_but_rayserve_is_forbidden_to_import_ray() -> None:
    section = "importlinter:contract:only-rayserve-imports-ray"
    assert listed(section, "forbidden_modules") == {"ray"}
    assert listed(section, "source_modules") == top_level_modules() - {"servesync.rayserve"}


def test_every_layer_names_a_real_module() -> None:
    layers = contracts()["importlinter:contract:tick-layers"]["layers"]
    named = {m.strip() for line in layers.splitlines() for m in line.split("|") if m.strip()}
    assert named <= top_level_modules()
    assert {"servesync.desired", "servesync.converge", "servesync.rayserve",
            "servesync.state", "servesync.status", "servesync.daemon"} <= named


def run_lint(package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache"],
                          capture_output=True, text=True, env=env, cwd=package_parent,
                          timeout=120, check=False)


def test_the_package_keeps_every_contract() -> None:
    done = run_lint(PACKAGE_DIR.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_crossing_a_layer_fails_lint_imports(tmp_path: Path) -> None:
    copy = tmp_path / "servesync"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "converge" / "planning.py").open("a") as f:
        f.write("\nimport ray  # noqa\nfrom servesync.state import store  # noqa\n")
    with (copy / "desired" / "specs.py").open("a") as f:
        f.write("\nfrom servesync.converge import records  # noqa\n")
    done = run_lint(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    for contract in ("Only servesync.rayserve imports ray BROKEN",
                     "desired (sources, loading, validation) never imports converge BROKEN",
                     "The tick's layers import only downward BROKEN"):
        assert contract in done.stdout, done.stdout
    assert "servesync.converge.planning -> servesync.state.store" in done.stdout
