"""Test-only ServerApp: fedllm's own, keeping everything it receives from the sites.

Every reply the ServerApp pulls from the SuperLink is written, as it arrived, to
`<run-dir>/received/`: `replies.jsonl` (one line per reply: sender, message type, record
names, array dtypes, config keys, metrics) and `<n>.npz` (its arrays, `<record>/<name>`).
What a test finds there is what the coordinator could read.
"""

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from superlink.server_app import main as fedllm_main

app = ServerApp()


def keep(reply: Message, folder: Path, index: int) -> None:
    """One received reply: its arrays to `<index>.npz`, the rest to `replies.jsonl`."""
    entry: dict[str, object] = {
        "index": index,
        "src": reply.metadata.src_node_id,
        "type": reply.metadata.message_type,
        "error": reply.error.reason if reply.has_error() else None,
    }
    if reply.has_content():
        content = reply.content
        arrays = {f"{record}/{name}": array.numpy()
                  for record, arrays in content.array_records.items()
                  for name, array in arrays.items()}  # fmt: skip
        np.savez(folder / f"{index}.npz", **arrays)
        entry |= {
            "arrays": {key: str(value.dtype) for key, value in arrays.items()},
            "configs": {name: sorted(record) for name, record in content.config_records.items()},
            "metrics": {name: dict(record) for name, record in content.metric_records.items()},
        }
    with (folder / "replies.jsonl").open("a") as log:
        log.write(json.dumps(entry) + "\n")


def capturing(pull: Callable[[Iterable[str]], Iterable[Message]], folder: Path) -> Callable:
    """`pull` that keeps every reply it returns."""
    folder.mkdir(parents=True, exist_ok=True)
    count = [0]

    def pull_messages(message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(pull(message_ids))
        for reply in replies:
            keep(reply, folder, count[0])
            count[0] += 1
        return replies

    return pull_messages


@app.main()
def main(grid: Grid, context: Context) -> None:
    """fedllm's ServerApp, reading replies through `capturing`."""
    folder = Path(str(context.run_config["run-dir"])).expanduser() / "received"
    grid.pull_messages = capturing(grid.pull_messages, folder)  # type: ignore[method-assign]
    fedllm_main(grid, context)
