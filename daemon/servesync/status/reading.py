"""Reading the status files back: ``servesync status`` and its table.

Called by the CLI. Reads ``index.json`` under the status dir; writes nothing.
The table is scrubbed (:func:`servesync.redaction.scrub`) once more, in case
the files were written by an older servesync.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from servesync.errors import ServesyncError
from servesync.redaction import scrub
from servesync.status.publishing import INDEX_FILE


class StatusFileError(ServesyncError):
    """The status files are missing or unreadable (``servesync status``)."""


def load_index(status_dir: Path) -> dict[str, Any]:
    """The last published ``index.json``; StatusFileError if absent or unreadable."""
    path = Path(status_dir) / INDEX_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError as e:
        raise StatusFileError(f"{path}: no status yet (has servesync run a tick?)") from e
    except (OSError, ValueError) as e:
        raise StatusFileError(f"{path}: unreadable status file: {e}") from e
    if not isinstance(data, dict):
        raise StatusFileError(f"{path}: not a status index")
    return data


def render_table(status_dir: Path) -> str:
    """A human table of the published status, for ``servesync status``."""
    index = load_index(status_dir)
    committed = index.get("revision_committed_at")
    lines = [
        f"tick {index.get('tick')}  revision {short(index.get('revision')) or '-'}"
        + (f" (committed {committed})" if committed else "")
        + f"  at {index.get('generated_at')}  {index.get('openai_base_url')}"
    ]
    if index.get("source_error"):
        lines.append(f"source error: {index['source_error']}")
    if not index.get("ray_reachable", True):
        lines.append("ray: not reachable this tick (states may be stale)")
    rows = [("ID", "STATE", "REPLICAS", "REVISION", "ERROR")]
    rows += [_row(m) for m in index.get("models", [])]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[4]]
        lines.append("  ".join(cells).rstrip())
    if len(rows) == 1:
        lines.append("(no models)")
    errors = index.get("errors", [])
    if errors:
        lines.append(f"{len(errors)} desired-state error(s):")
        lines += [f"  {e['path']}:{e['line']}: {e['code']} {e['pointer'] or '/'}: "
                  f"{e['message']}" for e in errors]
    return scrub("\n".join(lines)) + "\n"


def _row(m: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    applied, attempted = short(m.get("applied_revision")), short(m.get("attempted_revision"))
    if applied and attempted and applied != attempted:
        rev = f"{applied}->{attempted}"
    else:
        rev = applied or attempted or "-"
    error = " ".join(str(m.get("error_summary") or "").split())
    if len(error) > 80:
        error = error[:77] + "..."
    return (str(m.get("model_id")), str(m.get("state")), str(m.get("num_replicas")), rev,
            error or "-")


def short(revision: object) -> str:
    """A revision as shown to humans: the first 7 characters of a SHA."""
    return str(revision)[:7] if revision else ""
