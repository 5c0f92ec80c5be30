"""Per-round metrics as the ServerApp sees them, mirrored to `history.json`."""

from collections.abc import Callable
from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.common.logger import log

from fedllm.identity.audit import append_from_env
from fedllm.rundir.checkpoint import read_json, write_json
from fedllm.rundir.ledger import RoundLedger

HISTORY_FILE = "history.json"
STATUS_FILE = "status.json"


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Rounds recorded so far (empty for a new run)."""
    return list(read_json(run_dir / HISTORY_FILE, []))


def write_status(run_dir: Path, state: str, **details: Any) -> None:
    """`running`, `finished` or `failed`, with details, for watchers of the run."""
    write_json(run_dir / STATUS_FILE, {"state": state, **details})


def read_status(run_dir: Path) -> dict[str, Any]:
    """The last status the ServerApp wrote, or an empty dict."""
    return dict(read_json(run_dir / STATUS_FILE, {}))


class History:
    """Collects one round's federated metrics until the round is closed.

    `site` names a node id: the site it was registered as (RoundGrid.site).
    """

    def __init__(self, run_dir: Path, site: Callable[[int], str]) -> None:
        self.run_dir = run_dir
        self.site = site
        self.rounds = read_history(run_dir)
        self.pending: dict[str, Any] = {}

    def on_train(self, replies: list[RecordDict], aggregated: MetricRecord) -> None:
        """Strategy hook: aggregated training metrics of the current round."""
        self.pending["train"] = dict(aggregated)
        self.pending["nodes-replied"] = len(replies)
        self.pending["train-examples"] = sum(
            next(iter(reply.metric_records.values()))["num-examples"] for reply in replies
        )

    def on_round(self, server_round: int, ledger: RoundLedger) -> None:
        """Update guard hook: participation and rejected updates of the current round."""
        rejected: list[dict[str, Any]] = []
        for node_id, reason in ledger.rejected:
            site = self.site(node_id)
            message = "round %s: update from %s (node %s) rejected: %s"
            log(WARNING, message, server_round, site, node_id, reason)
            audit = {"node": site, "node_id": node_id, "round": server_round, "reason": reason}
            append_from_env("update-rejected", **audit)
            rejected.append({"node": node_id, "site": site, "reason": reason})
        if rejected:
            self.pending["rejected"] = rejected
        refused = [self.refusal(server_round, node_id, why) for node_id, why in ledger.refused]
        if refused:
            self.pending["refused"] = refused
        self.pending.update(
            {
                "nodes-sampled": ledger.sampled,
                "nodes-failed": ledger.failed,
                "updates-rejected": len(ledger.rejected),
                "nodes-refused": len(ledger.refused),
            }
        )

    def refusal(self, server_round: int, node_id: int, reason: str) -> dict[str, Any]:
        """A site that would not train (its policy, its privacy budget): logged and audited."""
        site = self.site(node_id)
        log(WARNING, "round %s: %s (node %s) refused: %s", server_round, site, node_id, reason)
        audit = {"node": site, "node_id": node_id, "round": server_round, "reason": reason}
        append_from_env("policy-refusal", **audit)
        return {"node": node_id, "site": site, "reason": reason}

    def on_evaluate(self, replies: list[RecordDict], aggregated: MetricRecord) -> None:
        """Strategy hook: weighted federated evaluation of the current round."""
        self.pending["federated"] = dict(aggregated)

    def close_round(self, server_round: int, entry: dict[str, Any]) -> dict[str, Any]:
        """Record a finished round (pending metrics + `entry`) and persist the history."""
        record = {"round": server_round, **self.pending, **entry}
        self.rounds = [row for row in self.rounds if row["round"] != server_round] + [record]
        self.pending = {}
        write_json(self.run_dir / HISTORY_FILE, self.rounds)
        return record
