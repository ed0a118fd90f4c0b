"""What the e2e tests do as users: OpenAI calls, request loops, model files.

Shared by the e2e tests; talks to the gateway over HTTP only (no Ray). They
wait with tests/support/waiting.py's ``wait_for``, every ``POLL_S``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from openai import OpenAI

POLL_S = 1.0  # how often the e2e tests look again (real Ray, real HTTP)
MODEL_YAML = """\
model_id: {suffix}
model_source: $HOME/common/hf/tiny
num_replicas: {replicas}
cpus_per_replica: 1
engine_kwargs:
  max_model_len: {max_len}
"""


def model_yaml(suffix: str, *, replicas: int | str = 1, max_len: int = 256) -> str:
    """A model file for the tiny model at ``<storage_root>/hf/tiny``."""
    return MODEL_YAML.format(suffix=suffix, replicas=replicas, max_len=max_len)


def listed(client: OpenAI) -> set[str]:
    try:
        return {m.id for m in client.models.list().data}
    except Exception:  # the gateway is (re)starting
        return set()


def ask(client: OpenAI, model: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def ask_counting_retries(client: OpenAI, model: str) -> tuple[str, int]:
    """:func:`ask`, and how many times the client retried it (its ``max_retries``:
    the ``openai`` default, 2, retries a 5xx, a 408/409/429 and a broken connection)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8,
        temperature=0,
    )
    return raw.parse().choices[0].message.content or "", raw.retries_taken


@dataclass
class Loop:
    """Requests to one model, back to back, on a thread, until stopped.

    ``retried`` counts the requests that succeeded only after the client retried
    them (always 0 with ``max_retries=0``)."""

    client: OpenAI
    model: str
    ok: int = 0
    retried: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                answer, retries = ask_counting_retries(self.client, self.model)
                if answer:
                    self.ok += 1
                    self.retried += retries > 0
                else:
                    self.failures.append("empty answer")
            except Exception as e:  # every failure counts, whatever it is
                self.failures.append(f"{type(e).__name__}: {e}")

    def stop(self) -> None:
        self._stop.set()

    def summary(self) -> str:
        retried = f" ({self.retried} after a client retry)" if self.retried else ""
        return f"{self.ok} ok{retried}, {len(self.failures)} failed"


@contextmanager
def requests_to(client: OpenAI, model: str) -> Iterator[Loop]:
    """Loop requests to ``model`` on a thread for the duration of the block."""
    loop = Loop(client, model)
    thread = threading.Thread(target=loop.run, name=f"requests-to-{model}")
    thread.start()
    try:
        yield loop
    finally:
        loop.stop()
        thread.join(timeout=60)
