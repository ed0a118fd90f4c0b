"""Issue 11 part 4 end to end: a model file with ``lora`` serves the adapters
found in a real S3-compatible server on loopback (moto in server mode, a
subprocess on 127.0.0.1), each called as ``<model>:<adapter>`` with the real
``openai`` client and listed on ``/v1/models``; an adapter uploaded later is
listed and answers with no commit and no replica restart.

Real files → Reconciler → real Ray Serve LLM + vLLM (CPU) on the session's
in-process Ray, which was started with the storage's endpoint and dummy
credentials in its environment (tests/e2e/conftest.py, ``S3_ENV``), as an
operator's Ray nodes are. One model load. Run under
``flock /tmp/servesync-ray.lock``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from openai import OpenAI

from servesync import tinymodel
from servesync.config import Config, LoraOffer
from servesync.converge.records import State
from servesync.rayserve.applier import RayApplier
from tests.e2e.clients import ask, listed, model_yaml
from tests.e2e.conftest import S3_ENV, S3_PORT, TIMINGS
from tests.e2e.test_knobs_e2e import Cluster
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

BUCKET = "adapters"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """moto's S3 server on 127.0.0.1:S3_PORT, and a boto3 client to it."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(S3_PORT)],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        client = boto3.client("s3", endpoint_url=S3_ENV["AWS_ENDPOINT_URL"],
                              aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                              region_name=S3_ENV["AWS_DEFAULT_REGION"])

        def up() -> bool:
            try:
                client.list_buckets()
                return True
            except Exception:
                return proc.poll() is not None  # died: fail below, not wait

        wait_for("moto S3 server up", up, deadline_s=30, poll_s=0.2)
        assert proc.poll() is None, log.read_text()
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def generate(client: OpenAI, model: str) -> tuple[str, int]:
    """The answer's ``model`` and how many tokens the engine generated for it
    (a random adapter's tokens may decode to nothing printable, so the count,
    not the text, says the engine answered)."""
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8,
        temperature=0)
    assert reply.usage is not None
    return reply.model, reply.usage.completion_tokens


def upload(client: object, folder: Path, key_prefix: str) -> None:
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), BUCKET, f"{key_prefix}/{path.name}")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def cluster(applier: RayApplier, e2e_config: Config, tiny_model: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    base = tmp_path_factory.mktemp("lora")
    storage = base / "private"
    shutil.copytree(tiny_model, storage / "hf" / "tiny")
    serving = replace(e2e_config.serving, lora=LoraOffer(prefix="s3://adapters/{user_id}/"))
    config = replace(e2e_config, storage_root=str(storage), state_dir=str(base / "state"),
                     status_dir=str(base / "status"), serving=serving)
    Path(config.state_dir).mkdir()
    return Cluster(config, applier, base / "desired")


def test_lora_adapters_from_s3_are_listed_and_answer_without_a_restart(
        cluster: Cluster, applier: RayApplier, e2e_config: Config, s3: object,
        tmp_path: Path) -> None:
    client = OpenAI(base_url=e2e_config.serving.base_url, api_key="x", timeout=60.0,
                    max_retries=0)
    upload(s3, tinymodel.generate_lora(tmp_path / "greet", seed=1), "alice/tiny/greet")
    cluster.write("tiny", model_yaml("tiny") + "aliases: [tiny]\n"
                  "lora: {path: \"s3://adapters/alice/tiny/\", max_adapters_per_replica: 2}\n")
    cluster.until("lora: model with enable_lora RUNNING",
                  lambda: cluster.model("tiny").state is State.RUNNING)
    rec = cluster.model("tiny")
    doc = cluster.status("tiny")
    assert doc["lora"] == {"path": "s3://adapters/alice/tiny", "max_adapters_per_replica": 2,
                           "call_as": f"{rec.public_id}:<adapter>"}
    adapter = f"{rec.public_id}:greet"

    # --- Ray lists the adapter found in storage; the base model answers ----------------
    wait_for("lora: the adapter listed", lambda: adapter in listed(client), deadline_s=60)
    assert ask(client, rec.public_id).strip()
    replicas = applier.replica_actor_ids(rec.app_name)

    # --- <model>:<adapter> answers (downloaded from S3 by the replica) ------------------
    start = time.monotonic()
    assert generate(client, adapter) == (adapter, 8)  # vLLM answers as the adapter
    TIMINGS["lora: first adapter request (download + load)"] = \
        f"{time.monotonic() - start:.1f} s"
    # through an alias too: <user>-<alias>:<adapter> goes to the same adapter
    assert generate(client, "alice-tiny:greet") == (adapter, 8)

    # --- an adapter uploaded now: listed and answering, no commit, no restart ----------
    upload(s3, tinymodel.generate_lora(tmp_path / "shout", seed=2), "alice/tiny/shout")
    later = f"{rec.public_id}:shout"
    wait_for("lora: the new adapter listed", lambda: later in listed(client), deadline_s=60)
    assert generate(client, later) == (later, 8)
    assert applier.replica_actor_ids(rec.app_name) == replicas
    cluster.tick()
    assert cluster.model("tiny").state is State.RUNNING

    # --- leave the session's Ray as found ------------------------------------------------
    (cluster.root / "users" / "alice" / "tiny.yaml").unlink()
    cluster.until("lora: deleted", lambda: not cluster.reconciler.store.models())
