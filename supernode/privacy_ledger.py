"""A site's record-level privacy ledger: every DP-SGD round it trained, composed by opacus' PRV
accountant (numerically tight; RDP overstates ε by about a tenth in the default plan, which
would cost noise).

Each message runs in a new ClientApp process, so the ledger lives in a file on the node
(never in the run's hands): one entry per round trained, per run, across all runs on the
site. It is written before the reply leaves, so a crash after training overstates, never
understates, what was spent.
"""

import json
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant

PRV_LIMIT = 64.0  # ε past this protects nothing, and PRV's grid grows slow there (then overflows)


@dataclass(frozen=True)
class Release:
    """One round of DP-SGD on this site: its noise, Poisson sample rate and steps."""

    run_id: int
    server_round: int
    noise_multiplier: float
    sample_rate: float
    steps: int


def history(releases: list[Release]) -> list[tuple[float, float, int]]:
    """opacus' (noise, rate, steps) history, steps summed per mechanism: PRV composes each entry
    by FFT, so a ledger of many rounds would otherwise cost seconds per entry."""
    steps: Counter[tuple[float, float]] = Counter()
    for r in releases:
        steps[(r.noise_multiplier, r.sample_rate)] += r.steps
    return [(noise, rate, count) for (noise, rate), count in steps.items()]


def epsilon(releases: list[Release], delta: float) -> float:
    """ε at `delta` of `releases` composed: the lower of two upper bounds, PRV's and RDP's (the
    plan's noise is PRV's, `dp_sgd.plan_noise`); 0 for none."""
    if not releases:
        return 0.0
    rdp = RDPAccountant()
    rdp.history = history(releases)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": PRV is the tight one
        warnings.filterwarnings("ignore", message="Optimal order")
        bound = float(rdp.get_epsilon(delta))
    if bound > PRV_LIMIT:
        return bound
    prv = PRVAccountant()
    prv.history = history(releases)
    with np.errstate(divide="ignore"):  # log(1 - rate): -inf at rate 1, as PRV means it
        return min(bound, float(prv.get_epsilon(delta)))


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
