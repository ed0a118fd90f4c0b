"""systemd's sd_notify protocol, in pure stdlib: READY, WATCHDOG, STOPPING, STATUS.

Called by :mod:`servesync.daemon.loop`. ``Notifier.from_env()`` reads
``$NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for an abstract socket)
and ``$WATCHDOG_USEC``/``$WATCHDOG_PID``; without ``$NOTIFY_SOCKET`` every
call is a no-op, so the daemon runs the same way outside systemd.

Side effects: sends one AF_UNIX datagram per call. A failed send is logged
at debug level and never raised: losing a notification must not stop the
daemon (systemd's own timeouts then tell the operator).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to one socket address (or nowhere)."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """Build from ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``.

        The watchdog is ignored when ``$WATCHDOG_PID`` names another process
        (it was meant for a parent or a child of ours)."""
        env = os.environ if env is None else env
        usec: int | None = None
        pid = env.get("WATCHDOG_PID", "")
        if not pid or pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", ""))
            except ValueError:
                usec = None
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half of ``$WATCHDOG_USEC``; None when off."""
        return self._watchdog_usec / 2_000_000 if self._watchdog_usec else None

    def ready(self) -> bool:
        return self.send("READY=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def status(self, text: str) -> bool:
        """One short line shown by ``systemctl status`` (newlines are flattened)."""
        return self.send("STATUS=" + " ".join(text.split()))

    def send(self, message: str) -> bool:
        """Send ``message`` (``KEY=value`` lines); True when it was sent."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode("utf-8", "replace"))
        except OSError as e:
            log.debug("sd_notify %r failed: %s", message.split("=", 1)[0], e)
            return False
        return True


def _socket_address(address: str) -> str:
    """``@name`` is Linux's abstract namespace: a leading NUL byte on the wire."""
    return "\0" + address[1:] if address.startswith("@") else address
