"""Issue 10's knobs in model files (servesync.desired.knobs through validate_tree):
every error class of every new field, as tables, with file, line and field in
the message; what valid documents become; and that a refused edit keeps the
last good version serving."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from servesync.config import Bounds, Config, RolloutBounds, ServingConfig
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import State
from servesync.desired.sources import Snapshot
from servesync.desired.specs import DesiredState, Parallelism, Rollout
from servesync.desired.validating import validate_tree
from servesync.errors import IssueCode
from servesync.state.store import Store
from servesync.status.publishing import StatusFiles
from tests.support.fakeray import FakeRay
from tests.unit.converge import plancases

HEAD = "model_id: m\nmodel_source: $HOME/common/hf/org/m\n"
E400, E403 = IssueCode.INVALID, IssueCode.FORBIDDEN
E422 = IssueCode.UNPROCESSABLE
TYPES = {"H20": "9.0", "A100-80G": "8.0", "L40S": "8.9"}
GPU_CLUSTER = ServingConfig(accelerator_type="H20", accelerator_types=TYPES,
                            max_memory_gb_per_replica=256)
CPU_CLUSTER = ServingConfig(accelerator_type="cpu")
PLAIN_GPU = ServingConfig(accelerator_type="gpu")


def _validate(tmp_path: Path, text: str, serving: ServingConfig = GPU_CLUSTER,
              rel: str = "users/alice/m.yaml") -> DesiredState:
    root = tmp_path / "tree"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text, encoding="utf-8")
    return validate_tree(root, Config(storage_root=str(tmp_path / "private"), serving=serving))


# (id, lines after HEAD, cluster, class, pointer, words the message must hold)
REFUSED = [
    # memory_gb_per_replica
    ("memory zero", "memory_gb_per_replica: 0", GPU_CLUSTER, E422, "/memory_gb_per_replica",
     "0"),
    ("memory negative", "memory_gb_per_replica: -4", GPU_CLUSTER, E422,
     "/memory_gb_per_replica", "-4"),
    ("memory above the cluster's limit", "memory_gb_per_replica: 512", GPU_CLUSTER, E422,
     "/memory_gb_per_replica", "serving.max_memory_gb_per_replica"),
    ("memory beyond any cluster (no cap set)", "memory_gb_per_replica: 1.0e+300", PLAIN_GPU,
     E422, "/memory_gb_per_replica", "1048576"),
    ("memory not a number", "memory_gb_per_replica: lots", GPU_CLUSTER, E400,
     "/memory_gb_per_replica", "number"),
    # accelerator_type
    ("type not offered", "accelerator_type: B200", GPU_CLUSTER, E403, "/accelerator_type",
     "not offered"),
    ("type on a cluster that lists none", "accelerator_type: H100", PLAIN_GPU, E403,
     "/accelerator_type", "offered: none"),
    ("type on a CPU cluster", "accelerator_type: H20", CPU_CLUSTER, E422, "/accelerator_type",
     "no GPUs"),
    ("type badly spelled", "accelerator_type: 'H 20'", GPU_CLUSTER, E400,
     "/accelerator_type", "does not match"),
    ("type not a string", "accelerator_type: [H20]", GPU_CLUSTER, E400, "/accelerator_type",
     "string"),
    # min_compute_capability
    ("no type satisfies it", "min_compute_capability: '9.5'", GPU_CLUSTER, E422,
     "/min_compute_capability", "9.5 or more"),
    ("no type satisfies it (a number)", "min_compute_capability: 10.0", GPU_CLUSTER, E422,
     "/min_compute_capability", "10.0 or more"),
    ("capability on a cluster that lists none", "min_compute_capability: '7.0'", PLAIN_GPU,
     E422, "/min_compute_capability", "none listed"),
    ("capability on a CPU cluster", "min_compute_capability: '8.0'", CPU_CLUSTER, E422,
     "/min_compute_capability", "no GPUs"),
    ("the named type is below it", "accelerator_type: A100-80G\nmin_compute_capability: '8.9'",
     GPU_CLUSTER, E422, "/min_compute_capability", "A100-80G has compute capability 8.0"),
    ("capability malformed", "min_compute_capability: 'eight'", GPU_CLUSTER, E400,
     "/min_compute_capability", "does not match"),
    ("capability of three parts", "min_compute_capability: '8.0.1'", GPU_CLUSTER, E400,
     "/min_compute_capability", "does not match"),
    ("capability a number of three decimals", "min_compute_capability: 8.125", GPU_CLUSTER,
     E400, "/min_compute_capability", "8.125 is not a compute capability"),
    ("capability not a number", "min_compute_capability: .nan", GPU_CLUSTER,
     E400, "/min_compute_capability", "NaN"),
    ("capability a list", "min_compute_capability: [8, 0]", GPU_CLUSTER,
     E400, "/min_compute_capability", "got a list"),
    # parallelism
    ("both spellings", "gpus_per_replica: 2\nparallelism: {tensor: 2}", GPU_CLUSTER, E400,
     "/gpus_per_replica", "exclude each other"),
    ("tensor zero", "parallelism: {tensor: 0}", GPU_CLUSTER, E422, "/parallelism/tensor", "0"),
    ("pipeline too big", "parallelism: {pipeline: 65}", GPU_CLUSTER, E422,
     "/parallelism/pipeline", "65"),
    ("unknown parallelism key", "parallelism: {data: 2}", GPU_CLUSTER, E400,
     "/parallelism/data", "unknown field"),
    ("empty parallelism", "parallelism: {}", GPU_CLUSTER, E400, "/parallelism", "few"),
    ("pipeline not an integer", "parallelism: {pipeline: 1.5}", GPU_CLUSTER, E400,
     "/parallelism/pipeline", "integer"),
    # rollout
    ("surge above Ray's 100", "rollout: {max_surge_percent: 150}", GPU_CLUSTER, E422,
     "/rollout/max_surge_percent", "150"),
    ("unavailable zero", "rollout: {max_unavailable_percent: 0}", GPU_CLUSTER, E422,
     "/rollout/max_unavailable_percent", "0"),
    ("deadline above the cluster's bound", "rollout: {deploy_timeout_s: 7200}", GPU_CLUSTER,
     E422, "/rollout/deploy_timeout_s", "serving.rollout_bounds.deploy_timeout_s"),
    ("deadline below the cluster's bound", "rollout: {deploy_timeout_s: 5}", GPU_CLUSTER,
     E422, "/rollout/deploy_timeout_s", "60 to 3600"),
    ("surge above the cluster's bound", "rollout: {max_surge_percent: 50}",
     replace(GPU_CLUSTER, rollout_bounds=RolloutBounds(max_surge_percent=Bounds(0, 25))),
     E422, "/rollout/max_surge_percent", "0 to 25"),
    ("unknown rollout key", "rollout: {max_unavailable: 20}", GPU_CLUSTER, E400,
     "/rollout/max_unavailable", "did you mean 'max_unavailable_percent'"),
    ("deadline not a number", "rollout: {deploy_timeout_s: soon}", GPU_CLUSTER, E400,
     "/rollout/deploy_timeout_s", "number"),
    # description, labels
    ("description too long", f"description: {'x' * 201}", GPU_CLUSTER, E400, "/description",
     "too long"),
    ("description not a string", "description: {a: b}", GPU_CLUSTER, E400, "/description",
     "string"),
    ("label name with a space", "labels: {'my team': search}", GPU_CLUSTER, E400,
     "/labels/my team", "Kubernetes label syntax"),
    ("label name too long", f"labels: {{{'a' * 64}: x}}", GPU_CLUSTER, E400,
     f"/labels/{'a' * 64}", "Kubernetes label syntax"),
    ("label prefix not a DNS subdomain", "labels: {'Example.com/team': x}", GPU_CLUSTER, E400,
     "/labels/Example.com~1team", "label name"),
    ("label value with a slash", "labels: {team: 'a/b'}", GPU_CLUSTER, E400, "/labels/team",
     "label value"),
    ("label value ends with a dash", "labels: {team: search-}", GPU_CLUSTER, E400,
     "/labels/team", "label value"),
    ("label value a number", "labels: {version: 2}", GPU_CLUSTER, E400, "/labels/version",
     "string"),
    ("labels a list", "labels: [a, b]", GPU_CLUSTER, E400, "/labels", "object"),
]


@pytest.mark.parametrize(("extra", "serving", "code", "pointer", "words"),
                         [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_each_knob_is_refused_with_its_class_file_line_and_field(
        tmp_path: Path, extra: str, serving: ServingConfig, code: IssueCode, pointer: str,
        words: str) -> None:
    text = HEAD + "num_replicas: 1\n" + extra + "\n"
    state = _validate(tmp_path, text, serving)
    assert state.specs == ()
    [issue] = state.issues()
    assert (issue.code, issue.pointer) == (code, pointer)
    field = pointer.split("/")[1]
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith(field))
    rendered = issue.render()
    assert rendered.startswith(f"users/alice/m.yaml:{line}: {int(code)} {pointer}: ")
    assert words in issue.message


# (id, lines after HEAD, cluster, ModelSpec fields)
ACCEPTED = [
    ("nothing new: as before", "", GPU_CLUSTER,
     {"gpus_per_replica": 1, "parallelism": None, "memory_gb_per_replica": None,
      "accelerators": (), "rollout": Rollout(), "description": None, "labels": {}}),
    ("memory at the limit", "memory_gb_per_replica: 256", GPU_CLUSTER,
     {"memory_gb_per_replica": 256.0}),
    ("memory with no cluster limit", "memory_gb_per_replica: 4096", PLAIN_GPU,
     {"memory_gb_per_replica": 4096.0}),
    ("memory on CPU", "memory_gb_per_replica: 0.5", CPU_CLUSTER,
     {"memory_gb_per_replica": 0.5}),
    ("a named type", "accelerator_type: L40S", GPU_CLUSTER,
     {"accelerator_type": "L40S", "accelerators": ("L40S",)}),
    ("the cluster's default type, not listed", "accelerator_type: H100",
     ServingConfig(accelerator_type="H100"), {"accelerators": ("H100",)}),
    ("capability: one type fits", "min_compute_capability: '9.0'", GPU_CLUSTER,
     {"min_compute_capability": "9.0", "accelerators": ("H20",)}),
    ("capability: several fit, by name", "min_compute_capability: 8.9", GPU_CLUSTER,
     {"min_compute_capability": "8.9", "accelerators": ("H20", "L40S")}),
    ("capability as an integer", "min_compute_capability: 8", GPU_CLUSTER,
     {"min_compute_capability": "8.0", "accelerators": ("A100-80G", "H20", "L40S")}),
    ("a named type meets the capability", "accelerator_type: H20\nmin_compute_capability: '8.0'",
     GPU_CLUSTER, {"accelerators": ("H20",), "min_compute_capability": "8.0"}),
    ("T x P", "parallelism: {tensor: 4, pipeline: 2}", GPU_CLUSTER,
     {"gpus_per_replica": 8, "parallelism": Parallelism(4, 2), "tensor_parallel": 4,
      "pipeline_parallel": 2}),
    ("tensor alone is the shorthand", "parallelism: {tensor: 2}", GPU_CLUSTER,
     {"gpus_per_replica": 2, "parallelism": None, "tensor_parallel": 2}),
    ("pipeline on CPU", "parallelism: {pipeline: 2}", CPU_CLUSTER,
     {"gpus_per_replica": 0, "parallelism": Parallelism(1, 2), "pipeline_parallel": 2}),
    ("rollout", "rollout: {max_surge_percent: 0, max_unavailable_percent: 50, "
     "deploy_timeout_s: 1800}", GPU_CLUSTER,
     {"rollout": Rollout(0, 50, 1800.0), "deploy_timeout_s": 1800.0}),
    ("description and labels", "description: chat for team search\n"
     "labels: {team: search, example.com/tier: prod, empty: ''}", GPU_CLUSTER,
     {"description": "chat for team search",
      "labels": {"empty": "", "example.com/tier": "prod", "team": "search"}}),
]


@pytest.mark.parametrize(("extra", "serving", "fields"), [c[1:] for c in ACCEPTED],
                         ids=[c[0] for c in ACCEPTED])
def test_valid_knobs_become_the_spec(tmp_path: Path, extra: str, serving: ServingConfig,
                                     fields: dict[str, object]) -> None:
    state = _validate(tmp_path, HEAD + extra + "\n", serving)
    assert state.issues() == ()
    [spec] = state.specs
    assert {k: getattr(spec, k) for k in fields} == fields


def test_the_shorthand_and_tensor_parallelism_are_the_same_spec(tmp_path: Path) -> None:
    [a] = _validate(tmp_path, HEAD + "gpus_per_replica: 2\n").specs
    [b] = _validate(tmp_path, HEAD + "parallelism: {tensor: 2, pipeline: 1}\n").specs
    assert a.spec_hash() == b.spec_hash()


def test_a_changed_cluster_type_list_changes_the_resolved_spec(tmp_path: Path) -> None:
    """A new GPU type that satisfies the capability reaches the model: its spec
    hash changes, so the planner redeploys it."""
    doc = HEAD + "min_compute_capability: '8.9'\n"
    [before] = _validate(tmp_path, doc).specs
    more = replace(GPU_CLUSTER, accelerator_types={**TYPES, "H100": "9.0"})
    [after] = _validate(tmp_path, doc, more).specs
    assert after.accelerators == ("H100", "H20", "L40S")
    assert after.spec_hash() != before.spec_hash()


def test_a_refused_knob_keeps_the_last_good_version_serving(tmp_path: Path) -> None:
    """A tick with the model RUNNING, then a commit asking for a GPU type the
    cluster does not offer (403) and more memory than allowed (422): the model
    keeps running its last good spec, untouched, and the status says why."""
    root = tmp_path / "desired"
    model = root / "users" / "alice" / "m.yaml"
    model.parent.mkdir(parents=True)
    model.write_text(HEAD + "accelerator_type: L40S\nmemory_gb_per_replica: 64\n"
                     "description: first\n")
    config = Config(state_dir=str(tmp_path / "state"), status_dir=str(tmp_path / "status"),
                    storage_root=str(tmp_path / "private"), serving=GPU_CLUSTER)
    Path(config.state_dir).mkdir()
    ray, times = FakeRay(), iter(range(5, 5000, 5))
    rec = Reconciler(config, store=Store(Path(config.state_dir)), applier=ray,
                     clock=lambda: plancases.at(next(times)),
                     publisher=StatusFiles(Path(config.status_dir), config.serving))
    for revision in ("r1", "r1", "r1", "r1"):
        rec.tick(Snapshot(root=root, revision=revision, error=None, watch_paths=()))
        ray.settle()
    [running] = rec.store.models().values()
    assert running.state is State.RUNNING
    deploys = len(ray.calls)

    model.write_text(HEAD + "accelerator_type: B200\nmemory_gb_per_replica: 512\n"
                     "description: second\n")
    for _ in range(3):
        result = rec.tick(Snapshot(root=root, revision="r2", error=None, watch_paths=()))
        ray.settle()
    [held] = rec.store.models().values()
    assert held == running  # not even its description: the whole file is held
    assert len(ray.calls) == deploys
    assert result.errors == (
        "users/alice/m.yaml:3: 403 /accelerator_type: accelerator_type 'B200' is not offered "
        "by this cluster (offered: H20, A100-80G, L40S; the operator lists them in "
        "serving.accelerator_types)",
        "users/alice/m.yaml:4: 422 /memory_gb_per_replica: memory_gb_per_replica 512 is above "
        "this cluster's limit of 256 GiB per replica (serving.max_memory_gb_per_replica)")
    index = json.loads((Path(config.status_dir) / "index.json").read_text())
    assert [(m["state"], m["description"]) for m in index["models"]] == [("RUNNING", "first")]
    assert [(e["code"], e["line"], e["pointer"]) for e in index["errors"]] == [
        (403, 3, "/accelerator_type"), (422, 4, "/memory_gb_per_replica")]
    rec.store.close()
