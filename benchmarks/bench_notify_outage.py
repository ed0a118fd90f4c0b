"""Benchmark: a webhook receiver down for N seconds (the issue's 30 s) gets
every notification afterwards, in order, exactly one POST per id.

Run: ``.venv/bin/python benchmarks/bench_notify_outage.py [--outage-s 30] [--count 50]``.
A real :class:`servesync.status.notifying.Notifier` with its outbox in a temp
state dir, one sink at a real ``http.server`` receiver on 127.0.0.1 (the test
helper tests/support/webhook.py) that is down for ``--outage-s`` while
``--count`` transitions are queued (spread over the outage), then comes back.
Halfway through the outage the notifier is stopped and a new one is built on
the same state dir (a daemon restart). Prints the attempts that failed, the
seconds from the receiver's return to the last delivery, and checks order and
uniqueness; exit 1 on any miss, reordering or duplicate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.webhook import Receiver
from tests.unit.converge.plancases import record, spec

from servesync.config import Config, NotificationSink
from servesync.converge.ports import Transition
from servesync.converge.records import State
from servesync.state.outbox import Outbox
from servesync.status.notifying import Notifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--max-backoff-s", type=float, default=4.0)
    args = parser.parse_args()
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        secret = Path(tmp) / "secret"
        secret.write_bytes(b"bench-key")
        config = Config(notifications=(NotificationSink(
            name="bench", url=receiver.url, events=("RUNNING", "FAILED"),
            secret_file=str(secret), timeout_s=2.0, max_backoff_s=args.max_backoff_s,
            users=("*",)),))
        state = Path(tmp) / "state"
        state.mkdir()
        notifier = Notifier(config, Outbox(state))
        notifier.start()
        failed = 0
        sent: list[int] = []
        started = time.monotonic()
        for i in range(args.count):
            rec = record(spec(f"m{i % 7}", notify=("bench",)),
                         State.RUNNING if i % 3 else State.FAILED)
            notifier.enqueue([Transition(record=rec, old=State.DEPLOYING, tick=i,
                                         revision="r")])
            sent.append(i)
            if i == args.count // 2:  # a daemon restart halfway through the outage
                notifier.stop()
                failed += notifier.stats["bench"].failed
                notifier = Notifier(config, Outbox(state))
                notifier.start()
            time.sleep(args.outage_s / args.count)
        time.sleep(max(0.0, args.outage_s - (time.monotonic() - started)))
        receiver.start()
        back = time.monotonic()
        while Outbox(state).pending() and time.monotonic() - back < 120:
            time.sleep(0.05)
        drained = time.monotonic() - back
        time.sleep(2.0)  # a duplicate would arrive now
        notifier.stop()
        receiver.stop()
        failed += notifier.stats["bench"].failed
    got = [r.json["tick"] for r in receiver.received]
    ids = [r.delivery for r in receiver.received]
    signed = all(r.signed_with(b"bench-key") for r in receiver.received)
    print(f"outage {args.outage_s:g} s, {args.count} notifications, one restart mid-outage")
    print(f"failed attempts during the outage: {failed}")
    print(f"all delivered {drained:.2f} s after the receiver came back")
    print(f"received {len(got)}, distinct ids {len(set(ids))}, in order: {got == sent}, "
          f"signed: {signed}")
    ok = got == sent and len(set(ids)) == len(ids) == args.count and signed
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
