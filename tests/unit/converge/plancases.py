"""Builders shared by the planner and tick tests: specs, records, observations."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from servesync.converge import naming
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.records import ModelRecord, State
from servesync.desired.specs import DesiredState, DocumentResult, FileResult, ModelSpec
from servesync.errors import Issue, IssueCode
from tests.support.clock import T0
from tests.support.clock import at as at  # re-exported: the tick tests import it from here


def spec(suffix: str = "a", user: str = "alice", **kw: Any) -> ModelSpec:
    base: dict[str, Any] = dict(
        user_id=user, suffix=suffix, model_source=f"$HOME/{suffix}",
        resolved_source=f"/private/users/{user}/{suffix}", num_replicas=1, autoscaling=None,
        gpus_per_replica=1, cpus_per_replica=1.0, source_file=f"users/{user}/{suffix}.yaml",
    )
    base.update(kw)
    return ModelSpec(**base)


def desired(*specs: ModelSpec, bad_files: tuple[str, ...] = (),
            bad_names: tuple[tuple[str, str, str], ...] = (),
            revoked: tuple[ModelSpec, ...] = (), unread_folders: tuple[str, ...] = (),
            revision: str = "rev1") -> DesiredState:
    """A desired state of valid ``specs``; ``bad_files`` have a parse error,
    ``bad_names`` (file, user, suffix) are documents with a schema error,
    ``revoked`` are models whose document's only issue is a 403 on its
    model_source (:data:`REVOKED` says why); ``unread_folders`` (paths ending
    in '/') could not be read."""
    files = [FileResult(s.source_file, s.user_id, (), (DocumentResult(0, 1, s.suffix, (), s),))
             for s in specs]
    for path in bad_files:
        issue = Issue(IssueCode.INVALID, path, 3, "", "parse error")
        files.append(FileResult(path, path.split("/")[1], (issue,), ()))
    for path, user, suffix in bad_names:
        issue = Issue(IssueCode.INVALID, path, 2, "/num_replicas", "bad")
        files.append(FileResult(path, user, (), (DocumentResult(0, 1, suffix, (issue,)),)))
    for s in revoked:
        issue = Issue(IssueCode.FORBIDDEN, s.source_file, 2, "/model_source", REVOKED)
        files.append(FileResult(s.source_file, s.user_id, (),
                                (DocumentResult(0, 1, s.suffix, (issue,)),)))
    for path in unread_folders:
        issue = Issue(IssueCode.INVALID, path, 0, "", "cannot read this folder")
        files.append(FileResult(path, path.split("/")[1] or None, (issue,), (), folder=True))
    reasons = {s.name: f"model_source {s.model_source}: {REVOKED}" for s in revoked}
    return DesiredState(revision, tuple(files), reasons)


REVOKED = "model.safetensors in /private/users/alice/a is a symlink that leads out of ..."


def record(s: ModelSpec, state: State = State.RUNNING, *, admitted: datetime = T0,
           **kw: Any) -> ModelRecord:
    key = naming.model_key(s.user_id, s.suffix, admitted)
    rec = ModelRecord(
        model_key=key, user_id=s.user_id, suffix=s.suffix,
        prefix=naming.model_prefix(s.user_id, admitted), app_name=key,
        spec_hash=s.spec_hash(), spec=s.to_json(), state=state, enabled=s.enabled,
        source_file=s.source_file, applied_revision="rev0", attempted_revision="rev0",
        applied_hash=s.spec_hash() if state is State.RUNNING else None,
        created_at=admitted.isoformat(), updated_at=admitted.isoformat(),
        submitted_at=admitted.isoformat(),
    )
    return replace(rec, **kw)


def observed(*pairs: tuple[ModelRecord | str, AppStatus], reachable: bool = True) -> Observed:
    """Ray's view: a recorded model's RUNNING application runs the replicas it asks for."""
    apps = {}
    for who, status in pairs:
        name = who if isinstance(who, str) else who.app_name
        running = who.asked_replicas if isinstance(who, ModelRecord) and status is \
            AppStatus.RUNNING else 0
        apps[name] = AppObservation(name, status, "boom" if status is AppStatus.DEPLOY_FAILED
                                    else "", running)
    return Observed(apps=apps, reachable=reachable)
