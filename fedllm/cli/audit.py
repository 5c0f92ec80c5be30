"""What a person reads of the audit log: one row per entry, with the action and its outcome."""

import datetime as dt
from typing import Any

from rich.table import Table

# Gateway refusals by status, when no more specific reason applies.
REFUSALS = {
    400: "refused: no valid certificate (untrusted, expired, revoked or none)",
    401: "refused by Flower: node authentication (signature, time window or node id)",
    403: "refused: wrong role or path",
}


def action(entry: dict[str, Any]) -> str:
    """The entry's action: a fedllm event, or the API call the gateway saw."""
    if entry.get("source") != "gateway":
        return str(entry.get("event", "?"))
    uri = str(entry.get("uri", "")).split("?")[0]
    return uri.removeprefix("/v1/").replace("/", ":") or "?"


def outcome(entry: dict[str, Any]) -> str:
    """`ok`, or why the request was refused."""
    if entry.get("source") != "gateway":
        return str(entry.get("reason", "ok"))
    status = int(entry.get("status") or 0)
    if status < 400:
        return "ok"
    verify = str(entry.get("verify", ""))
    if status == 400 and verify not in ("", "SUCCESS"):
        return f"refused: certificate {verify}"
    fleet = str(entry.get("uri", "")).startswith("/v1/fleet/")
    if status == 403 and fleet and entry.get("role") == "supernode":
        return "refused: node key not registered for this certificate"
    return REFUSALS.get(status, f"refused: HTTP {status}")


def who(entry: dict[str, Any]) -> str:
    """The certificate subject (gateway) or the node an event is about (fedllm)."""
    return str(entry.get("subject") or entry.get("node") or "")


def selected(entry: dict[str, Any], since: dt.datetime | None, node: str | None) -> bool:
    """Whether the entry is at or after `since` and concerns `node` (its CN or node name)."""
    if since is not None:
        try:
            when = dt.datetime.fromisoformat(str(entry.get("time")))
        except ValueError:
            return False
        if when < since:
            return False
    if node is not None:
        names = {str(entry.get("node", ""))} | {
            part.removeprefix("CN=") for part in who(entry).split(",") if part.startswith("CN=")
        }
        return node in names
    return True


def table(entries: list[dict[str, Any]]) -> Table:
    """The entries as a rich table."""
    view = Table("time", "who", "action", "outcome", "detail")
    for entry in entries:
        detail = entry.get("node_id") or entry.get("fingerprint_sha1") or entry.get("round", "")
        view.add_row(str(entry.get("time", "")), who(entry), action(entry), outcome(entry),
                     str(detail))  # fmt: skip
    return view
