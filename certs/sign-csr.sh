#!/usr/bin/env bash
# At the CA: sign a site's CSR as a SuperNode client certificate (EKU clientAuth, OU=supernode).
# The subject and extensions come from the CA, never from the request; a request that asks
# for CA rights or serverAuth is refused.
#
#   certs/sign-csr.sh CA_DIR REQUEST.csr NAME [OUT_DIR]
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 CA_DIR REQUEST.csr NAME [OUT_DIR]" >&2; exit 2; }
dir=$1 csr=$2 name=$3 out=${4:-$1}
here=$(cd "$(dirname "$0")" && pwd)
export FEDLLM_CA_DIR=$dir FEDLLM_CERT_DAYS=${FEDLLM_CERT_DAYS:-365} FEDLLM_SAN=DNS:unused
case $name in
    superlink|operator|ca|*[!A-Za-z0-9._-]*|'') echo "error: invalid node name '$name'" >&2; exit 2 ;;
esac
[ -f "$dir/ca.key" ] || { echo "error: $dir holds no CA" >&2; exit 1; }
[ -f "$csr" ] || { echo "error: $csr: file not found" >&2; exit 1; }
text=$(openssl req -in "$csr" -noout -text -verify 2>&1) || {
    echo "error: $csr is not a valid signed request" >&2; exit 1; }
if grep -q "CA:TRUE" <<<"$text"; then
    echo "error: $csr asks for CA rights; refused" >&2; exit 1
fi
if grep -qE "TLS Web Server Authentication|Certificate Sign" <<<"$text"; then
    echo "error: $csr asks for serverAuth or certificate signing; refused" >&2; exit 1
fi
if [ -e "$out/$name.crt" ]; then
    echo "error: $out/$name.crt exists; revoke it first or pick another name" >&2; exit 1
fi
mkdir -p "$out"
openssl ca -config "$here/openssl.cnf" -batch -notext -in "$csr" -out "$out/$name.crt" \
    -subj "/O=fedllm/OU=supernode/CN=$name" -extensions v3_client 2>/dev/null
cp "$dir/ca.crt" "$out/ca.crt" 2>/dev/null || true
echo "signed: $out/$name.crt (return it with ca.crt to the site)"
