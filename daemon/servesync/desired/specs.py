"""Desired-state types: what one valid ServingModel document asks for.

Pure data, frozen. Built only by :mod:`servesync.desired.validating` from documents
that passed every check; read by planning (to diff), applying (to build the
Ray Serve LLM config) and publishing (to show the user what was asked).
No I/O here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from servesync.desired.schedules import Schedule
from servesync.errors import Issue

ModelName = tuple[str, str]
"""(user_id, model_id suffix): the identity of a model. Same pair = same model (upsert)."""


@dataclass(frozen=True, slots=True)
class Autoscaling:
    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float
    idle_timeout_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }
        if self.idle_timeout_s is not None:
            out["idle_timeout_s"] = self.idle_timeout_s
        return out


@dataclass(frozen=True, slots=True)
class Parallelism:
    """How one replica is split: ``tensor`` GPUs (workers) per pipeline stage,
    ``pipeline`` stages; a replica has ``tensor * pipeline`` workers."""

    tensor: int = 1
    pipeline: int = 1

    @property
    def workers(self) -> int:
        return self.tensor * self.pipeline

    def to_json(self) -> dict[str, int]:
        return {"tensor": self.tensor, "pipeline": self.pipeline}


@dataclass(frozen=True, slots=True)
class Rollout:
    """A model's own rollout settings; None: the cluster's default."""

    max_surge_percent: int | None = None
    max_unavailable_percent: int | None = None
    deploy_timeout_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("max_surge_percent", self.max_surge_percent),
                                  ("max_unavailable_percent", self.max_unavailable_percent),
                                  ("deploy_timeout_s", self.deploy_timeout_s))
                if v is not None}

    def serve_options(self) -> dict[str, Any]:
        """The fields Ray Serve applies (lightweight: no replica restarts)."""
        out = self.to_json()
        out.pop("deploy_timeout_s", None)
        return out


@dataclass(frozen=True, slots=True)
class Lora:
    """A model's LoRA adapters: the object-storage folder holding them (each
    subfolder one adapter, called ``<public id>:<subfolder>``) and how many one
    replica keeps loaded."""

    path: str  # no trailing '/'
    max_adapters_per_replica: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "max_adapters_per_replica": self.max_adapters_per_replica}


METADATA_FIELDS = ("description", "labels", "deploy_timeout_s", "notify", "schedule")
"""Fields of :meth:`ModelSpec.to_json` that never reach Ray: changing them is
recorded, nothing is submitted (``schedule`` is the planner's: it decides
when the model runs, never what runs)."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One valid, resolved model document.

    ``model_source`` is as written; ``resolved_source`` is the absolute path
    after macro expansion, or the hub repo id unchanged.
    """

    user_id: str
    suffix: str
    model_source: str
    resolved_source: str
    num_replicas: int | None  # None when autoscaling is set
    autoscaling: Autoscaling | None
    gpus_per_replica: int  # 0 on a cpu platform
    cpus_per_replica: float
    engine_kwargs: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    aliases: tuple[str, ...] = ()  # extra names, as written; clients call <user_id>-<alias>
    source_file: str = ""  # relative to the desired-state root
    line: int = 1  # line of the document's first key
    # lines of the fields a cross-document check (quotas) names: JSON pointer -> line
    field_lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    # ... and, for a version, where each is written when not at its own pointer
    field_pointers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # Issue 10's knobs; each left out of serving_json() when unset, so a file
    # without them hashes (and deploys) exactly as before they existed.
    parallelism: Parallelism | None = None  # None: tensor = GPUs per replica, pipeline 1
    memory_gb_per_replica: float | None = None  # host memory Ray reserves (GiB)
    accelerator_type: str | None = None  # as written
    min_compute_capability: str | None = None  # "8.0", as normalised
    # The GPU types the replica may run on, resolved against the cluster's list
    # (one: asked by name; several: any of them; none: the cluster's default)
    accelerators: tuple[str, ...] = ()
    rollout: Rollout = Rollout()
    description: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    notify: tuple[str, ...] = ()  # notification sink names (the config's notifications)
    schedule: Schedule | None = None  # when it must not run (desired/schedules.py)
    lora: Lora | None = None  # issue 11: LoRA adapters from object storage
    # Weighted versions (issue 11): a document with ``versions`` is one spec whose
    # ``versions`` are the full specs of each (suffix ``<model_id>@<name>``, own record
    # and Serve application); a version spec has its ``version`` name and ``weight``.
    versions: tuple[ModelSpec, ...] = ()
    version: str | None = None
    weight: int | None = None
    _hash: str = field(default="", init=False, repr=False, compare=False)  # spec_hash, once
    _metadata: dict[str, Any] | None = field(default=None, init=False, repr=False,
                                             compare=False)  # metadata_json, once

    @property
    def name(self) -> ModelName:
        return (self.user_id, self.suffix)

    @property
    def model_id(self) -> str:
        """The ``model_id`` as written (a version's suffix without ``@<version>``)."""
        return base_suffix(self.suffix)

    def expanded(self) -> tuple[ModelSpec, ...]:
        """What runs: each version's own spec, or this spec when it has none."""
        return self.versions or (self,)

    @property
    def tensor_parallel(self) -> int:
        return self.parallelism.tensor if self.parallelism else max(self.gpus_per_replica, 1)

    @property
    def pipeline_parallel(self) -> int:
        return self.parallelism.pipeline if self.parallelism else 1

    @property
    def deploy_timeout_s(self) -> float | None:
        """This model's deploy deadline, or None for the cluster's."""
        return self.rollout.deploy_timeout_s

    def serving_json(self) -> dict[str, Any]:
        """The fields that decide what runs in Ray (not where it was written, nor
        the :data:`METADATA_FIELDS`). Issue 10's fields appear only when set."""
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "model_id": self.suffix,
            "model_source": self.resolved_source,
            "num_replicas": self.num_replicas,
            "autoscaling": self.autoscaling.to_json() if self.autoscaling else None,
            "gpus_per_replica": self.gpus_per_replica,
            "cpus_per_replica": self.cpus_per_replica,
            "engine_kwargs": dict(self.engine_kwargs),
            "env": dict(self.env),
        }
        optional = (("parallelism", self.parallelism.to_json() if self.parallelism else None),
                    ("memory_gb_per_replica", self.memory_gb_per_replica),
                    ("accelerator_type", self.accelerator_type),
                    ("min_compute_capability", self.min_compute_capability),
                    ("accelerators", list(self.accelerators) or None),
                    ("rollout", self.rollout.serve_options() or None),
                    ("lora", self.lora.to_json() if self.lora else None))
        out.update((k, v) for k, v in optional if v is not None)
        return out

    def metadata_json(self) -> Mapping[str, Any]:
        """The :data:`METADATA_FIELDS` that are set: shown and recorded, never sent to Ray.
        Worked out once (a spec is frozen; the planner asks for it up to three
        times a tick): read-only, callers copy what they keep."""
        if self._metadata is None:
            object.__setattr__(self, "_metadata", self._metadata_json())
        assert self._metadata is not None
        return self._metadata

    def _metadata_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.description is not None:
            out["description"] = self.description
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.rollout.deploy_timeout_s is not None:
            out["deploy_timeout_s"] = self.rollout.deploy_timeout_s
        if self.notify:
            out["notify"] = list(self.notify)
        if self.schedule is not None:
            out["schedule"] = self.schedule.to_json()
        return out

    def version_json(self) -> dict[str, Any]:
        """A version's name and asked weight (recorded, never sent to Ray:
        the weight lives in the gateway's routes); empty for a plain model."""
        if self.version is None:
            return {}
        return {"version": self.version, "weight": self.weight}

    def pointer_of(self, pointer: str) -> str:
        """Where ``pointer`` (one of :data:`LINED_FIELDS`) is written: a
        version's own field is under ``/versions/<i>``."""
        return self.field_pointers.get(pointer, pointer)

    def line_of(self, pointer: str) -> int:
        """The line of ``pointer`` as written (kept for :data:`LINED_FIELDS`),
        else the document's first line."""
        return self.field_lines.get(pointer, self.line)

    def spec_hash(self) -> str:
        """Stable hash of :meth:`serving_json`; equal hashes mean nothing to redeploy.

        ``enabled`` is not part of it: stopping and starting a model is a state
        change, not a new spec. Nor are ``aliases``: they live in the gateway's
        routes, never in a replica, so changing them restarts nothing.
        """
        if not self._hash:  # a spec is frozen: its hash is worked out once (the planner
            # asks every tick, and a validation cache hands it the same specs)
            blob = json.dumps(self.serving_json(), sort_keys=True, separators=(",", ":"))
            object.__setattr__(self, "_hash", hashlib.sha256(blob.encode()).hexdigest()[:16])
        return self._hash

    def to_json(self) -> dict[str, Any]:
        out = self.serving_json()
        out.update(self.metadata_json())
        out["model_source_written"] = self.model_source
        out["enabled"] = self.enabled
        out["aliases"] = list(self.aliases)
        out["source_file"] = self.source_file
        out["line"] = self.line
        out.update(self.version_json())
        return out


