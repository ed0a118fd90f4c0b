"""The systemd units pass ``systemd-analyze verify`` (where systemd is installed).

The units name /opt/servesync/.venv/bin/{servesync,ray}, which don't exist on
a test machine; the test points them at stub executables, keeping every
other line (continuations included) as shipped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
PREFIX = "/opt/servesync/.venv/bin/"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_units_verify(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("servesync", "ray"):
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    copies = []
    for unit in ("servesync.service", "ray-head.service"):
        text = (UNITS / unit).read_text()
        assert PREFIX in text, unit
        (tmp_path / unit).write_text(text.replace(PREFIX, f"{bin_dir}/"))
        copies.append(str(tmp_path / unit))
    done = subprocess.run(["systemd-analyze", "verify", *copies], capture_output=True,
                          text=True, timeout=60, check=False)
    problems = [line for line in done.stderr.splitlines() if str(tmp_path) in line]
    assert done.returncode == 0, done.stderr
    assert problems == []


def test_service_is_notify_and_hardened() -> None:
    text = (UNITS / "servesync.service").read_text()
    for line in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                 "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text.splitlines(), line
    assert any(ln.startswith("ReadWritePaths=") and "/var/lib/servesync" in ln
               for ln in text.splitlines())


def test_a_lost_ray_connection_exit_is_restarted_and_a_config_error_is_not() -> None:
    """daemon/loop.py exits 3 when the Ray connection is lost (systemd must
    restart it) and 2 on a config error (a restart would not help)."""
    from servesync.daemon.loop import EXIT_CONFIG, EXIT_RAY_LOST

    lines = (UNITS / "servesync.service").read_text().splitlines()
    assert "Restart=on-failure" in lines
    (prevent,) = [ln.split("=", 1)[1].split() for ln in lines
                  if ln.startswith("RestartPreventExitStatus=")]
    assert str(EXIT_CONFIG) in prevent and str(EXIT_RAY_LOST) not in prevent
