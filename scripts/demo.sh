#!/usr/bin/env bash
# `make demo`: the how-to's whole session, unattended, against a local broker
# instead of AWS IoT Core.
#
#   1. a throw-away CA, server and device certificates (scripts/pki.sh,
#      RSA 2048)
#   2. mosquitto with mutual TLS on 127.0.0.1, a free port
#   3. iotbox --install: the awsapp and mqtt5_pubsub symlinks
#   4. awsapp recv + mqtt5_pubsub, as in the how-to, until "Subscription Success."
#   5. the "AWS console" publishes to sdk/test/python: awsapp recv prints it
#   6. awsapp send message.txt to sdk/test/java: the console's subscriber gets it
#   7. SIGTERM to the daemon: "Mqtt5 Client stopped."
#
# Exit 0 when every step did what the how-to shows, non-zero with a line saying
# which step failed otherwise. Everything it starts is stopped by PID on exit;
# its files live in one temp dir, removed on success (kept on failure, or with
# KEEP=1). IOTBOX_BIN=path uses that binary instead of building the release one.
set -euo pipefail

cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

# --- output helpers ----------------------------------------------------------

step() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/    /'; }
# show_cmd: print a command as the how-to does ("$ ..."), indented.
show_cmd() { printf '    $ %s\n' "$*"; }

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

T=""
ok=0
clean_up_on_exit demo

fail() {
    printf '\ndemo: FAILED: %s\n' "$*" >&2
    local f
    for f in pubsub.out pubsub.log recv.out console.out mosquitto.log; do
        if [ -s "$T/$f" ]; then
            printf -- '--- last lines of %s:\n' "$f" >&2
            tail -n 15 "$T/$f" | indent >&2
        fi
    done
    exit 1
}

now_ms() { date +%s%3N; }
# wait_until SECONDS WHAT CMD...: poll CMD until it succeeds or time runs out.
wait_until() {
    local limit=$1 what=$2 end
    shift 2
    end=$(($(now_ms) + limit * 1000))
    until "$@"; do
        [ "$(now_ms)" -lt "$end" ] || fail "no $what within ${limit}s"
        sleep 0.02
    done
}
# wait_exit SECONDS PID WHAT: wait for a background process to end; its status.
wait_exit() {
    local limit=$1 pid=$2 what=$3 rc=0
    wait_until "$limit" "$what" not_running "$pid"
    wait "$pid" || rc=$?
    forget "$pid"
    return "$rc"
}
not_running() { ! kill -0 "$1" 2>/dev/null; }
has_line() { [ -f "$2" ] && grep -qF -- "$1" "$2"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- 0. tools and binary -----------------------------------------------------

step "0. tools and the iotbox binary"
scripts/deps.sh test | indent
if [ -n "${IOTBOX_BIN:-}" ]; then
    BIN=$IOTBOX_BIN
else
    "$CARGO" build --release 2>&1 | indent
    BIN=target/release/iotbox
fi
[ -x "$BIN" ] || fail "no executable at $BIN"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
echo "    $BIN: $("$BIN" --version 2>&1 | head -n1)"

T=$(mktemp -d "${TMPDIR:-/tmp}/iotbox-demo.XXXXXX")
chmod 0700 "$T"

# --- 1. certificates ----------------------------------------------------------

step "1. certificates: a throw-away CA, the broker's (localhost) and the device's"
# scripts/pki.sh: ca.pem, server.pem (localhost) and one client certificate
# each for the device (CN basicPubSub, the how-to's client id) and the
# console, with their .key files; RSA 2048, X.509 v3.
CARGO=$CARGO scripts/pki.sh "$T" device=basicPubSub console || fail "scripts/pki.sh could not make the certificates"
for c in server device console; do
    printf '    %-12s %s\n' "$c.pem" "$(openssl x509 -in "$T/$c.pem" -noout -subject -ext subjectAltName,extendedKeyUsage 2>/dev/null |
        grep -v '^X509v3' | sed 's/^ *//; s/ = /=/g' | paste -sd ';' | sed 's/;/; /g')"
done
openssl verify -CAfile "$T/ca.pem" "$T/server.pem" "$T/device.pem" | indent

# --- 2. broker ------------------------------------------------------------------

