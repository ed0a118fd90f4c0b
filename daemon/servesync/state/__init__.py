"""state: what servesync recorded, kept safe on disk.

Owns the store (tinydb, one record per model), atomic writes (temp file,
fsync, rename) and the single-writer lock. May import: ``converge`` (the
record types), ``config``, ``errors``.
"""
