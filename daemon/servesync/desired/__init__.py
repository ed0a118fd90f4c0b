"""desired: where the desired state comes from, and whether it is valid.

Owns the sources (a directory, or a git branch's committed tip, with its
signature keyring), the watcher that wakes a tick, loading YAML with a line
map, the model-source path rules, the engine_kwargs/env allow-lists,
validation, and the frozen specs it yields. May import: ``config``,
``errors``, ``schemas``. Never ``converge`` or anything above it
(docs/ARCHITECTURE.md, "Layers and their contracts").
"""
