#!/usr/bin/env bash
# Create a whole federation PKI with OpenSSL: CA, SuperLink server certificate,
# one client certificate per SuperNode and an operator certificate.
#
#   certs/generate.sh DIR NODE...
#
# Environment: FEDLLM_SUPERLINK_SANS (extra SANs, e.g. "DNS:fl.example.org,IP:10.0.0.5"),
# FEDLLM_CERT_DAYS (default 365). Refuses to touch a DIR that already holds a CA.
set -euo pipefail

usage() { echo "usage: $0 DIR NODE..." >&2; exit 2; }
[ $# -ge 1 ] || usage
dir=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
export FEDLLM_CA_DIR=$dir FEDLLM_CERT_DAYS=${FEDLLM_CERT_DAYS:-365}
export FEDLLM_SAN="DNS:superlink,DNS:localhost,IP:127.0.0.1${FEDLLM_SUPERLINK_SANS:+,$FEDLLM_SUPERLINK_SANS}"
conf=$here/openssl.cnf

if [ -e "$dir/ca.key" ] || [ -e "$dir/ca.crt" ]; then
    echo "error: $dir already holds a CA; refusing to overwrite it" >&2
    exit 1
fi
for name in "$@"; do
    case $name in
        superlink|operator|ca) echo "error: node name '$name' is reserved" >&2; exit 2 ;;
        *[!A-Za-z0-9._-]*|'') echo "error: node name '$name' must match [A-Za-z0-9._-]+" >&2; exit 2 ;;
    esac
done

umask 077
mkdir -p "$dir/ca-db/issued"
: > "$dir/ca-db/index.txt"
openssl rand -hex 16 > "$dir/ca-db/serial"
echo 1000 > "$dir/ca-db/crlnumber"

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

# The CA: self-signed, 10 years unless told otherwise.
newkey "$dir/ca.key"
openssl req -config "$conf" -new -x509 -key "$dir/ca.key" -out "$dir/ca.crt" \
    -days "${FEDLLM_CA_DAYS:-3650}" -subj "/O=fedllm/OU=ca/CN=fedllm federation CA" -extensions v3_ca

# issue NAME OU EXTENSIONS: key + CSR in DIR, signed by the CA.
issue() {
    newkey "$dir/$1.key"
    openssl req -config "$conf" -new -key "$dir/$1.key" -out "$dir/$1.csr" -subj "/O=fedllm/OU=$2/CN=$1"
    openssl ca -config "$conf" -batch -notext -in "$dir/$1.csr" -out "$dir/$1.crt" -extensions "$3" 2>/dev/null
    rm -f "$dir/$1.csr"
}
issue superlink superlink v3_server
issue operator operator v3_client
for name in "$@"; do issue "$name" supernode v3_client; done
"$here/crl.sh" "$dir"
chmod 644 "$dir"/*.crt "$dir/ca.crl"
echo "PKI written to $dir: ca.crt, superlink, operator${*:+, $*}"
