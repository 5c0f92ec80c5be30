"""A site's record-level privacy ledger: every DP-SGD round it trained, composed with opacus' RDP.

Each message runs in a new ClientApp process, so the ledger lives in a file on the node
(never in the run's hands): one entry per round trained, per run, across all runs on the
site. It is written before the reply leaves, so a crash after training overstates, never
understates, what was spent.
"""

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from opacus.accountants import RDPAccountant


@dataclass(frozen=True)
class Release:
    """One round of DP-SGD on this site: its noise, Poisson sample rate and steps."""

    run_id: int
    server_round: int
    noise_multiplier: float
    sample_rate: float
    steps: int


def epsilon(releases: list[Release], delta: float) -> float:
    """ε at `delta` of `releases` composed (RDP accountant); 0 for none."""
    if not releases:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(r.noise_multiplier, r.sample_rate, r.steps) for r in releases]
    return float(accountant.get_epsilon(delta))


class PrivacyLedger:
    """The site's releases, in a JSON file replaced atomically on each write."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def releases(self, run_id: int | None = None) -> list[Release]:
        """All releases, or those of one run."""
        if not self.path.is_file():
            return []
        rows = [Release(**row) for row in json.loads(self.path.read_text())["releases"]]
        return [row for row in rows if run_id is None or row.run_id == run_id]

    def add(self, release: Release) -> None:
        """Record a release; a round trained twice (a retry) counts twice."""
        rows = self.releases()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"releases": [asdict(r) for r in [*rows, release]]}))
        os.replace(temporary, self.path)
