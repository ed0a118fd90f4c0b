"""Real processes for the daemon e2e tests: a ``ray start --head`` cluster and a
``servesync`` subprocess (the sd_notify socket and the desired-state git repo
are the shared ones of tests/support: ``sdnotify.NotifyListener``, ``gitrepos.GitRepo``).

Used by ``tests/e2e/test_daemon_e2e.py``; nothing here imports ``ray``, so the
test process never becomes a Ray driver (another e2e module may already
hold an in-process Ray in the same pytest session).

* :class:`RayHead` starts ``ray start --head`` in a session of its own, with
  a short temp dir under ``/tmp`` (Ray's unix socket paths are limited to
  107 characters), every port picked free (never 6379/8000 or Ray's default
  agent ports, which a parallel cluster may hold) and token authentication
  with a token of its own (``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN_PATH``,
  so ``~/.ray/auth_token`` is neither needed nor touched). :meth:`RayHead.stop`
  ends exactly the processes of that session (Ray's GCS, raylet, dashboard,
  workers and vLLM engines all inherit it), SIGTERM then SIGKILL, never a
  machine-wide ``ray stop``; :meth:`RayHead.kill` + :meth:`RayHead.start`
  is a head crash and restart on the same address and token. Serve's view
  (replicas with their actor ids) is read from the cluster's dashboard REST
  API with that token.
* Measured on Ray 2.60: ``ray start --head`` enables token auth when
  ``~/.ray/auth_token`` exists (or ``RAY_AUTH_MODE=token``), and a driver
  given an explicit ``host:port`` only sends a token when ``RAY_AUTH_MODE=token``
  is in its environment (the token from ``RAY_AUTH_TOKEN``,
  ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``). Without it ``ray.init``
  retries "InvalidAuthToken: Authentication token is missing or incorrect"
  and then raises ``ConnectionError: Failed to connect to Ray cluster``.
  :meth:`RayHead.driver_env` is the environment a driver (the daemon) needs.
* :class:`RayWorker` adds a second node to a :class:`RayHead`'s cluster on
  this machine (``ray start --address=...``, its own session, temp dir, CPUs,
  a custom resource naming it, free ports); :meth:`RayWorker.stop` ends it
  alone. :meth:`RayHead.state` reads Ray's state API (nodes, placement groups
  with the node of each bundle) through the dashboard, with the token.
* :class:`Daemon` runs ``servesync run --config FILE`` with its output in a log file.

Side effects: processes (ended by the ``stop``/``close`` methods, which the
fixtures call even when a test fails), temp dirs under ``/tmp``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.e2e.conftest import free_port

BIN = Path(sys.executable).parent
RAY_START_TIMEOUT_S = 240.0  # ~40 s on 2 busy cores
STOP_GRACE_S = 15.0
# Ray's own ports, each picked free: none of its defaults (6379, 8265, 10001,
# 52365, ...), which another cluster on this machine may hold.
_PORT_FLAGS = (
    "port", "dashboard-port", "ray-client-server-port", "node-manager-port",
    "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
    "runtime-env-agent-port", "metrics-export-port",
)  # fmt: skip
WORKER_PORTS = 200  # a free block below Linux's ephemeral range (32768+)
# The ports a worker node (``ray start --address=...``) opens itself; the others are the head's.
_NODE_PORT_FLAGS = frozenset((
    "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
))  # fmt: skip
WORKER_OBJECT_STORE_BYTES = 256 * 1024**2  # the second node holds no objects of note



def tail(path: Path, chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"({path}: {e})"
    return text[-chars:]


def _worker_port_range() -> tuple[int, int]:
    """A block of WORKER_PORTS ports that are free right now, below 32768."""
    rng = secrets.SystemRandom()
    for _ in range(50):
        low = rng.randrange(20000, 32768 - WORKER_PORTS)
        if all(_port_free(p) for p in range(low, low + WORKER_PORTS)):
            return low, low + WORKER_PORTS - 1
    raise RuntimeError("no free block of worker ports found")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _wait_ray_start(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait for a ``ray start`` to return; raise with its log unless it exited 0."""
    try:
        code = proc.wait(RAY_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = -1
    if code != 0:
        raise RuntimeError(f"ray start exited {code}:\n{tail(log_path)}")


def session_pids(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (from /proc/<pid>/stat)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # after "pid (comm)": state ppid pgrp session ...; zombies are reaped by init
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def titles(pids: list[int]) -> list[str]:
    """The command lines of ``pids`` (a process's title once it set one, as
    vLLM's workers do: ``VLLM::Worker_PP1``); processes gone meanwhile are skipped."""
    out = []
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        out.append(raw.replace(b"\0", b" ").decode(errors="replace").strip())
    return out


def end_session(sid: int, *, grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM every process of session ``sid``, SIGKILL what is left after
    ``grace_s``; returns the pids still alive afterwards (should be none)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_pids(sid):
            return []
    return session_pids(sid)


class RayHead:
    """One ``ray start --head`` cluster owned by the test, in its own session."""

    def __init__(self, *, num_cpus: int = 16, resources: Mapping[str, float] | None = None) -> None:
        self.num_cpus = num_cpus
        self.resources = dict(resources or {})
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ssr", dir="/tmp"))
        self.token_path = self.temp_dir / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        self.ports = {flag: free_port() for flag in _PORT_FLAGS}
        self.worker_ports = _worker_port_range()
        self.log_path = self.temp_dir / "ray-start.log"
        self.sid: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['port']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard-port']}"

    def driver_env(self) -> dict[str, str]:
        """The environment of a process that joins this cluster (a driver)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        return env

    def start(self) -> float:
        """Start the cluster; the seconds it took. Raises with the log on failure."""
        args = [
            str(BIN / "ray"), "start", "--head", "--num-cpus", str(self.num_cpus),
            "--temp-dir", str(self.temp_dir), "--disable-usage-stats",
            "--dashboard-host", "127.0.0.1",
            "--min-worker-port", str(self.worker_ports[0]),
            "--max-worker-port", str(self.worker_ports[1]),
        ]  # fmt: skip
        if self.resources:
            args += ["--resources", json.dumps(self.resources)]
        for flag, port in self.ports.items():
            args += [f"--{flag}", str(port)]
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            proc = subprocess.Popen(args, env=self.driver_env(), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            self.sid = proc.pid  # the session leader's pid is the session id
            _wait_ray_start(proc, self.log_path)
        return time.monotonic() - started

    def kill(self) -> list[int]:
        """The head dies: every process of its session SIGKILLed (after a
        SIGTERM), the temp dir and token kept, so :meth:`start` brings it back
        on the same address and token. Returns pids that survived (should be none)."""
        left = end_session(self.sid, grace_s=0.5) if self.sid is not None else []
        self.sid = None
        return left

    def stop(self) -> list[int]:
        """End every process of the cluster's session; remove its temp dir.
        Returns pids that survived SIGKILL (should be none)."""
        left: list[int] = []
        if self.sid is not None:
            left = end_session(self.sid)
        if not left:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left

    # -- reading Serve through the dashboard (no driver in the test process) ----------

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.dashboard_url}{path}",
            headers={"Authorization": f"Bearer {self.token_path.read_text().strip()}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def serve_details(self) -> dict[str, Any]:
        details: dict[str, Any] = self._get("/api/serve/applications/")
        return details

    def state(self, resource: str) -> list[dict[str, Any]]:
        """Rows of Ray's state API with their details, as ``ray list <resource>
        --detail`` shows them (``nodes``, ``placement_groups``, ``actors``, ...)."""
        reply = self._get(f"/api/v0/{resource}?detail=true&limit=10000")
        if not reply.get("result"):
            raise RuntimeError(f"state API {resource}: {reply.get('msg')}")
        rows: list[dict[str, Any]] = reply["data"]["result"]["result"]
        return rows

    def replicas(self, app_name: str) -> dict[str, str]:
        """``{actor_id: state}`` of one application's replicas (all deployments)."""
        app = (self.serve_details().get("applications") or {}).get(app_name) or {}
        return {
            str(r["actor_id"]): str(r.get("state"))
            for dep in (app.get("deployments") or {}).values()
            for r in dep.get("replicas") or []
            if r.get("actor_id")
        }

    def running_replica_ids(self, app_name: str) -> set[str]:
        return {a for a, state in self.replicas(app_name).items() if state == "RUNNING"}


class RayWorker:
    """A second node of a :class:`RayHead`'s cluster on this machine: ``ray start
    --address=<head>`` in a session of its own, with its own temp dir, CPUs,
    custom resources (to name it) and free ports. :meth:`stop` ends exactly its
    session's processes (its raylet and the Ray workers it started); the head
    goes on without it."""

    def __init__(self, head: RayHead, *, num_cpus: int,
                 resources: Mapping[str, float] | None = None) -> None:
        self.head, self.num_cpus = head, num_cpus
        self.resources = dict(resources or {})
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ssw", dir="/tmp"))
        self.ports = {flag: free_port() for flag in _PORT_FLAGS if flag in _NODE_PORT_FLAGS}
        self.worker_ports = _worker_port_range()
        self.log_path = self.temp_dir / "ray-start.log"
        self.sid: int | None = None

    def start(self) -> float:
        """Join the head's cluster; the seconds ``ray start`` took (the node is
        registered when it returns). Raises with the log on failure."""
        args = [
            str(BIN / "ray"), "start", f"--address={self.head.address}",
            "--num-cpus", str(self.num_cpus), "--resources", json.dumps(self.resources),
            "--temp-dir", str(self.temp_dir), "--disable-usage-stats",
            "--object-store-memory", str(WORKER_OBJECT_STORE_BYTES),
            "--min-worker-port", str(self.worker_ports[0]),
            "--max-worker-port", str(self.worker_ports[1]),
        ]  # fmt: skip
        for flag, port in self.ports.items():
            args += [f"--{flag}", str(port)]
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            proc = subprocess.Popen(args, env=self.head.driver_env(), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            self.sid = proc.pid
            _wait_ray_start(proc, self.log_path)
        return time.monotonic() - started

    def pids(self) -> list[int]:
        """The node's processes (none before :meth:`start` or after :meth:`stop`)."""
        return session_pids(self.sid) if self.sid is not None else []

    def stop(self) -> list[int]:
        """End every process of the node's session; remove its temp dir.
        Returns pids that survived SIGKILL (should be none)."""
        left: list[int] = []
        if self.sid is not None:
            left = end_session(self.sid)
            self.sid = None
        if not left:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left


class Daemon:
    """``servesync run --config FILE`` as a subprocess, output in a log file."""

    def __init__(self, config_path: Path, log_path: Path, env: Mapping[str, str]) -> None:
        self.config_path, self.log_path, self.env = config_path, log_path, dict(env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "servesync"), "run", "--config", str(self.config_path)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout_s: float) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if still running after ``timeout_s``, seconds)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def close(self) -> None:
        """Make sure it is gone (SIGKILL its whole session if it still runs)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        end_session(self.proc.pid, grace_s=1.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def log(self) -> str:
        return tail(self.log_path)


def run_cli(*args: str, env: Mapping[str, str], timeout_s: float = 120.0) -> tuple[int, str]:
    """Run ``servesync ARGS``; (exit code, stdout + stderr)."""
    done = subprocess.run([str(BIN / "servesync"), *args], env=dict(env), capture_output=True,
                          text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, check=False)
    return done.returncode, done.stdout + done.stderr
