"""What servesync saw of Ray Serve in one tick: each application's status.

Built by :mod:`servesync.rayserve.applier` (``observe()``) and read by the
planner. Frozen data; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class AppStatus(StrEnum):
    """Ray Serve's ApplicationStatus values, plus MISSING (no such application)."""

    NOT_STARTED = "NOT_STARTED"
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    UNHEALTHY = "UNHEALTHY"
    DELETING = "DELETING"
    MISSING = "MISSING"


@dataclass(frozen=True, slots=True)
class AppObservation:
    name: str
    status: AppStatus
    message: str = ""
    running_replicas: int = 0


@dataclass(frozen=True, slots=True)
class Observed:
    """One snapshot of Serve's applications. ``reachable`` False means Ray could
    not be asked: the planner then changes nothing that depends on it."""

    apps: dict[str, AppObservation] = field(default_factory=dict)
    reachable: bool = True
    error: str = ""  # why Ray could not be asked, when not reachable

    def status(self, app_name: str) -> AppStatus:
        obs = self.apps.get(app_name)
        return obs.status if obs else AppStatus.MISSING