VERSION_SEPARATOR = "@"
"""Between a model_id and a version name in a version's suffix and record key
(``model_id`` never holds it)."""


def base_suffix(suffix: str) -> str:
    """A suffix without its ``@<version>``: the ``model_id`` clients call."""
    return suffix.split(VERSION_SEPARATOR, 1)[0]


def version_of(suffix: str) -> str | None:
    """The version name in a suffix, or None for a plain model."""
    _, sep, version = suffix.partition(VERSION_SEPARATOR)
    return version if sep else None


LINED_FIELDS = ("/model_id", "/num_replicas", "/autoscaling/max_replicas", "/gpus_per_replica",
                "/parallelism")
"""The fields whose lines a :class:`ModelSpec` keeps (``field_lines``): those a
quota refusal points at."""


def replica_gpus(serving: Mapping[str, Any]) -> int:
    """GPUs one replica of a model takes, from its serving JSON
    (:meth:`ModelSpec.serving_json`, or a record's ``spec``, which holds it).

    The one place that says how many: quotas count a model's GPUs as this x
    its replicas. ``gpus_per_replica``, which the spec sets to tensor x
    pipeline when the file gives ``parallelism``."""
    return int(serving.get("gpus_per_replica") or 0)


@dataclass(frozen=True, slots=True)
class DocumentResult:
    """One YAML document of a file: its spec if valid, else its issues.

    ``quota_refused``: the document was valid, but its model does not fit its
    user's quota (:mod:`servesync.desired.quotas`); its issues say why. Its
    name is known, so only that model is held, not the whole file."""

    index: int  # 0-based position in the file
    line: int
    model_id: str | None  # the suffix as written, when readable
    issues: tuple[Issue, ...] = ()
    spec: ModelSpec | None = None
    quota_refused: bool = False

    @property
    def ok(self) -> bool:
        return not self.issues and self.spec is not None


