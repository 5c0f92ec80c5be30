#!/usr/bin/env bash
# At the CA: revoke a certificate and publish a new CRL (DIR/ca.crl). A running
# `fedllm superlink` notices the new CRL and reloads its gateway without stopping.
#
#   certs/revoke.sh CA_DIR CERT.crt [REASON]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 CA_DIR CERT.crt [REASON]" >&2; exit 2; }
dir=$1 cert=$2 reason=${3:-unspecified}
here=$(cd "$(dirname "$0")" && pwd)
export FEDLLM_CA_DIR=$dir FEDLLM_CERT_DAYS=365 FEDLLM_SAN=DNS:unused
[ -f "$dir/ca.key" ] || { echo "error: $dir holds no CA" >&2; exit 1; }
[ -f "$cert" ] || { echo "error: $cert: file not found" >&2; exit 1; }
openssl ca -config "$here/openssl.cnf" -revoke "$cert" -crl_reason "$reason" 2>/dev/null
"$here/crl.sh" "$dir"
echo "revoked: $cert"
