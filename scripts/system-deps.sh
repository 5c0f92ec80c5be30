#!/usr/bin/env bash
# Debian packages fedllm runs beside Python: nginx (mTLS gateway) and openssl (PKI).
# Installs what is missing when root with apt-get; otherwise says what to install.
set -euo pipefail
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
for extra in "$@"; do
    case $extra in
        prometheus) command -v prometheus >/dev/null || missing+=(prometheus) ;;
        *) echo "unknown extra: $extra" >&2; exit 2 ;;
    esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "missing system packages: ${missing[*]} (Debian: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
