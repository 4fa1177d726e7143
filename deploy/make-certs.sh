#!/usr/bin/env bash
# A small certificate authority for Mamori: one CA, the collector's server certificate, and one
# client certificate per agent (its id, a DNS name, as subject alternative name). ECDSA P-256,
# made with openssl. Keys are written 0600. Usage:
#
#   deploy/make-certs.sh OUT_DIR COLLECTOR_NAME AGENT_ID [AGENT_ID...]
#   deploy/make-certs.sh /etc/mamori/pki collector.plant.example agent-1.plant.example
#
# Re-running adds missing certificates and keeps the existing CA. Give each agent only its own
# key and certificate plus ca.crt; the CA key stays offline.
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,10p' "$0" >&2
    exit 2
fi
out=$1
collector=$2
shift 2
days=${MAMORI_CERT_DAYS:-825}
mkdir -p "$out"
umask 077

if [ ! -f "$out/ca.key" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$out/ca.key"
    openssl req -x509 -new -key "$out/ca.key" -sha256 -days 3650 -subj "/CN=Mamori CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$out/ca.crt"
fi

issue() { # name usage
    local name=$1 usage=$2
    [ -f "$out/$name.crt" ] && return 0
    openssl ecparam -name prime256v1 -genkey -noout -out "$out/$name.key.sec1"
    openssl pkcs8 -topk8 -nocrypt -in "$out/$name.key.sec1" -out "$out/$name.key"
    rm -f "$out/$name.key.sec1"
    openssl req -new -key "$out/$name.key" -subj "/CN=$name" -out "$out/$name.csr"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=DNS:%s\n' \
        "$usage" "$name" > "$out/$name.ext"
    openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
        -days "$days" -sha256 -extfile "$out/$name.ext" -out "$out/$name.crt" 2>/dev/null
    rm -f "$out/$name.csr" "$out/$name.ext"
    echo "issued $out/$name.crt"
}

issue "$collector" serverAuth
for agent in "$@"; do
    issue "$agent" clientAuth
done
chmod 0644 "$out"/*.crt
