"""Per-user quotas (servesync.desired.quotas): what a model counts, the fit
order, the 422s, and what stays valid or held."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from servesync.config import Config, Quota, Quotas, ServingConfig
from servesync.desired import quotas
from servesync.desired.quotas import Admitted, Usage, usage
from servesync.desired.specs import DesiredState, ModelName, ModelSpec
from servesync.desired.validating import MAX_FILE_ISSUES, validate_tree
from servesync.errors import Issue, IssueCode


def model(model_id: str, *, replicas: int | None = 1, gpus: int | None = 1, extra: str = "",
          ) -> str:
    text = f"model_id: {model_id}\nmodel_source: $HOME/common/hf/tiny\n"
    if replicas is not None:
        text += f"num_replicas: {replicas}\n"
    if gpus is not None:
        text += f"gpus_per_replica: {gpus}\n"
    return text + extra


def config(storage_root: Path, default: Quota | None = None, **users: Quota) -> Config:
    return Config(storage_root=str(storage_root), serving=ServingConfig(
        accelerator_type="gpu", quotas=Quotas(default=default or Quota(), users=users)))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "tree" / "users").mkdir(parents=True)
    return tmp_path / "tree"


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / "users" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def admitted(spec: ModelSpec, at: str, *, running: bool = True) -> Admitted:
    """``spec`` as recorded when it was admitted ``at`` (an ISO time)."""
    return Admitted(name=spec.name, source_file=spec.source_file,
                    order=(at, f"svc-{spec.user_id}-{spec.suffix}"), spec=spec.to_json(),
                    running=running)


def judge(root: Path, cfg: Config, recorded: list[Admitted] | tuple[()] = ()) -> DesiredState:
    return quotas.apply(validate_tree(root, cfg), recorded, cfg.serving.quotas)


def refusals(state: DesiredState) -> list[tuple[str, int, str]]:
    return sorted((i.file, i.line, i.pointer) for i in state.issues()
                  if i.code is IssueCode.UNPROCESSABLE)


def names(state: DesiredState) -> set[str]:
    return {s.suffix for s in state.specs}


def spec_of(state: DesiredState, suffix: str) -> ModelSpec:
    (spec,) = [s for s in state.specs if s.suffix == suffix]
    return spec


# --- what a model counts ------------------------------------------------------------


@pytest.mark.parametrize(("serving", "enabled", "expected"), [
    ({"num_replicas": 2, "gpus_per_replica": 2}, True, Usage(1, 2, 4)),
    ({"num_replicas": None, "autoscaling": {"min_replicas": 1, "max_replicas": 5},
      "gpus_per_replica": 2}, True, Usage(1, 5, 10)),  # autoscaling at max_replicas
    ({"num_replicas": 3, "gpus_per_replica": 0}, True, Usage(1, 3, 0)),  # a CPU model
    ({"num_replicas": 3, "gpus_per_replica": 4}, False, Usage()),  # enabled: false
])
def test_usage(serving: dict[str, object], enabled: bool, expected: Usage) -> None:
    assert usage(serving, enabled=enabled) == expected


def test_without_quotas_the_state_is_returned_unchanged(root: Path, storage_root: Path) -> None:
    write(root, {"alice/a.yaml": model("a", replicas=50, gpus=8)})
    state = validate_tree(root, config(storage_root))
    assert quotas.apply(state, (), Quotas()) is state
    assert quotas.apply(state, (), Quotas(users={"bob": Quota(gpus=1)})) is state


# --- the order ----------------------------------------------------------------------


def test_new_models_fit_in_path_then_document_order_first_fit(
        root: Path, storage_root: Path) -> None:
    write(root, {"alice/a.yaml": model("a", replicas=2),           # 2 GPUs: fits (2 of 4)
                 "alice/b.yaml": model("b", replicas=3),           # 3: only 2 left
                 "alice/c.yaml": model("c", replicas=1) + "---\n"  # 1: fits (3 of 4)
                 + model("c2", replicas=1)})                       # 1: fits (4 of 4)
    state = judge(root, config(storage_root, Quota(gpus=4)))
    assert names(state) == {"a", "c", "c2"}
    (issue,) = state.issues()
    assert issue == Issue(IssueCode.UNPROCESSABLE, "users/alice/b.yaml", 4, "/gpus_per_replica",
                          "over user 'alice''s GPU quota (serving.quotas): asks 3 GPUs "
                          "(3 replicas x 1); 2 of 4 left for it; not deployed")
    assert issue.render().startswith("users/alice/b.yaml:4: 422 /gpus_per_replica: over user")


def test_document_order_within_a_file(root: Path, storage_root: Path) -> None:
    write(root, {"alice/m.yaml": model("z") + "---\n" + model("a")})
    state = judge(root, config(storage_root, Quota(models=1)))
    assert names(state) == {"z"}  # the first document, not the first name
    assert refusals(state) == [("users/alice/m.yaml", 6, "/model_id")]


def test_admitted_models_count_first_a_new_one_never_displaces_them(
        root: Path, storage_root: Path) -> None:
    write(root, {"alice/z.yaml": model("z", replicas=3)})
    cfg = config(storage_root, Quota(gpus=4))
    recorded = [admitted(spec_of(judge(root, cfg), "z"), "2026-01-01T00:00:00+00:00")]
    write(root, {"alice/a.yaml": model("a", replicas=2)})  # sorts first, but is new
    state = judge(root, cfg, recorded)
    assert names(state) == {"z"}
    assert refusals(state) == [("users/alice/a.yaml", 4, "/gpus_per_replica")]
    assert "1 of 4 left" in state.issues()[0].message
    # without the records, path order would have admitted a and refused z
    assert names(judge(root, cfg)) == {"a"}


def test_admitted_models_count_oldest_first_whatever_the_order_given(
        root: Path, storage_root: Path) -> None:
    write(root, {f"alice/{n}.yaml": model(n, replicas=2) for n in "abcd"})
    cfg = config(storage_root, Quota(gpus=10))
    specs = {s.suffix: s for s in validate_tree(root, cfg).specs}
    recorded = [admitted(specs[n], f"2026-01-0{day}T00:00:00+00:00")
                for n, day in zip("dbca", "1234", strict=True)]
    write(root, {f"alice/{n}.yaml": model(n, replicas=3) for n in "abcd"})  # all grow by 1
    verdicts = set()
    for seed in range(5):
        shuffled = list(recorded)
        random.Random(seed).shuffle(shuffled)
        state = judge(root, cfg, shuffled)
        verdicts.add((frozenset(names(state)), tuple(refusals(state))))
    assert len(verdicts) == 1  # stable: the records' admission time decides, not their order
    ((valid, refused),) = verdicts
    # 8 GPUs run; room for two more: d and b, admitted first, grow; c and a are held at 2
    assert valid == {"d", "b"}
    assert [f for f, _, _ in refused] == [f"users/alice/{n}.yaml" for n in "ac"]


def test_verdicts_are_the_same_tick_after_tick(root: Path, storage_root: Path) -> None:
    write(root, {f"alice/m{i}.yaml": model(f"m{i}", replicas=1 + i % 3) for i in range(12)})
    cfg = config(storage_root, Quota(gpus=7, models=5))
    first = judge(root, cfg)
    for _ in range(3):
        again = judge(root, cfg)
        assert again.issues() == first.issues() and names(again) == names(first)


# --- autoscaling, overrides, other users ------------------------------------------------


def test_autoscaling_counts_at_max_replicas(root: Path, storage_root: Path) -> None:
    auto = "autoscaling:\n  min_replicas: 1\n  max_replicas: 3\n"
    write(root, {"alice/a.yaml": model("a", replicas=None, extra=auto)})
    state = judge(root, config(storage_root, Quota(replicas=2)))
    assert refusals(state) == [("users/alice/a.yaml", 6, "/autoscaling/max_replicas")]
    assert "asks 3 replicas (autoscaling max_replicas); 2 of 2 left" in state.issues()[0].message
    assert names(judge(root, config(storage_root, Quota(replicas=3)))) == {"a"}


def test_a_user_override_replaces_the_default_for_that_user_only(
        root: Path, storage_root: Path) -> None:
    write(root, {"alice/a.yaml": model("a", replicas=4), "bob/b.yaml": model("b", replicas=4),
                 "carol/c.yaml": model("c", replicas=4)})
    cfg = config(storage_root, Quota(gpus=2, replicas=8), bob=Quota(gpus=8, replicas=8),
                 carol=Quota(gpus=None, replicas=8))
    state = judge(root, cfg)
    assert names(state) == {"b", "c"}  # bob's quota is higher, carol's GPUs unlimited
    assert [f for f, _, _ in refusals(state)] == ["users/alice/a.yaml"]


def test_other_users_are_unaffected(root: Path, storage_root: Path) -> None:
    write(root, {"alice/a.yaml": model("a", replicas=9),
                 **{f"bob/b{i}.yaml": model(f"b{i}") for i in range(3)}})
    state = judge(root, config(storage_root, Quota(gpus=3)))
    assert names(state) == {"b0", "b1", "b2"}
    assert {i.file for i in state.issues()} == {"users/alice/a.yaml"}


def test_each_exceeded_quota_is_its_own_422_on_its_own_line(
        root: Path, storage_root: Path) -> None:
    write(root, {"alice/a.yaml": model("a"), "alice/b.yaml": model("b", replicas=2, gpus=2)})
    state = judge(root, config(storage_root, Quota(gpus=2, replicas=2, models=1)))
    assert refusals(state) == [("users/alice/b.yaml", 1, "/model_id"),
                               ("users/alice/b.yaml", 3, "/num_replicas"),
                               ("users/alice/b.yaml", 4, "/gpus_per_replica")]
    messages = sorted(i.message for i in state.issues())
    assert messages[0].startswith("over user 'alice''s GPU quota (serving.quotas): asks 4 GPUs "
                                  "(2 replicas x 2); 1 of 2 left")
    assert messages[1].startswith("over user 'alice''s model quota (serving.quotas): asks "
                                  "1 more model; 0 of 1 left")
    assert messages[2].startswith("over user 'alice''s replica quota (serving.quotas): asks "
                                  "2 replicas; 1 of 2 left")


def test_a_disabled_model_takes_nothing(root: Path, storage_root: Path) -> None:
    write(root, {"alice/a.yaml": model("a", replicas=5, extra="enabled: false\n"),
                 "alice/b.yaml": model("b")})
    assert names(judge(root, config(storage_root, Quota(gpus=1, models=1)))) == {"a", "b"}


# --- updates of admitted models -------------------------------------------------------


def test_an_update_within_the_quota_applies_one_over_it_is_held(
        root: Path, storage_root: Path) -> None:
    write(root, {"alice/m.yaml": model("m", replicas=2) + "---\n" + model("n")})
    cfg = config(storage_root, Quota(gpus=4))
    first = judge(root, cfg)
    recorded = [admitted(spec_of(first, "m"), "2026-01-01T00:00:00+00:00"),
                admitted(spec_of(first, "n"), "2026-01-01T00:00:01+00:00")]
    write(root, {"alice/m.yaml": model("m", replicas=3) + "---\n" + model("n")})
    assert names(judge(root, cfg, recorded)) == {"m", "n"}  # 3 + 1 = 4: fits
    write(root, {"alice/m.yaml": model("m", replicas=4) + "---\n" + model("n")})
    state = judge(root, cfg, recorded)
    assert names(state) == {"n"}
    (issue,) = state.issues()
    # n keeps its 1 GPU: 3 of 4 are left for m, which asks 4
    assert issue.line == 4 and "asks 4 GPUs (4 replicas x 1); 3 of 4 left" in issue.message
    assert issue.message.endswith("its last good version keeps serving")
    assert state.holds(("alice", "m"), "users/alice/m.yaml")  # the planner keeps m as it was
    assert not state.held_files  # only m: n, in the same file, still converges


def test_a_lowered_quota_keeps_what_runs_and_refuses_growth_and_new_models(
        root: Path, storage_root: Path) -> None:
    write(root, {"alice/a.yaml": model("a", replicas=2), "alice/b.yaml": model("b", replicas=2)})
    generous = config(storage_root, Quota(gpus=4))
    first = judge(root, generous)
    recorded = [admitted(spec_of(first, "a"), "2026-01-01T00:00:00+00:00"),
                admitted(spec_of(first, "b"), "2026-01-02T00:00:00+00:00")]
    lowered = config(storage_root, Quota(gpus=1))
    assert judge(root, lowered, recorded).ok  # 4 GPUs in use, quota 1: both keep serving
    write(root, {"alice/b.yaml": model("b", replicas=2, extra="engine_kwargs:\n  seed: 1\n"),
                 "alice/a.yaml": model("a", replicas=1),  # scaled down: always allowed
                 "alice/c.yaml": model("c")})  # new: 0 left
    state = judge(root, lowered, recorded)
    assert names(state) == {"a", "b"}
    assert refusals(state) == [("users/alice/c.yaml", 4, "/gpus_per_replica")]
    write(root, {"alice/a.yaml": model("a", replicas=3)})  # growth: refused, a is held
    assert "a" not in names(judge(root, lowered, recorded))


def test_held_models_count_at_their_recorded_spec_deleted_and_stopped_ones_do_not(
        root: Path, storage_root: Path) -> None:
    write(root, {"alice/held.yaml": model("held", replicas=2),
                 "alice/gone.yaml": model("gone", replicas=2),
                 "alice/stopped.yaml": model("stopped", replicas=2)})
    cfg = config(storage_root, Quota(gpus=3))
    first = validate_tree(root, config(storage_root))
    recorded = [admitted(spec_of(first, "held"), "2026-01-01T00:00:00+00:00"),
                admitted(spec_of(first, "gone"), "2026-01-01T00:00:01+00:00"),
                admitted(spec_of(first, "stopped"), "2026-01-01T00:00:02+00:00", running=False)]
    (root / "users/alice/gone.yaml").unlink()  # being deleted: counts nothing
    write(root, {"alice/held.yaml": model("held", replicas=2, extra="typo: 1\n"),  # a 400
                 "alice/new.yaml": model("new", replicas=2)})
    off = model("stopped", replicas=2, extra="enabled: false\n")
    (root / "users/alice/stopped.yaml").write_text(off)
    state = judge(root, cfg, recorded)
    # held keeps 2 running; stopped and gone count nothing: 1 left for new
    assert refusals(state) == [("users/alice/new.yaml", 4, "/gpus_per_replica")]
    assert state.holds(("alice", "held"), "users/alice/held.yaml")  # by its 400
    assert "asks 2 GPUs (2 replicas x 1); 1 of 3 left" in state.issues()[-1].message


def test_a_stopped_model_started_again_must_fit(root: Path, storage_root: Path) -> None:
    write(root, {"alice/a.yaml": model("a", replicas=2), "alice/b.yaml": model("b", replicas=2)})
    cfg = config(storage_root, Quota(gpus=3))
    first = validate_tree(root, config(storage_root))
    recorded = [admitted(spec_of(first, "a"), "2026-01-01T00:00:00+00:00", running=False),
                admitted(spec_of(first, "b"), "2026-01-02T00:00:00+00:00")]
    state = judge(root, cfg, recorded)
    # a was admitted first, but stopped: starting it is an ask; b keeps what it runs
    assert names(state) == {"b"}
    assert state.issues()[0].message.endswith("not deployed")


def test_a_file_shows_at_most_the_usual_number_of_issues(root: Path, storage_root: Path) -> None:
    write(root, {"alice/many.yaml": "---\n".join(model(f"m{i}") for i in range(30))})
    state = judge(root, config(storage_root, Quota(models=0)))
    (f,) = state.files
    assert len(f.all_issues()) == MAX_FILE_ISSUES + 1  # and one "and N more"
    assert f.all_issues()[-1].message.startswith("and 10 more issues in this file")
    assert not state.specs and all(d.quota_refused for d in f.documents)
    held: set[ModelName] = state.held_names
    assert held == {("alice", f"m{i}") for i in range(30)}


def test_room_freed_by_a_scale_down_counts_in_the_same_commit(
        root: Path, storage_root: Path) -> None:
    write(root, {"alice/a.yaml": model("a", replicas=1), "alice/b.yaml": model("b", replicas=2)})
    cfg = config(storage_root, Quota(replicas=3))
    first = judge(root, cfg)
    recorded = [admitted(spec_of(first, "a"), "2026-01-01T00:00:00+00:00"),
                admitted(spec_of(first, "b"), "2026-01-02T00:00:00+00:00")]
    # a (counted first) grows by 1 while b (counted after it) gives 1 back: 3 of 3
    write(root, {"alice/a.yaml": model("a", replicas=2), "alice/b.yaml": model("b", replicas=1)})
    assert judge(root, cfg, recorded).ok
    write(root, {"alice/a.yaml": model("a", replicas=3)})  # 2 more than it runs: 1 left
    state = judge(root, cfg, recorded)
    assert names(state) == {"b"}
    assert "asks 3 replicas; 2 of 3 left for it" in state.issues()[0].message



def test_parallelism_counts_tensor_times_pipeline_gpus(root: Path, storage_root: Path) -> None:
    """A replica of parallelism {tensor: 2, pipeline: 2} takes 4 GPUs: over a
    quota of 3, the 422 points at the parallelism field's line."""
    write(root, {"alice/big.yaml": model("big", gpus=None,
                                         extra="parallelism:\n  tensor: 2\n  pipeline: 2\n"),
                 "alice/small.yaml": model("small", gpus=None,
                                           extra="parallelism:\n  tensor: 3\n")})
    state = judge(root, config(storage_root, Quota(gpus=3)))
    assert refusals(state) == [("users/alice/big.yaml", 4, "/parallelism")]
    assert names(state) == {"small"}