step "2. broker: mosquitto, MQTT 5 with mutual TLS on 127.0.0.1"
start_broker() { # PORT: 0 when it listens, 1 when it exited (port taken?)
    cat >"$T/mosquitto.conf" <<EOF
listener $1 127.0.0.1
cafile $T/ca.pem
certfile $T/server.pem
keyfile $T/server.key
require_certificate true
tls_version tlsv1.2
set_tcp_nodelay true
allow_anonymous true
persistence false
user $(id -un)
log_dest stdout
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
connection_messages true
EOF
    # tls_version names the minimum: TLS 1.2 and 1.3 are both offered.
    /usr/sbin/mosquitto -c "$T/mosquitto.conf" >"$T/mosquitto.log" 2>&1 &
    broker_pid=$!
    local end=$(($(now_ms) + 10000))
    while :; do
        if not_running "$broker_pid"; then wait "$broker_pid" || true; return 1; fi  # reaped, never listed
        port_open "$1" && return 0
        [ "$(now_ms)" -lt "$end" ] || fail "mosquitto did not listen on 127.0.0.1:$1 within 10s"
        sleep 0.02
    done
}
PORT=""
for _ in 1 2 3 4 5 6 7 8; do
    p=$((20000 + RANDOM % 40000))
    port_open "$p" && continue
    if start_broker "$p"; then PORT=$p; pids+=("$broker_pid"); break; fi
done
[ -n "$PORT" ] || fail "mosquitto would not start (see mosquitto.log)"
echo "    mosquitto $(/usr/sbin/mosquitto -h 2>/dev/null | head -n1 | awk '{print $3}') (pid $broker_pid) on 127.0.0.1:$PORT: require_certificate true, set_tcp_nodelay true"

# --- 3. symlinks ---------------------------------------------------------------------

step "3. install: iotbox --install makes the how-to's command names"
mkdir -p "$T/bin"
cp "$BIN" "$T/bin/iotbox"
show_cmd "iotbox --install $T/bin"
"$T/bin/iotbox" --install "$T/bin" 2>&1 | indent || fail "iotbox --install failed"
for n in awsapp mqtt5_pubsub; do
    [ -L "$T/bin/$n" ] || fail "iotbox --install did not create $T/bin/$n"
done
export PATH="$T/bin:$PATH"
SOCK_S=$T/aws_socket_smsg
SOCK_R=$T/aws_socket_rmsg

# --- 4. daemon --------------------------------------------------------------------------

step "4. terminal 2: awsapp recv; terminal 1: mqtt5_pubsub (as in the how-to)"
show_cmd "awsapp recv $SOCK_R 1"
awsapp recv "$SOCK_R" 1 >"$T/recv.out" 2>&1 &
recv_pid=$!
pids+=("$recv_pid")
wait_until 10 "'wait message...' from awsapp recv" has_line "wait message..." "$T/recv.out"
indent <"$T/recv.out"

cd "$T"
# The spool and the local MQTT endpoint in the demo's directory, not
# /var/lib/iotbox and /tmp/iotbox_mqtt: the demo leaves nothing behind, and
# never meets a spool or an endpoint another daemon holds.
show_cmd "mqtt5_pubsub --endpoint localhost --port $PORT --cert device.pem --key device.key --ca_file ca.pem --client_id basicPubSub --topic sdk/test/python --pub_socket $SOCK_S --sub_socket $SOCK_R --spool_dir $T/spool --local_socket $T/local.mqtt"
mqtt5_pubsub --endpoint localhost --port "$PORT" --cert device.pem --key device.key \
    --ca_file ca.pem --client_id basicPubSub --topic sdk/test/python \
    --pub_socket "$SOCK_S" --sub_socket "$SOCK_R" --spool_dir "$T/spool" \
    --local_socket "$T/local.mqtt" \
    >"$T/pubsub.out" 2>"$T/pubsub.log" &
pubsub_pid=$!
pids+=("$pubsub_pid")
t0=$(now_ms)
sub_ok() {
    not_running "$pubsub_pid" && fail "mqtt5_pubsub exited before 'Subscription Success.'"
    has_line "Subscription Success." "$T/pubsub.out"
}
wait_until 15 "'Subscription Success.' from mqtt5_pubsub" sub_ok
indent <"$T/pubsub.out"
echo "    (subscribed $(($(now_ms) - t0)) ms after start)"
[ -S "$SOCK_S" ] || fail "mqtt5_pubsub is subscribed but its publish socket $SOCK_S does not exist"

