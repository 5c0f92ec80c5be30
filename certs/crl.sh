#!/usr/bin/env bash
# At the CA: publish a fresh CRL (DIR/ca.crl). Run it before the previous one's nextUpdate
# (30 days by default), e.g. weekly from cron: an expired CRL makes the gateway refuse everyone.
#
#   certs/crl.sh CA_DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 CA_DIR" >&2; exit 2; }
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
export FEDLLM_CA_DIR=$dir FEDLLM_CERT_DAYS=365 FEDLLM_SAN=DNS:unused
openssl ca -config "$here/openssl.cnf" -gencrl -out "$dir/ca.crl.new" 2>/dev/null
chmod 644 "$dir/ca.crl.new"
mv "$dir/ca.crl.new" "$dir/ca.crl"