# --- a model changing shape (plain <-> versions) ------------------------------------


def versions(model_id: str, *, gpus: int, names: str = "ab") -> str:
    """``model_id`` as versions of 1 replica x ``gpus`` each, weights summing to 100."""
    weights = [100 // len(names)] * len(names)
    weights[0] += 100 - sum(weights)
    text = f"model_id: {model_id}\nnum_replicas: 1\ngpus_per_replica: {gpus}\nversions:\n"
    return text + "".join(f"- name: {n}\n  model_source: $HOME/common/hf/tiny\n  weight: {w}\n"
                          for n, w in zip(names, weights, strict=True))


def test_turning_a_plain_model_into_versions_counts_the_plain_one_until_it_is_deleted(
        root: Path, storage_root: Path) -> None:
    """The planner keeps the old plain record serving until a version serves:
    it counts, so a reshape cannot double the quota (the reviewer's probe:
    4 GPUs of 4 as plain, then two versions of 2 GPUs each)."""
    cfg = config(storage_root, Quota(gpus=4))
    write(root, {"alice/m.yaml": model("m", replicas=1, gpus=4)})
    plain = admitted(spec_of(judge(root, cfg), "m"), "2026-01-01T00:00:00+00:00")
    write(root, {"alice/m.yaml": versions("m", gpus=2)})
    state = judge(root, cfg, [plain])
    assert names(state) == set()
    assert refusals(state) == [("users/alice/m.yaml", 3, "/gpus_per_replica")]
    assert state.issues()[-1].message.endswith(
        "asks 2 GPUs (1 replica x 2); 0 of 4 left for it (version b; 'm' in its old shape "
        "serves, and counts, until the new one does); not deployed")
    assert state.holds(plain.name, plain.source_file)  # so the plain one keeps serving
    # versions that fit beside it are admitted (a plain m of 2 GPUs, versions of 1)
    write(root, {"alice/m.yaml": model("m", replicas=1, gpus=2)})
    small = admitted(spec_of(judge(root, cfg), "m"), "2026-01-01T00:00:00+00:00")
    write(root, {"alice/m.yaml": versions("m", gpus=1)})
    assert names(judge(root, cfg, [small])) == {"m@a", "m@b"}
    # once it is deleted (or stopped) it counts nothing
    write(root, {"alice/m.yaml": versions("m", gpus=2)})
    assert names(judge(root, cfg, [replace(plain, running=False)])) == {"m@a", "m@b"}


def test_turning_versions_into_a_plain_model_counts_the_versions_until_deleted(
        root: Path, storage_root: Path) -> None:
    cfg = config(storage_root, Quota(gpus=4))
    write(root, {"alice/m.yaml": versions("m", gpus=2)})
    recorded = [admitted(s, f"2026-01-01T00:00:0{i}+00:00")
                for i, s in enumerate(judge(root, cfg).specs)]
    write(root, {"alice/m.yaml": model("m", replicas=1, gpus=4)})
    state = judge(root, cfg, recorded)
    assert names(state) == set()
    assert refusals(state) == [("users/alice/m.yaml", 4, "/gpus_per_replica")]
    # one version already deleted: 2 GPUs still run, 2 left
    write(root, {"alice/m.yaml": model("m", replicas=1, gpus=2)})
    assert names(judge(root, cfg, [recorded[0], replace(recorded[1], running=False)])) == {"m"}
    assert names(judge(root, cfg, recorded)) == set()


def test_a_removed_version_is_no_reshape_and_another_users_model_is_not_counted(
        root: Path, storage_root: Path) -> None:
    """Only the other shape of the same user's model_id keeps counting: a version
    dropped from a model that keeps versions does not, nor does alice's deleted
    plain ``m`` when bob declares his own ``m`` as versions."""
    cfg = config(storage_root, Quota(gpus=4))
    write(root, {"alice/m.yaml": model("m", gpus=4), "carol/v.yaml": versions("v", gpus=2)})
    recorded = [admitted(s, f"2026-01-01T00:00:0{i}+00:00")
                for i, s in enumerate(judge(root, cfg).specs)]
    (root / "users/alice/m.yaml").unlink()
    write(root, {"alice/n.yaml": model("n", gpus=4), "bob/m.yaml": versions("m", gpus=2),
                 "carol/v.yaml": versions("v", gpus=2, names="ac")})
    state = judge(root, cfg, recorded)
    assert names(state) == {"n", "m@a", "m@b", "v@a", "v@c"} and state.ok
