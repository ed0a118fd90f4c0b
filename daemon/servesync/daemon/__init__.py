"""daemon: the long-running ``servesync run`` around the tick.

Owns the loop (when to tick: watcher, interval, poll, the tick's own
requeue; signals; the lock), sd_notify, and logging set-up. May import
everything below it (``desired``, ``converge``, ``state``, ``config``);
it gets the tick itself from the CLI as a factory, never from ``rayserve``.
"""
