#!/usr/bin/env bash
# A throw-away PKI for the local-broker scripts (demo.sh, bench.sh,
# test-initd.sh): RSA 2048, X.509 v3 throughout (rustls rejects v1
# certificates), valid for 2 days.
#
#   scripts/pki.sh DIR [NAME[=CN]]...
#
# writes, in DIR (made if missing):
#   ca.pem, ca.key            the CA
#   server.pem, server.key    the broker's: CN=localhost, serverAuth,
#                             subjectAltName DNS:localhost, IP:127.0.0.1
#   NAME.pem, NAME.key        one client (device) certificate per NAME:
#                             CN=CN (default NAME), clientAuth
#
# Keys are 0600, certificates 0644: the broker must run as the user who ran
# this (the scripts' mosquitto.conf say so for root). Silent on success; on
# failure, one line saying what failed, then openssl's output (kept in
# DIR/openssl.log), and exit 1.
set -euo pipefail

me=pki.sh
usage() { echo "usage: $0 DIR [NAME[=CN]]..." >&2; exit 2; }
if [ $# -lt 1 ] || [ -z "$1" ]; then usage; fi
dir=$1
shift

clients=()
for arg in "$@"; do
    name=${arg%%=*} cn=${arg#*=}
    case $name in
        "" | ca | server | openssl | *[!A-Za-z0-9._-]*)
            echo "$me: bad client name '$name' (letters, digits, . _ -; not ca, server or openssl)" >&2
            exit 2 ;;
    esac
    case $cn in
        "" | */* | *\\*) echo "$me: bad CN '$cn' for $name (empty, or has / or \\)" >&2; exit 2 ;;
    esac
    clients+=("$name" "$cn")
done

umask 077
mkdir -p "$dir"
cd "$dir"
log=$PWD/openssl.log
: >"$log"

cat >openssl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

# run WHAT CMD...: CMD with its output in the log; on failure, say WHAT
# failed, show the log (without genpkey's progress dots) and exit.
run() {
    local what=$1
    shift
    { printf '$'; printf ' %q' "$@"; echo; } >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        echo "$me: openssl failed making $what in $PWD (log below, also in $log)" >&2
        sed -E '/^[.+*]+$/d; s/^/    /' "$log" >&2
        exit 1
    fi
}

newkey() { # NAME: NAME.key, RSA 2048, 0600 (umask 077, and for one that was there)
    run "$1.key" openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key"
    chmod 0600 "$1.key"
}
# issue NAME CN EXTENSIONS: NAME.pem signed by the CA.
issue() {
    newkey "$1"
    run "$1.csr" openssl req -config openssl.cnf -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
    run "$1.pem" openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -CAserial ca.srl -days 2 -extfile openssl.cnf -extensions "$3" -out "$1.pem"
    chmod 0644 "$1.pem"
    rm -f "$1.csr"
}

newkey ca
run ca.pem openssl req -config openssl.cnf -x509 -new -key ca.key -days 2 \
    -subj "/CN=iotbox throw-away CA" -extensions ca -out ca.pem
chmod 0644 ca.pem
issue server localhost server
for ((i = 0; i < ${#clients[@]}; i += 2)); do
    issue "${clients[i]}" "${clients[i + 1]}" client
done
rm -f openssl.cnf ca.srl "$log"
