"""Issue 10's resource and rollout knobs: the rules only code can check, and
what a valid document's knobs become in its :class:`~servesync.desired.specs.ModelSpec`.

Called by :mod:`servesync.desired.validating` after the JSON Schema (which
holds the fields' shapes and Ray's own limits) passed them. Pure: reads the
document and the cluster's :class:`~servesync.config.ServingConfig`, nothing
else.

Rules (each names the field; the classes are the README's):

* ``memory_gb_per_replica`` above ``serving.max_memory_gb_per_replica`` -> 422;
* ``accelerator_type`` or ``min_compute_capability`` on a CPU cluster -> 422;
* ``accelerator_type`` the cluster does not offer -> 403;
* ``min_compute_capability`` no offered type satisfies (or above the one
  named in ``accelerator_type``) -> 422;
* a ``rollout`` field outside ``serving.rollout_bounds`` -> 422;
* a ``notify`` name that is not a sink open to the file's user -> 422 (the
  same whether the sink is absent or closed to the user; only the sinks
  open to that user are listed).

How the GPU type reaches Ray (docs/ARCHITECTURE.md, "Resources"): the spec
carries the *resolved* types, ``accelerators``: the one named, or every
offered type whose capability is at least the minimum (sorted), or none (the
cluster's default). :mod:`servesync.rayserve.llmconfigs` asks Ray for one
type by name and for several by node label.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeGuard

from servesync.config import ServingConfig, capability
from servesync.desired.specs import Parallelism, Rollout
from servesync.errors import IssueCode
from servesync.redaction import quote

Problem = tuple[IssueCode, str, str]
"""(class, JSON pointer, message) of one refused knob."""


def issues(data: Mapping[str, Any], serving: ServingConfig,
           flagged: set[str], sinks: tuple[str, ...] = ()) -> Iterator[Problem]:
    """The knobs' problems that the schema cannot see (``flagged``: pointers the
    schema already refused, left alone; ``sinks``: the names of the
    notification sinks open to the file's user, which ``notify`` may list)."""
    memory = data.get("memory_gb_per_replica")
    cap = serving.max_memory_gb_per_replica
    if cap is not None and _number(memory) and memory > cap \
            and "/memory_gb_per_replica" not in flagged:
        yield (IssueCode.UNPROCESSABLE, "/memory_gb_per_replica",
               f"memory_gb_per_replica {memory:g} is above this cluster's limit of {cap:g} GiB "
               "per replica (serving.max_memory_gb_per_replica)")
    yield from _accelerator_issues(data, serving, flagged)
    notify = data.get("notify")
    if isinstance(notify, list) and "/notify" not in flagged:
        for i, name in enumerate(notify):
            if isinstance(name, str) and name not in sinks:
                # the same answer whether the sink is absent or closed to this
                # user: a tenant never learns the names of other teams' sinks
                known = ", ".join(sinks) if sinks else "none"
                yield (IssueCode.UNPROCESSABLE, f"/notify/{i}",
                       f"notify: {quote(name)} is not a notification sink this user may "
                       f"use (sinks open to this user: {known}; the operator opens a sink "
                       "to users in notifications[].users)")
    rollout = data.get("rollout")
    if isinstance(rollout, Mapping):
        for name, bounds in serving.rollout_bounds.items():
            value = rollout.get(name)
            pointer = f"/rollout/{name}"
            if _number(value) and value not in bounds and pointer not in flagged:
                yield (IssueCode.UNPROCESSABLE, pointer,
                       f"rollout.{name} {value:g} is outside this cluster's bounds "
                       f"({bounds.min:g} to {bounds.max:g}; serving.rollout_bounds.{name})")