@dataclass(frozen=True, slots=True)
class FileResult:
    """One file of the tree: file-level issues (parse, location) and its documents.

    Or, with ``folder`` True, a folder that could not be read (permissions,
    nested too deep, a name that is not UTF-8): its path ends in ``/`` and
    what it holds is unknown."""

    path: str  # relative to the root, '/'-separated
    user_id: str | None  # from users/<user_id>/, when the path has one
    issues: tuple[Issue, ...] = ()
    documents: tuple[DocumentResult, ...] = ()
    folder: bool = False

    @property
    def ok(self) -> bool:
        return not self.issues and all(d.ok for d in self.documents)

    @property
    def holds_all(self) -> bool:
        """Must every model recorded from this file stay as it is? Yes when the
        file has an error whose model cannot be named for sure (a file-level
        issue, or an invalid document: its model_id may be the error). A
        document refused only by a quota names its model: that one is held
        (``DesiredState.held_names``), the file's others are not."""
        return bool(self.issues) or any(not d.ok and not d.quota_refused
                                        for d in self.documents)

    def all_issues(self) -> tuple[Issue, ...]:
        return self.issues + tuple(i for d in self.documents for i in d.issues)


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Everything one read of the desired-state tree yields.

    ``specs`` holds only valid models. :meth:`holds` tells the planner what it
    must leave as it is (last-known-good): a model whose recorded source file
    has errors (``held_files``), lies under a folder that could not be read
    (``held_folders``), or whose name appears in an invalid document
    (``held_names``), is neither changed nor deleted.

    ``revoked`` overrides that hold: models whose ``model_source`` no longer
    passes the path rules, with why. The planner stops them (as for
    ``enabled: false``) until the source passes again. Built only by
    :mod:`servesync.desired.validating`: a document refused only by a 403 on
    its ``model_source``, or a held model whose recorded source now fails.
    """

    revision: str | None
    files: tuple[FileResult, ...]
    revoked: Mapping[ModelName, str] = field(default_factory=dict)
    _holds: tuple[frozenset[str], frozenset[ModelName], tuple[str, ...]] | None = field(
        default=None, init=False, repr=False, compare=False)  # for holds(), worked out once

    @property
    def specs(self) -> tuple[ModelSpec, ...]:
        """The valid models, a document with ``versions`` as one spec per version."""
        return tuple(s for f in self.files for d in f.documents if d.ok and d.spec
                     for s in d.spec.expanded())

    @property
    def held_files(self) -> frozenset[str]:
        return frozenset(f.path for f in self.files if f.holds_all)

    @property
    def held_names(self) -> frozenset[ModelName]:
        return frozenset(
            (f.user_id, d.model_id)
            for f in self.files
            for d in f.documents
            if not d.ok and f.user_id is not None and d.model_id is not None
        )

    @property
    def held_folders(self) -> frozenset[str]:
        """Paths, ending in ``/``, of the folders that could not be read."""
        return frozenset(f.path for f in self.files if f.folder)

    def holds(self, name: ModelName, source_file: str) -> bool:
        """Must the recorded model ``name``, declared in ``source_file``, stay as it is?

        The held sets are worked out at the first call, not at every one: the
        planner asks once per recorded model."""
        if self._holds is None:
            object.__setattr__(self, "_holds", (self.held_files, self.held_names,
                                                tuple(self.held_folders)))
        assert self._holds is not None
        files, names, folders = self._holds
        name = (name[0], base_suffix(name[1]))  # a version is held with its document
        return (source_file in files or name in names
                or any(source_file.startswith(folder) for folder in folders))

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    def issues(self) -> tuple[Issue, ...]:
        return tuple(i for f in self.files for i in f.all_issues())
