#!/usr/bin/env bash
# `make soak`: hours of mixed load through both sockets, with the broker
# restarted every few minutes, to see that nothing grows: RSS, descriptors
# and CPU of the daemon are printed once a minute. Not a test: it asserts
# only that the daemon is still running at the end and that messages kept
# flowing both ways.
#
#   SOAK_SECS=3600     how long (default one hour)
#   SOAK_RESTART=300   seconds between broker restarts
#   SOAK_RATE=20       messages per second each way
#   IOTBOX_BIN=path    the binary (default: the release build, built here)
#
# Everything it starts is stopped by PID on exit; its files are in one temp
# dir, removed on success (kept on failure, or with KEEP=1).
set -euo pipefail

cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
SOAK_SECS=${SOAK_SECS:-3600}
SOAK_RESTART=${SOAK_RESTART:-300}
SOAK_RATE=${SOAK_RATE:-20}

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

T=""
ok=0
clean_up_on_exit soak

fail() {
    printf 'soak: FAILED: %s\n' "$*" >&2
    [ -n "$T" ] && [ -s "$T/pubsub.log" ] && tail -n 20 "$T/pubsub.log" >&2
    exit 1
}
now_ms() { date +%s%3N; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
running() { kill -0 "$1" 2>/dev/null; }

scripts/deps.sh test >/dev/null
if [ -n "${IOTBOX_BIN:-}" ]; then
    BIN=$IOTBOX_BIN
else
    "$CARGO" build --release >/dev/null 2>&1 || fail "cargo build --release failed"
    BIN=target/release/iotbox
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

T=$(mktemp -d "${TMPDIR:-/tmp}/iotbox-soak.XXXXXX")
chmod 0700 "$T"
scripts/pki.sh "$T" device=soak console >/dev/null || fail "could not make the certificates"

PORT=$((20000 + RANDOM % 40000))
while port_open "$PORT"; do PORT=$((20000 + RANDOM % 40000)); done
cat >"$T/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
cafile $T/ca.pem
certfile $T/server.pem
keyfile $T/server.key
require_certificate true
set_tcp_nodelay true
allow_anonymous true
persistence false
user $(id -un)
log_dest stdout
log_type error
EOF
broker_pid=""
start_broker() {
    /usr/sbin/mosquitto -c "$T/mosquitto.conf" >>"$T/mosquitto.log" 2>&1 &
    broker_pid=$!
    pids+=("$broker_pid")
    local end=$(($(now_ms) + 10000))
    until port_open "$PORT"; do
        running "$broker_pid" || fail "mosquitto exited (see $T/mosquitto.log)"
        [ "$(now_ms)" -lt "$end" ] || fail "mosquitto did not listen within 10 s"
        sleep 0.05
    done
}
stop_broker() {
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    forget "$broker_pid"
}
start_broker

SOCK_S=$T/smsg
SOCK_R=$T/rmsg
"$BIN" recv "$SOCK_R" 0 </dev/null >"$T/recv.out" 2>"$T/recv.log" &
pids+=("$!")
"$BIN" pubsub --endpoint localhost --port "$PORT" --cert "$T/device.pem" --key "$T/device.key" \
    --ca_file "$T/ca.pem" --client_id soak --topic soak/in --pub_socket "$SOCK_S" \
    --sub_socket "$SOCK_R" --reconnect_max 10 --spool_dir "$T/spool" \
    --local_socket "$T/local.mqtt" \
    >"$T/pubsub.out" 2>"$T/pubsub.log" &
daemon=$!
pids+=("$daemon")
end=$(($(now_ms) + 15000))
until grep -q "Subscription Success." "$T/pubsub.out" 2>/dev/null; do
    running "$daemon" || fail "the daemon exited at start"
    [ "$(now_ms)" -lt "$end" ] || fail "the daemon did not subscribe within 15 s"
    sleep 0.05
done

# Outbound: iotbox send at SOAK_RATE, counting exit codes per kind.
printf 'soak/out\n%s' "$(head -c 100 /dev/zero | tr '\0' x)" >"$T/msg.txt"
(
    while :; do
        rc=0
        "$BIN" send --timeout 5 "$SOCK_S" "$T/msg.txt" >/dev/null 2>&1 || rc=$?
        echo "$rc" >>"$T/send.codes"
        sleep "$(awk -v r="$SOAK_RATE" 'BEGIN { printf "%.3f", 1 / r }')"
    done
) </dev/null >/dev/null 2>&1 &
pids+=("$!")
# Inbound: the console publishes at SOAK_RATE, one mosquitto_pub each (a
# long-lived `mosquitto_pub -l` would need restarting with the broker).
(
    i=0
    while :; do
        mosquitto_pub -h localhost -p "$PORT" --cafile "$T/ca.pem" --cert "$T/console.pem" \
            --key "$T/console.key" -V mqttv5 -i soak-console -t soak/in -q 1 -m "in $i" ||
            echo "$i" >>"$T/pub.failed"
        i=$((i + 1))
        sleep "$(awk -v r="$SOAK_RATE" 'BEGIN { printf "%.3f", 1 / r }')"
    done
) </dev/null >/dev/null 2>&1 &
pids+=("$!")

clk=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$daemon/stat"; }
field() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$daemon/status"; }
count() { grep -c "$1" "$2" 2>/dev/null || true; }

printf '%6s %9s %9s %4s %9s %8s %8s %8s %8s\n' min "RSS kB" "HWM kB" fds "CPU ms/m" "send ok" "send 3" "send 1" received
start=$(now_ms)
last_cpu=$(cpu_ticks)
next_restart=$((start + SOAK_RESTART * 1000))
minute=0
while [ $(($(now_ms) - start)) -lt $((SOAK_SECS * 1000)) ]; do
    sleep 1
    running "$daemon" || fail "the daemon exited"
    if [ "$(now_ms)" -ge "$next_restart" ]; then
        stop_broker
        sleep 2
        start_broker
        next_restart=$(($(now_ms) + SOAK_RESTART * 1000))
    fi
    if [ $(($(now_ms) - start)) -ge $(((minute + 1) * 60000)) ] || [ $(($(now_ms) - start)) -ge $((SOAK_SECS * 1000)) ]; then
        minute=$((minute + 1))
        cpu=$(cpu_ticks)
        printf '%6d %9s %9s %4d %9d %8d %8d %8d %8d\n' "$minute" "$(field VmRSS)" "$(field VmHWM)" \
            "$(find "/proc/$daemon/fd" -mindepth 1 | wc -l)" $(((cpu - last_cpu) * 1000 / clk)) \
            "$(count '^0$' "$T/send.codes")" "$(count '^3$' "$T/send.codes")" \
            "$(count '^1$' "$T/send.codes")" "$(count '^Receive ' "$T/recv.out")"
        last_cpu=$cpu
    fi
done
running "$daemon" || fail "the daemon exited"
[ "$(count '^0$' "$T/send.codes")" -gt 0 ] || fail "no send was confirmed"
[ "$(count '^Receive ' "$T/recv.out")" -gt 0 ] || fail "nothing was received"
ok=1
echo "soak: OK after ${SOAK_SECS}s ($(($(count 'Mqtt5 Client connection succeed' "$T/pubsub.out"))) connections)"
