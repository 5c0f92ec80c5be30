"""The round's ledger: filled by the SuperLink's update guard, recorded in the run's history."""

from dataclasses import dataclass, field


@dataclass
class RoundLedger:
    """Who was asked, who answered, who was refused in the current round."""

    sampled: int = 0
    replied: int = 0
    failed: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)  # by the site's policy
