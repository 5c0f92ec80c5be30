#!/usr/bin/env bash
# Everything the real container tests need, on a Debian host without an image registry:
# Docker engine + Compose v1 from Debian, a debootstrapped base image, then the fedllm and
# Prometheus images built from it (BuildKit through Debian's docker client).
#
#   scripts/container-images.sh        # prints the image tags it built
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${FEDLLM_BASE_IMAGE:-fedllm-base:bookworm}
IMAGE=${FEDLLM_IMAGE:-fedllm:0.1.0}
PROMETHEUS=${PROMETHEUS_IMAGE:-fedllm-prometheus:2.42}
CA_BUNDLE=${FEDLLM_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
WHEELS=${FEDLLM_WHEEL_DIR:-/opt/wheels}

missing=()
[ -x /usr/bin/docker ] && [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's client matches Debian's daemon and builds with BuildKit (a newer client on PATH
# first would want buildx).
docker() { /usr/bin/docker "$@"; }
if ! docker info >/dev/null 2>&1; then
    nohup /usr/sbin/dockerd >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null
fi

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    root=$(mktemp -d)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" >/dev/null
    tar -C "$root" -c . | docker import - "$BASE" >/dev/null
    rm -rf "$root"
fi

# A local CPU torch wheel, hard-linked into the build context and bind-mounted by the build.
torch_args=()
for wheel in "$WHEELS"/torch-2.13.0*-cp311-*.whl; do
    [ -f "$wheel" ] || continue
    ln -f "$wheel" docker/wheels/ 2>/dev/null || cp "$wheel" docker/wheels/
    torch_args=(--build-arg TORCH_INDEX=)
done
secret=()
[ -f "$CA_BUNDLE" ] && secret=(--secret "id=ca,src=$CA_BUNDLE")

export DOCKER_BUILDKIT=1
docker build -q -f docker/Dockerfile -t "$IMAGE" --build-arg "BASE_IMAGE=$BASE" \
    "${torch_args[@]}" "${secret[@]}" . >/dev/null
docker build -q -f docker/prometheus/Dockerfile -t "$PROMETHEUS" \
    --build-arg "BASE_IMAGE=$BASE" docker/prometheus >/dev/null
echo "$IMAGE $PROMETHEUS"
