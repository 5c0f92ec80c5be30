"""Screen node updates before Flower's strategy aggregates them.

`guarded(FedAvg)` is the strategy class with `UpdateGuard` in front of it: every training
reply must carry arrays with the names, shapes and dtypes that were sent, all finite, and an
update norm within the configured bound; the rest are dropped (and counted) before the
library's own aggregation runs.
"""

import math
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedllm.learning.updates import WEIGHTS
from fedllm.privacy.dp import BLOCKED, REFUSED
from fedllm.rundir.ledger import RoundLedger


def check_update(reply: ArrayRecord, sent: ArrayRecord, max_norm: float) -> str | None:
    """Why an update is unacceptable, or None when it is fine."""
    if set(reply) != set(sent):
        return "array names differ from the global adapter"
    squared = 0.0
    for name, array in sent.items():
        received = reply[name]
        if received.shape != array.shape or received.dtype != array.dtype:
            return f"{name}: shape/dtype {received.shape}/{received.dtype} != {array.shape}"
        values = received.numpy()
        if not np.isfinite(values).all():
            return f"{name}: contains NaN or Inf"
        squared += float(np.square(values.astype(np.float64) - array.numpy()).sum())
    norm = math.sqrt(squared)
    if max_norm > 0 and norm > max_norm:
        return f"update norm {norm:.3g} exceeds max-update-norm {max_norm:g}"
    return None


def beyond_the_update(reply: Message) -> str | None:
    """A training reply carrying records besides the update and its metrics: why, or None."""
    content = reply.content
    extra = sorted(set(content.array_records) - {WEIGHTS}) + sorted(content.config_records)
    return f"reply carries records beyond the update: {extra}" if extra else None


class UpdateGuard(FedAvg):
    """Mixin for Flower strategies: validate training replies before aggregating them."""

    max_update_norm: float = 0.0
    on_round: Callable[[int, RoundLedger], None] = staticmethod(lambda _round, _ledger: None)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember what was sent; count the sampled nodes."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._sent, self._ledger = arrays, RoundLedger(sampled=len(messages))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop invalid updates, report the round's ledger, aggregate the rest."""
        ledger, kept = self._ledger, []
        for reply in replies:
            if reply.has_error():
                ledger.failed += 1
                if reply.error.code in (REFUSED, BLOCKED):
                    ledger.refused.append((reply.metadata.src_node_id, reply.error.reason or ""))
                kept.append(reply)
                continue
            ledger.replied += 1
            arrays = next(iter(reply.content.array_records.values()), ArrayRecord())
            reason = beyond_the_update(reply) or check_update(
                arrays, self._sent, self.max_update_norm
            )
            if reason is None:
                kept.append(reply)
            else:
                ledger.rejected.append((reply.metadata.src_node_id, reason))
        ledger.failed += max(0, ledger.sampled - ledger.replied - ledger.failed)
        self.on_round(server_round, ledger)
        return super().aggregate_train(server_round, kept)


def guarded(strategy_class: type[FedAvg]) -> type[FedAvg]:
    """`strategy_class` with `UpdateGuard` validating its inputs."""
    return type(f"Guarded{strategy_class.__name__}", (UpdateGuard, strategy_class), {})