def _accelerator_issues(data: Mapping[str, Any], serving: ServingConfig,
                        flagged: set[str]) -> Iterator[Problem]:
    named = data.get("accelerator_type")
    written = data.get("min_compute_capability")
    minimum = capability(written)
    if written is not None and minimum is None and "/min_compute_capability" not in flagged:
        # a YAML number the schema's pattern (strings only) let through: 8.25, .nan
        yield (IssueCode.INVALID, "/min_compute_capability",
               f"{quote(written)} is not a compute capability: major.minor, quoted "
               "(\"8.0\", \"8.9\")")
        return
    named_ok = isinstance(named, str) and "/accelerator_type" not in flagged
    min_ok = minimum is not None and "/min_compute_capability" not in flagged
    if serving.cpu_platform:
        for pointer, ok in (("/accelerator_type", named_ok), ("/min_compute_capability", min_ok)):
            if ok:
                yield (IssueCode.UNPROCESSABLE, pointer, f"this cluster has no GPUs "
                       f"(accelerator_type cpu): {pointer[1:]} must be absent")
        return
    offered = serving.offered_accelerators()
    if named_ok and named not in offered:
        listed = ", ".join(offered) if offered else "none"
        yield (IssueCode.FORBIDDEN, "/accelerator_type",
               f"accelerator_type {quote(named)} is not offered by this cluster (offered: "
               f"{listed}; the operator lists them in serving.accelerator_types)")
        return
    if not min_ok or minimum is None:
        return
    wanted = _text(minimum)
    if named_ok and isinstance(named, str):
        has = capability(serving.accelerator_types.get(named))
        if has is None:
            yield (IssueCode.UNPROCESSABLE, "/min_compute_capability",
                   f"the compute capability of accelerator_type {named} is not known on this "
                   "cluster (serving.accelerator_types does not list it)")
        elif has < minimum:
            yield (IssueCode.UNPROCESSABLE, "/min_compute_capability",
                   f"accelerator_type {named} has compute capability {_text(has)}, below "
                   f"min_compute_capability {wanted}")
        return
    if not fitting(minimum, serving):
        known = ", ".join(f"{t} {_text(c)}" for t, c in _capabilities(serving)) or \
            "none listed in serving.accelerator_types"
        yield (IssueCode.UNPROCESSABLE, "/min_compute_capability",
               f"no GPU type on this cluster has compute capability {wanted} or more "
               f"(offered: {known})")


def fitting(minimum: tuple[int, int], serving: ServingConfig) -> tuple[str, ...]:
    """The offered types whose capability is at least ``minimum``, by name."""
    return tuple(sorted(t for t, c in _capabilities(serving) if c >= minimum))


def spec_fields(data: Mapping[str, Any], serving: ServingConfig) -> dict[str, Any]:
    """The :class:`~servesync.desired.specs.ModelSpec` fields of a valid
    document's knobs, ``gpus_per_replica`` included (``T x P`` under
    ``parallelism``; 0 on a CPU cluster)."""
    out: dict[str, Any] = {}
    gpus_default = 0 if serving.cpu_platform else 1
    par = data.get("parallelism")
    if isinstance(par, Mapping):
        p = Parallelism(tensor=int(par.get("tensor", 1)), pipeline=int(par.get("pipeline", 1)))
        gpus = 0 if serving.cpu_platform else p.workers
        # the shorthand's own meaning is kept as the shorthand: same hash, same version
        out["parallelism"] = None if (p.tensor, p.pipeline) == (max(gpus, 1), 1) else p
        out["gpus_per_replica"] = gpus
    else:
        out["gpus_per_replica"] = int(data.get("gpus_per_replica", gpus_default))
    if "memory_gb_per_replica" in data:
        out["memory_gb_per_replica"] = float(data["memory_gb_per_replica"])
    named = data.get("accelerator_type")
    minimum = capability(data.get("min_compute_capability"))
    if isinstance(named, str):
        out["accelerator_type"] = named
        out["accelerators"] = (named,)
    if minimum is not None:
        out["min_compute_capability"] = _text(minimum)
        if not isinstance(named, str):
            out["accelerators"] = fitting(minimum, serving)
    rollout = data.get("rollout")
    if isinstance(rollout, Mapping):
        surge, unavailable = rollout.get("max_surge_percent"), \
            rollout.get("max_unavailable_percent")
        timeout = rollout.get("deploy_timeout_s")
        out["rollout"] = Rollout(
            max_surge_percent=None if surge is None else int(surge),
            max_unavailable_percent=None if unavailable is None else int(unavailable),
            deploy_timeout_s=None if timeout is None else float(timeout))
    if isinstance(data.get("description"), str):
        out["description"] = data["description"]
    labels = data.get("labels")
    if isinstance(labels, Mapping):
        out["labels"] = {str(k): str(v) for k, v in sorted(labels.items())}
    notify = data.get("notify")
    if isinstance(notify, list):
        out["notify"] = tuple(str(n) for n in notify)
    return out


def _capabilities(serving: ServingConfig) -> list[tuple[str, tuple[int, int]]]:
    return [(t, c) for t, raw in serving.accelerator_types.items()
            if (c := capability(raw)) is not None]


def _text(cap: tuple[int, int]) -> str:
    return f"{cap[0]}.{cap[1]}"


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
