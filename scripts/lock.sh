#!/usr/bin/env bash
# Regenerate docker/requirements.lock: fedllm's run-time dependencies, resolved in a
# throwaway venv (the pinned CPU torch first, left out of the lock: each image picks its build).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q .
{
    echo "# Runtime dependencies of fedllm, pinned (torch is installed separately: CPU or CUDA build)."
    echo "# Regenerate: scripts/lock.sh"
    "$venv/bin/pip" freeze --exclude fedllm --exclude torch
} > docker/requirements.lock
