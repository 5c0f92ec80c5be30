"""A run directory: checkpoints, history and status (the ServerApp writes, orchestration reads)."""
