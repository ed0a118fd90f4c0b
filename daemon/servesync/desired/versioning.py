"""Weighted versions of one model (issue 11): the document-level rules. Pure.

A document may give ``versions`` instead of ``model_source``. Each version is
checked as the document it stands for: the model-level fields, overridden by
the version's own (:data:`OVERRIDES` plus its ``model_source``), so every
path, allow-list and knob rule of a plain model applies to it unchanged
(:func:`merged`). An issue found in that merged view names the field where
it is written (:class:`VersionView`: ``/versions/<i>/...`` when the version
sets it, else the model-level one). The list itself has two rules of its own
(:func:`list_issues`): names unique (409, both places) and weights summing to
100 (422, with the sum, on the ``versions`` line); and ``lora`` is refused on
a model with versions (422: the gateway cannot yet route ``<model>:<adapter>``
by version weight). docs/ARCHITECTURE.md,
"Weighted versions".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from servesync.desired.loading import RawDocument
from servesync.errors import Issue, IssueCode
from servesync.redaction import quote

OVERRIDES = ("model_source", "num_replicas", "autoscaling", "gpus_per_replica",
             "cpus_per_replica", "memory_gb_per_replica", "parallelism", "accelerator_type",
             "min_compute_capability", "engine_kwargs", "env")
"""The fields a version may set for itself; the model-level value is its default."""

TOTAL_WEIGHT = 100


def versions(data: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The document's ``versions`` when it is a list of mappings, else None."""
    found = data.get("versions")
    if isinstance(found, list) and all(isinstance(v, dict) for v in found):
        return found
    return None


def merged(data: Mapping[str, Any], version: Mapping[str, Any]) -> dict[str, Any]:
    """The document a version stands for: the model's fields, without
    ``versions``, with the version's own on top. ``num_replicas`` and
    ``autoscaling`` go together (one replaces the other), as do
    ``gpus_per_replica`` and ``parallelism``."""
    out = {k: v for k, v in data.items() if k != "versions"}
    for one, other in (("num_replicas", "autoscaling"), ("gpus_per_replica", "parallelism")):
        if one in version:
            out.pop(other, None)
        if other in version:
            out.pop(one, None)
    out.update((k, v) for k, v in version.items() if k in OVERRIDES)
    return out


def model_source(data: Mapping[str, Any], version: Mapping[str, Any]) -> object:
    """``merged(data, version).get("model_source")`` without building the
    merged document: a validation cache hit asks it of every version, every tick."""
    return version["model_source"] if "model_source" in version else data.get("model_source")


@dataclass(frozen=True, slots=True)
class VersionView:
    """Lines and pointers of version ``index`` of ``doc``: a field the version
    sets is found under ``/versions/<index>``, any other at the model level."""

    doc: RawDocument
    index: int
    keys: frozenset[str]

    @property
    def line(self) -> int:
        return self.doc.line

    def pointer(self, pointer: str) -> str:
        """Where a merged-view ``pointer`` is written in the document."""
        top = pointer.split("/")[1] if pointer.count("/") >= 1 and pointer else ""
        return f"/versions/{self.index}{pointer}" if top in self.keys else pointer

    def line_of(self, pointer: str) -> int:
        return self.doc.line_of(self.pointer(pointer))

    def relocate(self, issue: Issue) -> Issue:
        """``issue``, found in the merged view, pointing where the field is written."""
        where = self.pointer(issue.pointer)
        if where == issue.pointer:
            return issue
        return replace(issue, pointer=where, line=self.doc.line_of(where))

    def local(self, flagged: set[str]) -> set[str]:
        """The document's flagged pointers as the merged view names them."""
        prefix = f"/versions/{self.index}"
        out = {p for p in flagged if not p.startswith("/versions")}
        out |= {p[len(prefix):] for p in flagged if p.startswith(prefix + "/")}
        return out


def list_issues(data: Mapping[str, Any], doc: RawDocument, rel: str) -> Iterator[Issue]:
    """Both-or-neither of ``model_source`` and ``versions`` (400), ``lora``
    with ``versions`` (422: not supported yet), duplicate version names (409
    at each), weights not summing to 100 (422)."""
    has_source, has_versions = "model_source" in data, "versions" in data
    if has_source and has_versions:
        yield Issue(IssueCode.INVALID, rel, doc.line_of("/versions"), "/versions",
                    "give either model_source or versions, not both")
    if not has_source and not has_versions:
        yield Issue(IssueCode.INVALID, rel, doc.line, "/model_source",
                    "model_source is required (or versions, for several weighted versions)")
    if has_versions and "lora" in data:  # the gateway routes <model>:<adapter> by name only
        yield Issue(IssueCode.UNPROCESSABLE, rel, doc.line_of("/lora"), "/lora",
                    "lora is not supported on a model with versions")
    found = versions(data)
    if found is None:
        return
    places: dict[str, list[int]] = {}
    for i, v in enumerate(found):
        if isinstance(v.get("name"), str):
            places.setdefault(v["name"], []).append(i)
    for name, where in places.items():
        if len(where) < 2:
            continue
        lines = {i: doc.line_of(f"/versions/{i}/name") for i in where}
        for i in where:
            others = ", ".join(f"{rel}:{lines[j]}" for j in where if j != i)
            yield Issue(IssueCode.CONFLICT, rel, lines[i], f"/versions/{i}/name",
                        f"version name {quote(name)} is also used at {others}: "
                        "version names are unique in a model")
    weights = [v.get("weight") for v in found]
    if all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= TOTAL_WEIGHT
           for w in weights):  # a weight out of range is the schema's 422 already
        total = sum(int(w) for w in weights if isinstance(w, int))
        if total != TOTAL_WEIGHT:
            listed = " + ".join(str(w) for w in weights)
            yield Issue(IssueCode.UNPROCESSABLE, rel, doc.line_of("/versions"), "/versions",
                        f"the weights of the versions sum to {total} ({listed}), "
                        f"not {TOTAL_WEIGHT}")
