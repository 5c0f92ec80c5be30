"""The SuperLink's audit log: `state/audit.jsonl`, one JSON object per line, append-only.

Two writers append to it: the gateway (nginx `log_format ... escape=json`, see
nginx.conf.template: refusals, Control API calls, node joins and departures) and fedllm
(`source: fedllm`: registry changes, runs, rejected updates). Both append whole lines with
O_APPEND, so entries never interleave, and a restart only adds to the file.
"""

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.jsonl"
# Set by `fedllm superlink` for its Flower processes: the ServerApp appends here.
AUDIT_ENV = "FEDLLM_AUDIT_LOG"


def now() -> str:
    """UTC time as the gateway writes it ($time_iso8601)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def append(path: Path, event: str, **fields: Any) -> None:
    """Append one fedllm event (one line, one write) to the audit log at `path`."""
    entry = {"time": now(), "source": "fedllm", "event": event, **fields}
    line = (json.dumps(entry, default=str) + "\n").encode()
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(handle, line)
    finally:
        os.close(handle)


def append_from_env(event: str, **fields: Any) -> None:
    """Append to the audit log `fedllm superlink` named in the environment, if any."""
    path = os.environ.get(AUDIT_ENV)
    if path:
        append(Path(path), event, **fields)


def read(path: Path) -> list[dict[str, Any]]:
    """Every entry of the audit log; a line that is not JSON is kept as `unreadable`."""
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entries.append(dict(json.loads(line)))
        except (ValueError, TypeError):
            entries.append({"event": "unreadable", "line": line[:200]})
    return entries


class Tail:
    """New complete lines of a growing file since the last call (restarts on truncation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def lines(self) -> list[str]:
        """Complete lines appended since the last call."""
        if not self.path.exists():
            return []
        if self.path.stat().st_size < self.offset:  # rotated or truncated
            self.offset = 0
        with self.path.open("rb") as source:
            source.seek(self.offset)
            data = source.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete.decode(errors="replace").splitlines()