# --- 5. console -> device ------------------------------------------------------------------

tls=(-h localhost -p "$PORT" --cafile "$T/ca.pem" --cert "$T/console.pem" --key "$T/console.key" -V mqttv5)
step "5. receive: the console publishes to sdk/test/python; awsapp recv prints it"
# The console's JSON, no newline at the end: 45 bytes, as in the how-to.
printf '{\n  "message": "Hello from AWS IoT console"\n}' >"$T/console.json"
show_cmd "cat console.json      # what the console publishes"
{ cat "$T/console.json"; echo; } | indent
show_cmd "mosquitto_pub -t sdk/test/python -q 1 -f console.json      # the console"
mosquitto_pub "${tls[@]}" -i console-pub -t sdk/test/python -q 1 -f "$T/console.json" 2>&1 | indent ||
    fail "mosquitto_pub to sdk/test/python failed"
wait_exit 10 "$recv_pid" "exit of awsapp recv after its 1 message" || fail "awsapp recv exited with an error"
echo "    terminal 2 (awsapp recv):"
indent <"$T/recv.out"
has_line "Receive 45 Byte" "$T/recv.out" || fail "awsapp recv did not print 'Receive 45 Byte'"
has_line '"message": "Hello from AWS IoT console"' "$T/recv.out" || fail "awsapp recv did not print the console's message"

# --- 6. device -> console ----------------------------------------------------------------------

step "6. send: awsapp send message.txt; the console's subscription to sdk/test/java gets it"
# Line-buffered, so that its SUBACK line can be waited for.
stdbuf -oL mosquitto_sub "${tls[@]}" -i console-sub -t sdk/test/java -q 1 -v -d -C 1 -W 20 >"$T/console.out" 2>&1 &
console_pid=$!
pids+=("$console_pid")
wait_until 10 "SUBACK for the console's subscriber" has_line "received SUBACK" "$T/console.out"
printf 'sdk/test/java\n{\n  "message": "Hello from Raspberry Pi"\n}\n' >"$T/message.txt"
show_cmd "cat message.txt"
indent <"$T/message.txt"
show_cmd "awsapp send $SOCK_S ./message.txt"
awsapp send "$SOCK_S" ./message.txt 2>&1 | indent || fail "awsapp send failed"
wait_exit 10 "$console_pid" "message on sdk/test/java at the console" ||
    fail "the console's mosquitto_sub got nothing on sdk/test/java"
echo "    console (subscribed to sdk/test/java) received:"
grep -v -e '^Client console-sub ' -e '^Subscribed (mid' "$T/console.out" | sed '${/^$/d}' | indent
grep -q 'Hello from Raspberry Pi' "$T/console.out" || fail "the console did not receive message.txt's payload"
wait_until 10 "'Publish Succeed.' from mqtt5_pubsub" has_line "Publish Succeed." "$T/pubsub.out"

# --- 7. stop ------------------------------------------------------------------------------------------

step "7. stop: SIGTERM to mqtt5_pubsub"
kill -TERM "$pubsub_pid"
wait_exit 10 "$pubsub_pid" "exit of mqtt5_pubsub after SIGTERM" || fail "mqtt5_pubsub exited with status $? on SIGTERM"
echo "    terminal 1 (mqtt5_pubsub), everything it printed:"
indent <"$T/pubsub.out"
has_line "Mqtt5 Client stopped." "$T/pubsub.out" || fail "mqtt5_pubsub did not print 'Mqtt5 Client stopped.'"
[ -e "$SOCK_S" ] && fail "mqtt5_pubsub left its publish socket $SOCK_S behind"
show_cmd "iotbox spool $T/spool"
iotbox spool "$T/spool" >"$T/spool.out" || fail "iotbox spool failed"
indent <"$T/spool.out"
grep -q "for the broker: nothing waiting" "$T/spool.out" || fail "messages were left in the spool"

ok=1
printf '\n== demo: OK\n'
