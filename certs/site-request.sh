#!/usr/bin/env bash
# At a site: create this SuperNode's private key and a certificate signing request.
# The key never leaves DIR; send DIR/NAME.csr to the federation's CA operator.
#
#   certs/site-request.sh DIR NAME
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 DIR NAME" >&2; exit 2; }
dir=$1 name=$2
case $name in
    superlink|operator|ca|*[!A-Za-z0-9._-]*|'') echo "error: invalid node name '$name'" >&2; exit 2 ;;
esac
if [ -e "$dir/$name.key" ]; then
    echo "error: $dir/$name.key exists; refusing to overwrite it" >&2
    exit 1
fi
umask 077
mkdir -p "$dir"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key" 2>/dev/null
chmod 600 "$dir/$name.key"
openssl req -new -key "$dir/$name.key" -out "$dir/$name.csr" -subj "/O=fedllm/OU=supernode/CN=$name"
chmod 644 "$dir/$name.csr"
echo "key: $dir/$name.key (stays here)  request: $dir/$name.csr (send to the CA operator)"
