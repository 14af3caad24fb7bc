#!/usr/bin/env bash
# A throw-away PKI for the local-broker scripts (demo.sh, bench.sh,
# test-initd.sh): examples/pki.rs, run through cargo. The tests make theirs
# with the same code (tests/common/pki.rs). ECDSA P-256, X.509 v3 throughout
# (rustls rejects v1 certificates), valid for 2 days.
#
#   scripts/pki.sh DIR [NAME[=CN]]...
#
# writes, in DIR (made, mode 0700, if missing):
#   ca.pem, ca.key            the CA
#   server.pem, server.key    the broker's: CN=localhost, serverAuth,
#                             subjectAltName DNS:localhost, IP:127.0.0.1
#   NAME.pem, NAME.key        one client (device) certificate per NAME:
#                             CN=CN (default NAME), clientAuth
#
# Keys are 0600, certificates 0644: the broker must run as the user who ran
# this (the scripts' mosquitto.conf say so for root). Silent on success; on
# failure, one line saying what failed, and exit 1 (2 for bad arguments).
# The first run builds the example (the dev profile, as `cargo test` does;
# CARGO picks the cargo, default cargo).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
exec "${CARGO:-cargo}" run --quiet --manifest-path "$root/Cargo.toml" --example pki -- "$@"
