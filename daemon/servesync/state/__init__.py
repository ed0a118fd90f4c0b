"""state: what servesync recorded, kept safe on disk.

Owns the store (one JSON file, one record per model, kept in memory), atomic writes (temp file,
fsync, rename), the single-writer lock and the notifications' outbox. May import: ``converge`` (the
record types), ``config``, ``errors``.
"""
