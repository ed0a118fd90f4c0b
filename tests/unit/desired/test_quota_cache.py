"""The quota pass's cache (servesync.desired.quotas.QuotaCache): the verdicts
are exactly the uncached pass's, whatever changes between passes, and a pass
whose inputs did not change counts nobody."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servesync.config import Quota, Quotas
from servesync.desired import quotas
from servesync.desired.quotas import Admitted, QuotaCache
from servesync.desired.specs import DesiredState, ModelName
from servesync.desired.validating import ValidationCache, validate_tree
from tests.unit.desired.test_quotas import admitted, config, model, refusals, versions, write


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "tree" / "users").mkdir(parents=True)
    return tmp_path / "tree"


USERS = ("alice", "bob")
QUOTAS = (
    Quotas(default=Quota(gpus=4)),
    Quotas(default=Quota(gpus=2, replicas=3)),
    Quotas(default=Quota(models=1)),
    Quotas(default=Quota(gpus=3), users={"bob": Quota(gpus=None, models=2)}),
    Quotas(users={"alice": Quota(replicas=2)}),
    Quotas(),  # no quota: the pass is skipped
)

TEXTS = st.one_of(
    st.none(),  # the file is deleted
    st.builds(lambda mid, replicas, gpus, enabled, pad: model(
        mid, replicas=replicas, gpus=gpus,
        extra=("# moved\n" * pad) + ("" if enabled else "enabled: false\n")),
        st.sampled_from("mn"), st.integers(1, 3), st.integers(0, 2), st.booleans(),
        st.integers(0, 2)),
    st.builds(lambda gpus, names: versions("m", gpus=gpus, names=names),
              st.integers(1, 2), st.sampled_from(["ab", "ac", "a"])),
    st.builds(lambda pad: "\n" * pad + model("m", replicas=2, gpus=1) + "---\n" +
              model("n", replicas=1, gpus=2), st.integers(0, 1)),  # two documents
    st.just("model_id: m\nnum_replicas: [\n"),  # malformed: its records are held
    st.just(model("n", replicas=-1)),  # a schema error
    st.just("model_id: m\nmodel_source: /etc\nnum_replicas: 1\n"),  # a 403: revoked
)

STEPS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.sampled_from(USERS), st.sampled_from("ab"), TEXTS),
    st.tuples(st.just("admit")),  # every valid model not yet recorded is recorded
    st.tuples(st.just("deploy"), st.integers(0, 9)),  # a record takes its current spec
    st.tuples(st.just("running"), st.integers(0, 9), st.booleans()),
    st.tuples(st.just("forget"), st.integers(0, 9)),
    st.tuples(st.just("copies")),  # equal records, not the same objects (a new reader)
    st.tuples(st.just("revoke"), st.integers(0, 9)),  # recheck_held revokes (or no longer)
    st.tuples(st.just("quota"), st.sampled_from(QUOTAS)),
    st.tuples(st.just("idle")),
), min_size=1, max_size=14)


def same(cached: DesiredState, plain: DesiredState, desired: DesiredState) -> None:
    """The cached pass's result is the uncached one's, to every line of every issue."""
    assert cached == plain
    assert [i.render() for i in cached.issues()] == [i.render() for i in plain.issues()]
    assert (cached is desired) == (plain is desired)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_the_cached_pass_gives_the_uncached_verdicts(steps: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "private" / "hf" / "tiny").mkdir(parents=True)
        tree = base / "tree"
        (tree / "users").mkdir(parents=True)
        cfg = config(base / "private", Quota(gpus=2))
        validation, cache = ValidationCache(), QuotaCache()
        records: list[Admitted] = []
        revoked: set[ModelName] = set()  # as recheck_held would, e.g. a swapped folder
        clock = 0
        for step in steps:
            desired = validate_tree(tree, cfg, cache=validation)
            if step[0] == "write":
                _, user, name, text = step
                path = tree / "users" / str(user) / f"{name}.yaml"
                path.parent.mkdir(exist_ok=True)
                if text is None:
                    path.unlink(missing_ok=True)
                else:
                    path.write_text(str(text))
            elif step[0] == "admit":
                known = {a.name for a in records}
                for spec in desired.specs:
                    if spec.name not in known:
                        clock += 1
                        records.append(admitted(spec, f"2026-01-01T00:00:{clock:02d}+00:00"))
            elif step[0] in ("deploy", "running", "forget") and records:
                i = int(str(step[1])) % len(records)
                if step[0] == "forget":
                    del records[i]
                elif step[0] == "running":
                    records[i] = replace(records[i], running=bool(step[2]))
                else:
                    now = {s.name: s for s in desired.specs}.get(records[i].name)
                    if now is not None:
                        records[i] = replace(records[i], spec=now.to_json(),
                                             source_file=now.source_file)
            elif step[0] == "revoke" and records:
                revoked ^= {records[int(str(step[1])) % len(records)].name}
            elif step[0] == "copies":
                records = [replace(a) for a in records]
            elif step[0] == "quota":
                assert isinstance(step[1], Quotas)
                cfg = replace(cfg, serving=replace(cfg.serving, quotas=step[1]))
            desired = validate_tree(tree, cfg, cache=validation)
            if revoked:
                desired = replace(desired, revoked={**desired.revoked,
                                                    **dict.fromkeys(revoked, "revoked")})
            for _ in range(2):  # the changed pass, then an idle one
                got = quotas.apply(desired, records, cfg.serving.quotas, cache=cache)
                same(got, quotas.apply(desired, records, cfg.serving.quotas), desired)


def test_an_idle_pass_counts_nobody_and_a_change_only_its_user(
        root: Path, storage_root: Path) -> None:
    cfg = config(storage_root, Quota(gpus=2))
    write(root, {"alice/a.yaml": model("a", gpus=1), "alice/b.yaml": model("b", gpus=2),
                 "bob/c.yaml": model("c", gpus=1)})
    validation, cache = ValidationCache(), QuotaCache()
    first = quotas.apply(validate_tree(root, cfg, cache=validation), (), cfg.serving.quotas,
                         cache=cache)
    assert refusals(first) == [("users/alice/b.yaml", 4, "/gpus_per_replica")]
    assert cache.counted == 2  # alice and bob
    again = quotas.apply(validate_tree(root, cfg, cache=validation), (), cfg.serving.quotas,
                         cache=cache)
    assert cache.counted == 2 and refusals(again) == refusals(first)
    write(root, {"bob/c.yaml": model("c", gpus=2)})
    bob = quotas.apply(validate_tree(root, cfg, cache=validation), (), cfg.serving.quotas,
                       cache=cache)
    assert cache.counted == 3  # bob only
    assert refusals(bob) == refusals(first)


def test_a_changed_quota_config_is_seen(root: Path, storage_root: Path) -> None:
    write(root, {"alice/a.yaml": model("a", gpus=1), "alice/b.yaml": model("b", gpus=1)})
    cache = QuotaCache()
    desired = validate_tree(root, config(storage_root, Quota(gpus=2)))
    assert refusals(quotas.apply(desired, (), Quotas(default=Quota(gpus=2)), cache=cache)) == []
    lowered = Quotas(default=Quota(gpus=1))
    assert refusals(quotas.apply(desired, (), lowered, cache=cache)) == [
        ("users/alice/b.yaml", 4, "/gpus_per_replica")]
    by_user = Quotas(default=Quota(gpus=1), users={"alice": Quota(gpus=2)})
    assert refusals(quotas.apply(desired, (), by_user, cache=cache)) == []


def test_a_changed_record_state_is_seen(root: Path, storage_root: Path) -> None:
    """The same records but for one that is stopped, then running again: the
    room it frees and takes back is counted."""
    cfg = config(storage_root, Quota(gpus=2))
    write(root, {"alice/a.yaml": model("a", gpus=2)})
    a = admitted(validate_tree(root, cfg).specs[0], "2026-01-01T00:00:00+00:00")
    write(root, {"alice/a.yaml": model("a", gpus=2, extra="enabled: false\n"),
                 "alice/b.yaml": model("b", gpus=2)})
    validation, cache = ValidationCache(), QuotaCache()
    desired = validate_tree(root, cfg, cache=validation)
    # a disabled in its file but not yet stopped: its recorded version still counts
    # (lesser of recorded and new: nothing), so b fits
    stopped = replace(a, running=False)
    assert refusals(quotas.apply(desired, [stopped], cfg.serving.quotas, cache=cache)) == []
    write(root, {"alice/a.yaml": "model_id: a\nnum_replicas: [\n"})  # held: counts as recorded
    desired = validate_tree(root, cfg, cache=validation)
    assert refusals(quotas.apply(desired, [stopped], cfg.serving.quotas, cache=cache)) == []
    assert refusals(quotas.apply(desired, [a], cfg.serving.quotas, cache=cache)) == [
        ("users/alice/b.yaml", 4, "/gpus_per_replica")]


def test_a_moved_field_line_is_seen(root: Path, storage_root: Path) -> None:
    """A comment above the field the 422 names moves its line and changes no
    spec's ``==``: the refusal names the new line, not last pass's."""
    cfg = config(storage_root, Quota(gpus=1))
    write(root, {"alice/a.yaml": model("a", gpus=2)})
    validation, cache = ValidationCache(), QuotaCache()
    before = quotas.apply(validate_tree(root, cfg, cache=validation), (), cfg.serving.quotas,
                          cache=cache)
    assert refusals(before) == [("users/alice/a.yaml", 4, "/gpus_per_replica")]
    write(root, {"alice/a.yaml": model("a", gpus=None, extra="# two\n# lines\n"
                                       "gpus_per_replica: 2\n")})
    after = quotas.apply(validate_tree(root, cfg, cache=validation), (), cfg.serving.quotas,
                         cache=cache)
    assert refusals(after) == [("users/alice/a.yaml", 6, "/gpus_per_replica")]


def test_a_changed_revocation_is_seen(root: Path, storage_root: Path) -> None:
    """A held model counts its recorded version until it is revoked
    (``recheck_held``: the files are the same, only ``revoked`` changed)."""
    cfg = config(storage_root, Quota(gpus=2))
    write(root, {"alice/a.yaml": model("a", gpus=2)})
    a = admitted(validate_tree(root, cfg).specs[0], "2026-01-01T00:00:00+00:00")
    write(root, {"alice/a.yaml": "model_id: a\nnum_replicas: [\n",
                 "alice/b.yaml": model("b", gpus=2)})
    cache = QuotaCache()
    desired = validate_tree(root, cfg, cache=ValidationCache())
    assert refusals(quotas.apply(desired, [a], cfg.serving.quotas, cache=cache)) == [
        ("users/alice/b.yaml", 4, "/gpus_per_replica")]
    revoked = replace(desired, revoked={a.name: "model_source swapped"})
    assert refusals(quotas.apply(revoked, [a], cfg.serving.quotas, cache=cache)) == []
