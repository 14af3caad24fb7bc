#!/usr/bin/env bash
# `make bench` (issue #4): iotbox beside mosquitto_pub/mosquitto_sub, measured
# in the same run against the same local mosquitto (mutual TLS, RSA 2048), one
# Markdown table on stdout and in target/bench.md. Its "budget" column holds
# iotbox's targets: a static binary of at most 1.5 MiB (x86_64, armv7) or
# 2 MiB (aarch64); at most 2 MiB resident while connected and idle; no
# wake-up but the keep-alive ping; subscribed no later, and publishing at
# least as fast with no more CPU, than the mosquitto clients; one message
# from a shell script at least 5 times faster, and with less CPU, than
# mosquitto_pub -m.
#
#   scripts/bench.sh                  the full run (3 to 5 minutes)
#   BENCH_QUICK=1 scripts/bench.sh    one repetition of the long figures, a
#                                     10 s idle window, 3 recovery runs
#                                     (about 1 minute)
#
# The spool (every daemon has its --spool_dir in the work directory): the
# rate from the publish socket into it with the broker out of reach (at
# least 20,000 messages/s of 100 B), the syncs per 1,000 messages (at most
# 2) and the bytes written per message (at most 300), beside the same with
# --spool_dir none; the recovery of a full spool (64 MiB) by `iotbox spool`
# and at the daemon's start (at most 1 s); the resident memory with the
# spool on (at most 3 MiB, connected and idle).
#
# The local MQTT endpoint (part two), against what a device would run
# instead, a second mosquitto bridged to the broker: the same
# `mosquitto_pub -l` QoS 1 through either reaches the broker at least 1.2
# times as fast; the daemon's RSS under that load at most 0.25 times the
# bridge's; at most 3 MiB resident with the spool on and 10 local MQTT
# clients connected and idle; the static x86_64 binary, everything in, at
# most 2 MiB. Every daemon gets its own --local_socket in the work
# directory, never the default /tmp/iotbox_mqtt.
#
# Environment:
#   BENCH_QUICK=1        fewer repetitions and shorter windows (see above)
#   BENCH_MESSAGES=N     messages per throughput run (default 20000)
#   BENCH_LAT_MESSAGES=N messages per latency run (default 1000)
#   BENCH_CONC=K         publish-socket connections in flight (default 16)
#   BENCH_SPOOL_MESSAGES=N  messages per publish socket → spool run (default
#                        20000; the --spool_dir none runs keep them all in
#                        memory, which holds 4 MiB)
#   BENCH_SPOOL_CONC_HIGH=K connections in flight of the "for scale" spool
#                        runs (default 256)
#   BENCH_SPOOL_SIZE=B   the full spool whose recovery is timed (default
#                        67108864, the daemon's default --spool_size)
#   BENCH_TIMEOUT=S      deadline of every single wait (default 60)
#   BENCH_OUT=FILE       where the table goes too (default target/bench.md)
#   IOTBOX_BIN=PATH      measure that binary instead of building the static one
#   CARGO_TARGET_DIR     where cargo builds (default target/): the static
#                        binary and loadgen (in its loadgen/) are looked for
#                        there (ARM builds still in target/, where
#                        scripts/pi-build.sh and cross-check.sh put them)
#   KEEP=1               keep the work directory (it is kept on failure anyway)
#   CARGO                cargo to use (default cargo)
#
# What it does: installs mosquitto and its clients if missing (scripts/deps.sh
# test), builds the static x86_64 musl binary and the load generator
# (bench/loadgen, a crate of its own on top of the iotbox library), makes a
# throw-away PKI (scripts/pki.sh), starts mosquitto 2.0.x on 127.0.0.1 and
# a free port, then measures (each method is described in the "How" section of
# target/bench.md). Every wait has a deadline; a step that fails says which
# and shows the logs. Everything it starts is stopped by PID on exit. The
# readings of /proc, the medians, ranges and ratios and the table itself are
# loadgen's (proc, stats, table); this script runs the steps and records the
# samples. Nothing is asserted about the numbers: the "met?" column only
# compares them with the budgets. Exit 0 when every measurement was taken.
set -Eeuo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
QUICK=${BENCH_QUICK:-0}
MSGS=${BENCH_MESSAGES:-20000}
LAT_MSGS=${BENCH_LAT_MESSAGES:-1000}
CONC=${BENCH_CONC:-16}
TIMEOUT=${BENCH_TIMEOUT:-60}
OUT=${BENCH_OUT:-target/bench.md}
SIZE=100
KEEPALIVE=60
SPOOL_MSGS=${BENCH_SPOOL_MESSAGES:-20000}
SPOOL_CONC_HI=${BENCH_SPOOL_CONC_HIGH:-256}
SPOOL_SIZE=${BENCH_SPOOL_SIZE:-67108864}
# Runs of the spool figures: a run takes a second or two.
if [ "$QUICK" = 1 ]; then
    RUNS=1 STARTS=10 ONESHOTS=10 IDLE_SECS=10 SPOOL_RUNS=1 REC_RUNS=3
else
    RUNS=3 STARTS=15 ONESHOTS=15 IDLE_SECS=30 SPOOL_RUNS=5 REC_RUNS=9
fi
STATIC_TARGET=x86_64-unknown-linux-musl
# Where cargo puts what it builds: the binaries are looked for there.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac

# --- output, cleanup, waits -------------------------------------------------

say() { printf 'bench: %s\n' "$*" >&2; }
step() { printf '\n== bench: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

T=""
ok=0
# The spool steps' daemon of the moment, whose logs a failure shows (and
# step 11's bridge).
LAST_DAEMON="" LAST_BRIDGE=""
failed=0
# Where set -e stopped us, for the message in cleanup (every failure we
# foresee goes through fail, which says what happened).
err_line="" err_cmd=""
trap 'err_line=$LINENO err_cmd=$BASH_COMMAND' ERR
cleanup() {
    local rc=$?
    if [ "$rc" != 0 ] && [ "$failed" = 0 ] && [ "$rc" -lt 128 ]; then
        printf '\nbench: FAILED: exit status %s at line %s: %s\n' "$rc" "${err_line:-?}" "${err_cmd:-?}" >&2
    fi
    stop_started
    drop_tmp bench "$T" "$ok"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    failed=1
    printf '\nbench: FAILED: %s\n' "$*" >&2
    local f
    for f in broker.log d1.out d1.err d0.out d0.err idle-sub.err ${LAST_DAEMON:+$LAST_DAEMON.out $LAST_DAEMON.err} ${LAST_BRIDGE:+$LAST_BRIDGE.log}; do
        if [ -n "$T" ] && [ -s "$T/$f" ]; then
            printf -- '--- last lines of %s:\n' "$f" >&2
            tail -n 15 "$T/$f" | sed 's/^/    /' >&2
        fi
    done
    exit 1
}

now_ms() { date +%s%3N; }
# wait_until SECONDS WHAT CMD...: poll CMD (every 10 ms) until it succeeds.
wait_until() {
    local limit=$1 what=$2 end
    shift 2
    end=$(($(now_ms) + limit * 1000))
    until "$@"; do
        [ "$(now_ms)" -lt "$end" ] || fail "no $what within ${limit}s"
        sleep 0.01
    done
}
running() { kill -0 "$1" 2>/dev/null; }
not_running() { ! running "$1"; }
has_line() { [ -f "$2" ] && grep -qF -- "$1" "$2"; }
# wait_exit SECONDS PID WHAT: wait for a background child to end; its status.
wait_exit() {
    local limit=$1 pid=$2 what=$3 rc=0
    wait_until "$limit" "$what" not_running "$pid"
    wait "$pid" || rc=$?
    forget "$pid"
    return "$rc"
}
# alive_line PID FILE TEXT: FILE has TEXT; fails at once if PID died first.
alive_line() {
    has_line "$3" "$2" && return 0
    running "$1" || fail "process $1 exited before printing '$3' (see $2)"
    return 1
}

# --- numbers ------------------------------------------------------------------

# key=value from loadgen's output: kv KEY TEXT
kv() { sed -n "s/^$1=//p" <<<"$2" | head -n1; }
# Figures of a running process, from loadgen proc (the same readings loadgen
# takes of the processes it starts): proc_kv PID KEY.
proc_kv() { kv "$2" "$("$LG" proc --pid "$1")"; }
# CPU time in ns: the sum over its threads of the first field of
# /proc/PID/task/*/schedstat (time on CPU, ns precise).
cpu_ns() { proc_kv "$1" cpu_ns; }
# status_kb PID VmRSS|VmHWM: in kB.
status_kb() {
    case $2 in
        VmRSS) proc_kv "$1" rss_kb ;;
        VmHWM) proc_kv "$1" hwm_kb ;;
    esac
}
# Voluntary (and involuntary) context switches of all threads of PID.
vcsw() { proc_kv "$1" vcsw; }
nvcsw() { proc_kv "$1" nvcsw; }
# show DIV DECIMALS UNIT VALUES...: "median UNIT (min–max, n=N)" of
# VALUES / DIV; just the value for one. The table's figures are computed the
# same way, by loadgen table.
show() { "$LG" stats --div "$1" --dec "$2" --unit "$3" -- "${@:4}"; }
# ns_of SECS.FRACTION (mosquitto_sub's %U): nanoseconds, in integers.
ns_of() {
    local sec=${1%.*} frac=${1#*.}000000000
    echo $((sec * 1000000000 + 10#${frac:0:9}))
}

# --- 0. tools and binaries ------------------------------------------------------

step "0. tools, the static binary and the load generator"
if [ -x scripts/deps.sh ]; then
    scripts/deps.sh test >&2
    [ -n "${IOTBOX_BIN:-}" ] || scripts/deps.sh static >&2
else
    need=()
    for c in mosquitto_pub mosquitto_sub; do command -v "$c" >/dev/null || need+=("$c"); done
    [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
    if [ ${#need[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || fail "missing ${need[*]}: run as root: apt-get install -y mosquitto mosquitto-clients"
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            mosquitto mosquitto-clients >&2 || fail "apt-get install mosquitto mosquitto-clients failed"
    fi
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || fail "no mosquitto broker (apt-get install mosquitto)"
MPUB=$(command -v mosquitto_pub) || fail "no mosquitto_pub (apt-get install mosquitto-clients)"
MSUB=$(command -v mosquitto_sub) || fail "no mosquitto_sub (apt-get install mosquitto-clients)"

build_log=$(mktemp)
if [ -n "${IOTBOX_BIN:-}" ]; then
    BIN=$IOTBOX_BIN
else
    say "cargo build --release --target $STATIC_TARGET"
    "$CARGO" build --release --target "$STATIC_TARGET" >"$build_log" 2>&1 ||
        { tail -n 30 "$build_log" >&2; fail "building the static binary failed (output above)"; }
    BIN=$TARGET_DIR/$STATIC_TARGET/release/iotbox
fi
say "cargo build --release --manifest-path bench/loadgen/Cargo.toml"
CARGO_TARGET_DIR=$TARGET_DIR/loadgen "$CARGO" build --release --manifest-path "$ROOT/bench/loadgen/Cargo.toml" >"$build_log" 2>&1 ||
    { tail -n 30 "$build_log" >&2; fail "building bench/loadgen failed (output above)"; }
rm -f "$build_log"
[ -x "$BIN" ] || fail "no executable at $BIN"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
LG=$TARGET_DIR/loadgen/release/loadgen
[ -x "$LG" ] || fail "no load generator at $LG"
IOTBOX_VERSION=$("$BIN" --version 2>&1 | head -n1) || fail "$BIN --version failed: $IOTBOX_VERSION"
MOSQ_VERSION=$({ "$MOSQUITTO" -h 2>/dev/null || true; } | head -n1 | sed "s/^mosquitto version //")
say "$BIN: $IOTBOX_VERSION; mosquitto $MOSQ_VERSION"

T=$(mktemp -d "${TMPDIR:-/tmp}/iotbox-bench.XXXXXX")
chmod 0700 "$T"

# --- 1. PKI: RSA 2048, X.509 v3 ----------------------------------------------

step "1. a throw-away PKI (scripts/pki.sh, RSA 2048)"
# ca.pem, server.pem and client.pem (iotbox's and the mosquitto clients'),
# with their keys.
CARGO=$CARGO "$ROOT/scripts/pki.sh" "$T" client || fail "scripts/pki.sh could not make the PKI"

# --- 2. the broker ------------------------------------------------------------

# mosquitto_common_conf: the settings of every mosquitto the bench starts
# (the broker and the bridge), so that the two log and queue alike.
mosquitto_common_conf() {
    cat <<EOF
# As root, mosquitto would switch to the user 'mosquitto', which cannot read
# these files; 'root' keeps it (no effect otherwise).
user root
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
connection_messages true
set_tcp_nodelay true
# QoS 0/1 messages for a slow subscriber are queued, not dropped (default 1000).
max_queued_messages 1000000
EOF
}

step "2. mosquitto with mutual TLS on 127.0.0.1"
BLOG=$T/broker.log
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
BROKER=""
for _ in 1 2 3 4 5; do
    PORT=$("$LG" freeport) || fail "loadgen freeport failed"
    # Log levels without per-packet debug lines (they would cost the broker
    # more than the clients); 'subscribe' and the connection messages are
    # what the readiness waits look for.
    {
        echo "# written by scripts/bench.sh"
        mosquitto_common_conf
        cat <<EOF
listener $PORT 127.0.0.1
cafile $T/ca.pem
certfile $T/server.pem
keyfile $T/server.key
require_certificate true
use_identity_as_username false
EOF
    } >"$T/mosquitto.conf"
    : >"$BLOG"
    "$MOSQUITTO" -c "$T/mosquitto.conf" 2>>"$BLOG" >/dev/null &
    BROKER=$!
    pids+=("$BROKER")
    end=$(($(now_ms) + TIMEOUT * 1000))
    while running "$BROKER" && ! port_open "$PORT" && [ "$(now_ms)" -lt "$end" ]; do sleep 0.01; done
    if running "$BROKER" && port_open "$PORT"; then break; fi
    if running "$BROKER"; then fail "mosquitto did not open port $PORT within ${TIMEOUT}s"; fi
    wait "$BROKER" 2>/dev/null || true
    forget "$BROKER"
    grep -q "Address already in use" "$BLOG" || fail "mosquitto did not start"
    say "port $PORT was taken meanwhile; another one"
    BROKER=""
done
[ -n "$BROKER" ] || fail "mosquitto did not start (5 ports tried)"
say "mosquitto $MOSQ_VERSION on 127.0.0.1:$PORT (pid $BROKER)"

# The mosquitto clients' common arguments: an array, and one string for
# loadgen's --sub/--pub (which split on whitespace; the paths have none).
MCA=(-h 127.0.0.1 -p "$PORT" --cafile "$T/ca.pem" --cert "$T/client.pem" --key "$T/client.key" -V mqttv5)
MC="${MCA[*]}"
# sub_ready ID QOS TOPIC: the broker's 'subscribe' log line for that client.
sub_ready() { grep -qF -- ": $1 $2 $3" "$BLOG"; }

# Every daemon keeps its spool in the work directory, never in the default
# /var/lib/iotbox (a real one's, maybe with messages in it): one directory
# each, made here (0700, as make install does). Likewise its local MQTT
# endpoint: --local_socket "$T/NAME.mqtt", never the default /tmp/iotbox_mqtt
# (an installed daemon's, or another daemon's of this run). It listens as in
# the product, unused except in step 11.
SPOOLS=$T/spool
mkdir -m 0700 "$SPOOLS"
# What the spools sit on: fdatasync on tmpfs costs nothing, on a disk it is
# the price of durability.
SPOOL_FS=$(findmnt -no FSTYPE -T "$SPOOLS" 2>/dev/null || stat -f -c %T "$SPOOLS" 2>/dev/null || echo '?')
SPOOL_DEV=$(df --output=source "$SPOOLS" 2>/dev/null | tail -n1 || echo '?')
# spool_dir NAME: the spool directory for daemon NAME, made when missing.
spool_dir() {
    [ -d "$SPOOLS/$1" ] || mkdir -m 0700 "$SPOOLS/$1"
    echo "$SPOOLS/$1"
}

# start_daemon NAME QOS: iotbox pubsub in the background, until subscribed;
# its PID in DAEMON_PID (not echoed: a $(...) subshell would lose track of it).
start_daemon() {
    local name=$1 qos=$2 pid dir
    dir=$(spool_dir "$name")
    "$BIN" pubsub --endpoint 127.0.0.1 --port "$PORT" --cert "$T/client.pem" --key "$T/client.key" \
        --ca_file "$T/ca.pem" --client_id "bench-$name" --topic "bench/in/$name" \
        --pub_socket "$T/$name.sock" --sub_socket "$T/$name.rmsg" --spool_dir "$dir" \
        --local_socket "$T/$name.mqtt" \
        --qos "$qos" --keep_alive "$KEEPALIVE" >"$T/$name.out" 2>"$T/$name.err" &
    pid=$!
    pids+=("$pid")
    wait_until "$TIMEOUT" "'Subscription Success.' from iotbox pubsub ($name)" \
        alive_line "$pid" "$T/$name.out" "Subscription Success."
    DAEMON_PID=$pid
}
# stop_daemon PID: SIGTERM, wait for it.
stop_daemon() {
    kill -TERM "$1" 2>/dev/null || true
    wait_exit 10 "$1" "exit of iotbox pubsub after SIGTERM" || true
}

RAW=$T/raw.txt
raw() { printf '%s\n' "$*" >>"$RAW"; }
: >"$RAW"
raw "spool directories: $SPOOLS, on $SPOOL_DEV ($SPOOL_FS; $(findmnt -no OPTIONS -T "$SPOOLS" 2>/dev/null || echo 'mount options unknown'))"

# --- 3. binary sizes ------------------------------------------------------------

step "3. binary sizes"
# stripped SIZE of FILE: strip a copy when the file still has symbols.
stripped_size() {
    local f=$1 c
    c=$T/strip.$$
    cp "$f" "$c"
    if command -v strip >/dev/null 2>&1; then strip "$c" 2>/dev/null || true; fi
    stat -c %s "$c"
    rm -f "$c"
}
SIZE_X86=$(stripped_size "$BIN")
raw "size x86_64 $BIN: $SIZE_X86 bytes ($(file -b "$BIN" 2>/dev/null | sed 's/, BuildID[^,]*//' || true))"
# lib_paths PROG path|name: the libraries PROG loads (ldd), libc left out.
lib_paths() {
    local name arrow path rest
    { ldd "$1" || true; } | while read -r name arrow path rest; do
        # "NAME => /PATH (ADDRESS)"; the vdso and the loader have no "=>".
        [ "$arrow" = "=>" ] || continue
        case $path in /*) ;; *) continue ;; esac
        case $name in libc.so*) continue ;; esac
        if [ "$2" = path ]; then echo "$path"; else echo "$name"; fi
    done
}
# The mosquitto clients are dynamic: the program plus its libraries (not libc).
client_size() {
    local prog=$1 total libs
    total=$(stat -c %s "$prog")
    libs=$(lib_paths "$prog" path)
    for l in $libs; do total=$((total + $(stat -L -c %s "$l"))); done
    echo "$total"
}
SIZE_MSUB_PROG=$(stat -c %s "$MSUB")
SIZE_MSUB=$(client_size "$MSUB")
raw "size mosquitto_sub: program $SIZE_MSUB_PROG bytes, with libraries except libc $SIZE_MSUB bytes: $(lib_paths "$MSUB" name | tr '\n' ' ')"
# ARM builds, when present: musl ones first (what users get), else the
# glibc-static ones of make cross-check.
arm_bin() { # ARCH-PREFIX
    local f
    for f in target/"$1"*-musl*/release/iotbox target/cross/"$1"*-musl*/release/iotbox \
        target/cross/"$1"*/release/iotbox; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 0
}
ARMV7_BIN=$(arm_bin armv7)
AARCH64_BIN=$(arm_bin aarch64)
SIZE_ARMV7=""
SIZE_AARCH64=""
# Not rebuilt here: the date tells whether a build is older than the sources.
built() { date -u -r "$1" '+%Y-%m-%d %H:%M UTC'; }
[ -z "$ARMV7_BIN" ] || { SIZE_ARMV7=$(stat -c %s "$ARMV7_BIN"); raw "size armv7 $ARMV7_BIN: $SIZE_ARMV7 bytes, built $(built "$ARMV7_BIN")"; }
[ -z "$AARCH64_BIN" ] || { SIZE_AARCH64=$(stat -c %s "$AARCH64_BIN"); raw "size aarch64 $AARCH64_BIN: $SIZE_AARCH64 bytes, built $(built "$AARCH64_BIN")"; }
HEAD_DATE=$(TZ=UTC git log -1 --format=%cd --date=format-local:'%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?')

# --- 4. connected and idle: RSS, wake-ups ---------------------------------------

step "4. connected and idle: RSS and wake-ups (${RUNS} x ${IDLE_SECS}s)"
start_daemon d1 1
D1=$DAEMON_PID
say "iotbox pubsub d1 (QoS 1) subscribed, pid $D1"
"$MSUB" "${MCA[@]}" -i bench-idle-sub -k "$KEEPALIVE" -q 1 -t bench/idle >/dev/null 2>"$T/idle-sub.err" &
ISUB=$!
pids+=("$ISUB")
wait_until "$TIMEOUT" "SUBACK for the idle mosquitto_sub" sub_ready bench-idle-sub 1 bench/idle
running "$ISUB" || fail "the idle mosquitto_sub exited"
# Let both finish whatever follows the subscription before reading memory.
sleep 2
RSS_D_IDLE=$(status_kb "$D1" VmRSS)
HWM_D_IDLE=$(status_kb "$D1" VmHWM)
RSS_S_IDLE=$(status_kb "$ISUB" VmRSS)
HWM_S_IDLE=$(status_kb "$ISUB" VmHWM)
raw "rss idle: iotbox VmRSS $RSS_D_IDLE kB VmHWM $HWM_D_IDLE kB threads $(find /proc/"$D1"/task -mindepth 1 -maxdepth 1 | wc -l); mosquitto_sub VmRSS $RSS_S_IDLE kB VmHWM $HWM_S_IDLE kB threads $(find /proc/"$ISUB"/task -mindepth 1 -maxdepth 1 | wc -l)"
WAKE_D=() WAKE_S=()
for r in $(seq 1 "$RUNS"); do
    d0=$(vcsw "$D1") s0=$(vcsw "$ISUB") dn0=$(nvcsw "$D1") sn0=$(nvcsw "$ISUB")
    sleep "$IDLE_SECS"
    running "$D1" || fail "iotbox pubsub d1 died while idle"
    running "$ISUB" || fail "the idle mosquitto_sub died"
    d1=$(vcsw "$D1") s1=$(vcsw "$ISUB") dn1=$(nvcsw "$D1") sn1=$(nvcsw "$ISUB")
    WAKE_D+=($((d1 - d0)))
    WAKE_S+=($((s1 - s0)))
    raw "idle window $r (${IDLE_SECS}s): iotbox voluntary $((d1 - d0)) involuntary $((dn1 - dn0)); mosquitto_sub voluntary $((s1 - s0)) involuntary $((sn1 - sn0))"
    say "idle window $r: iotbox $((d1 - d0)), mosquitto_sub $((s1 - s0)) voluntary switches"
done
kill -TERM "$ISUB" 2>/dev/null || true
wait_exit 10 "$ISUB" "exit of the idle mosquitto_sub" || true

# --- 5. exec → subscribed -----------------------------------------------------

step "5. exec → subscribed, ${STARTS} runs each, interleaved"
# mosquitto_sub's readiness: a retained message on its topic. The broker
# sends it right after the SUBACK; mosquitto_sub prints it (and flushes):
# the first stdout line is the moment it is subscribed, as 'Subscription
# Success.' is iotbox's.
"$LG" run --timeout "$TIMEOUT" -- "$MPUB" "${MCA[@]}" -i bench-retain -q 1 -r -t bench/ready -m ready >/dev/null ||
    fail "could not publish the retained readiness message"
START_D=() START_S=() SCPU_D=() SCPU_S=()
# One spool directory for all starts, as on a device that restarts: the
# runs are sequential (loadgen waits for each exit), so its lock is free.
ST_SPOOL=$(spool_dir st)
start_iotbox() {
    local i=$1 o
    o=$("$LG" ready --timeout "$TIMEOUT" --line "Subscription Success." -- \
        "$BIN" pubsub --endpoint 127.0.0.1 --port "$PORT" --cert "$T/client.pem" --key "$T/client.key" \
        --ca_file "$T/ca.pem" --client_id "bench-st$i" --topic "bench/in/st$i" \
        --pub_socket "$T/st$i.sock" --sub_socket "$T/st.rmsg" --spool_dir "$ST_SPOOL" \
        --local_socket "$T/st$i.mqtt") || fail "iotbox pubsub start $i"
    START_D+=("$(kv ready_ns "$o")")
    SCPU_D+=("$(kv cpu_ready_ns "$o")")
}
start_msub() {
    local i=$1 o
    o=$("$LG" ready --timeout "$TIMEOUT" --line ready -- \
        "$MSUB" "${MCA[@]}" -i "bench-ms$i" -q 1 -t bench/ready) || fail "mosquitto_sub start $i"
    START_S+=("$(kv ready_ns "$o")")
    SCPU_S+=("$(kv cpu_ready_ns "$o")")
}
for i in $(seq 1 "$STARTS"); do
    if [ $((i % 2)) = 1 ]; then start_iotbox "$i"; start_msub "$i"; else start_msub "$i"; start_iotbox "$i"; fi
done
raw "exec→subscribed ns, iotbox: ${START_D[*]}"
raw "exec→subscribed ns, mosquitto_sub: ${START_S[*]}"
raw "CPU exec→subscribed ns, iotbox: ${SCPU_D[*]}"
raw "CPU exec→subscribed ns, mosquitto_sub: ${SCPU_S[*]}"
say "exec → subscribed: iotbox $(show 1e6 2 ' ms' "${START_D[@]}"), mosquitto_sub $(show 1e6 2 ' ms' "${START_S[@]}")"

# --- 6. one message from a shell script ---------------------------------------

step "6. one message from a shell script, ${ONESHOTS} runs each, interleaved"
PAY=$(printf '%0*d' "$SIZE" 0)
printf 'bench/oneshot\n%s' "$PAY" >"$T/oneshot.msg"
OS_D=() OS_DC=() OS_S=() OS_SC=() OS_DAEMON=()
oneshot_iotbox() {
    local o c0 c1
    c0=$(cpu_ns "$D1")
    o=$("$LG" run --timeout "$TIMEOUT" --expect "send message to" -- "$BIN" send "$T/d1.sock" "$T/oneshot.msg") ||
        fail "iotbox send"
    c1=$(cpu_ns "$D1")
    OS_D+=("$(kv wall_ns "$o")")
    OS_DC+=("$(kv cpu_ns "$o")")
    OS_DAEMON+=($((c1 - c0)))
}
oneshot_mpub() {
    local i=$1 o
    o=$("$LG" run --timeout "$TIMEOUT" -- "$MPUB" "${MCA[@]}" -i "bench-os$i" -q 1 -t bench/oneshot -m "$PAY") ||
        fail "mosquitto_pub -m"
    OS_S+=("$(kv wall_ns "$o")")
    OS_SC+=("$(kv cpu_ns "$o")")
}
for i in $(seq 1 "$ONESHOTS"); do
    if [ $((i % 2)) = 1 ]; then oneshot_iotbox; oneshot_mpub "$i"; else oneshot_mpub "$i"; oneshot_iotbox; fi
done
raw "one message, iotbox send wall ns: ${OS_D[*]}"
raw "one message, iotbox send CPU ns: ${OS_DC[*]}"
raw "one message, daemon CPU ns for it: ${OS_DAEMON[*]}"
raw "one message, mosquitto_pub -m wall ns: ${OS_S[*]}"
raw "one message, mosquitto_pub -m CPU ns: ${OS_SC[*]}"
OS_DT=()
for k in "${!OS_DC[@]}"; do OS_DT+=($((OS_DC[k] + OS_DAEMON[k]))); done
say "one message: iotbox send $(show 1e6 2 ' ms' "${OS_D[@]}"), mosquitto_pub -m $(show 1e6 2 ' ms' "${OS_S[@]}")"

# --- 7. throughput and CPU per message -------------------------------------------

step "7. throughput, ${MSGS} x ${SIZE} B, QoS 1 and 0, ${RUNS} runs each"
start_daemon d0 0
D0=$DAEMON_PID
say "iotbox pubsub d0 (QoS 0) subscribed, pid $D0"
declare -A TP CPUK BRK
# tput WHO QOS RUN [CONC]: one run; appends to TP[WHO$QOS] (msg/s),
# CPUK[WHO$QOS] (CPU ns per 1000 messages), BRK (broker CPU per 1000); with
# CONC (iotbox only) to TP[WHO$QOS-cCONC] etc.
tput() {
    local who=$1 q=$2 r=$3 conc=${4:-} id topic spid o first last n dpid c0 c1 b0 b1 cpu el key mps
    key=$who$q${conc:+-c$conc}
    id=t-$who-q$q${conc:+-c$conc}-r$r
    topic=bench/t/$who/q$q/r$r
    "$MSUB" "${MCA[@]}" -i "sub-$id" -q "$q" -C "$MSGS" -F %U -t "$topic" >"$T/$id.arr" 2>"$T/$id.suberr" &
    spid=$!
    pids+=("$spid")
    wait_until "$TIMEOUT" "SUBACK for the counting mosquitto_sub ($id)" sub_ready "sub-$id" "$q" "$topic"
    if [ "$q" = 1 ]; then dpid=$D1; else dpid=$D0; fi
    b0=$(cpu_ns "$BROKER")
    if [ "$who" = iotbox ]; then
        c0=$(cpu_ns "$dpid")
        o=$("$LG" pub --timeout "$TIMEOUT" --socket "$T/d$q.sock" --topic "$topic" \
            --count "$MSGS" --size "$SIZE" --conc "${conc:-$CONC}") || fail "loadgen pub ($id)"
    else
        o=$("$LG" pipe --timeout "$TIMEOUT" --log "$BLOG" --ready "as pub-$id (" --count "$MSGS" --size "$SIZE" -- \
            "$MPUB" "${MCA[@]}" -i "pub-$id" -q "$q" -t "$topic" -l) || fail "loadgen pipe mosquitto_pub -l ($id)"
    fi
    wait_exit "$TIMEOUT" "$spid" "all $MSGS messages at the subscriber ($id)" ||
        fail "the counting mosquitto_sub failed ($id): $(cat "$T/$id.suberr")"
    b1=$(cpu_ns "$BROKER")
    n=$(wc -l <"$T/$id.arr")
    [ "$n" -eq "$MSGS" ] || fail "$id: the subscriber got $n of $MSGS messages"
    first=$(kv first_send_ns "$o")
    last=$(tail -n1 "$T/$id.arr")
    if [ "$who" = iotbox ]; then
        c1=$(cpu_ns "$dpid")
        cpu=$((c1 - c0))
    else
        cpu=$(kv cpu_run_ns "$o")
    fi
    el=$(($(ns_of "$last") - first))
    [ "$el" -gt 0 ] || fail "$id: the last arrival ($last) is not after the first send ($first ns)"
    mps=$(((MSGS * 1000000000 + el / 2) / el))
    TP[$key]+="$mps "
    CPUK[$key]+="$((cpu * 1000 / MSGS)) "
    BRK[$key]+="$(((b1 - b0) * 1000 / MSGS)) "
    raw "throughput $id: first send → last arrival $((el / 1000)) µs, $mps msg/s; publisher CPU $((cpu / 1000)) µs; broker CPU $(((b1 - b0) / 1000)) µs; loadgen: $(tr '\n' ' ' <<<"$o")"
    say "$id: $mps msg/s; publisher CPU $(show 1e6 2 '' $((cpu * 1000 / MSGS))) ms per 1000 messages"
}
for r in $(seq 1 "$RUNS"); do
    for q in 1 0; do
        if [ $((r % 2)) = 1 ]; then tput iotbox "$q" "$r"; tput mosq "$q" "$r"; else tput mosq "$q" "$r"; tput iotbox "$q" "$r"; fi
    done
done
# For scale: the same through the socket with one client at a time.
for r in $(seq 1 "$RUNS"); do tput iotbox 1 "$r" 1; done
RSS_D_AFTER=$(status_kb "$D1" VmRSS)
HWM_D_AFTER=$(status_kb "$D1" VmHWM)
RSS_D0_AFTER=$(status_kb "$D0" VmRSS)
HWM_D0_AFTER=$(status_kb "$D0" VmHWM)
raw "rss after throughput: iotbox d1 (QoS 1) VmRSS $RSS_D_AFTER kB VmHWM $HWM_D_AFTER kB; d0 (QoS 0) VmRSS $RSS_D0_AFTER kB VmHWM $HWM_D0_AFTER kB"
stop_daemon "$D0"
# mosquitto_pub -l's memory during its runs (read by loadgen once all lines
# were written).
MPUB_HWM=$(grep -o 'hwm_kb=[0-9]*' "$RAW" | sed 's/hwm_kb=//' | sort -n | tail -n1)

# --- 8. latency ---------------------------------------------------------------

step "8. latency, ${LAT_MSGS} messages one at a time, QoS 1, ${RUNS} runs each"
LAT50_D=() LAT99_D=() LAT50_S=() LAT99_S=()
lat_run() {
    local who=$1 r=$2 id topic o
    id=l-$who-r$r
    topic=bench/l/$who/r$r
    if [ "$who" = iotbox ]; then
        o=$("$LG" latency --timeout "$TIMEOUT" --count "$LAT_MSGS" --size "$SIZE" \
            --sub "$MSUB $MC -i sub-$id -q 1 -t $topic -F %U,%p" \
            --socket "$T/d1.sock" --topic "$topic") || fail "loadgen latency ($id)"
        LAT50_D+=("$(kv p50_ns "$o")")
        LAT99_D+=("$(kv p99_ns "$o")")
    else
        o=$("$LG" latency --timeout "$TIMEOUT" --count "$LAT_MSGS" --size "$SIZE" \
            --sub "$MSUB $MC -i sub-$id -q 1 -t $topic -F %U,%p" \
            --pub "$MPUB $MC -i pub-$id -q 1 -t $topic -l") || fail "loadgen latency ($id)"
        LAT50_S+=("$(kv p50_ns "$o")")
        LAT99_S+=("$(kv p99_ns "$o")")
    fi
    raw "latency $id: $(tr '\n' ' ' <<<"$o")"
}
for r in $(seq 1 "$RUNS"); do
    if [ $((r % 2)) = 1 ]; then lat_run iotbox "$r"; lat_run mosq "$r"; else lat_run mosq "$r"; lat_run iotbox "$r"; fi
done
say "latency p50: iotbox $(show 1e3 0 ' µs' "${LAT50_D[@]}"), mosquitto_pub -l $(show 1e3 0 ' µs' "${LAT50_S[@]}")"

running "$D1" || fail "iotbox pubsub d1 died"
stop_daemon "$D1"

# --- 9. publish socket → spool, broker out of reach ---------------------------

step "9. publish socket → spool, ${SPOOL_MSGS} x ${SIZE} B, broker out of reach, ${SPOOL_RUNS} runs each (spool on, --spool_dir none)"
# The daemon is pointed at a port where nothing listens: every connection
# attempt is refused and retried, so each message is answered QUEUED right
# after the sync of its loop turn. What is timed is the publish socket and
# the spool, nothing of TLS or the broker.
SP_TOPIC=bench/spool
# --spool_dir none keeps them in memory, up to 4 MiB; past that it would
# block (stop taking clients) and the run would time out.
SP_RECORD=$((8 + 19 + ${#SP_TOPIC} + SIZE))
[ $((SPOOL_MSGS * SP_RECORD)) -lt $((4 << 20)) ] ||
    fail "BENCH_SPOOL_MESSAGES=$SPOOL_MSGS: $SPOOL_MSGS records of $SP_RECORD B pass the 4 MiB that --spool_dir none holds; take fewer"
NOPORT=$PORT
while [ "$NOPORT" = "$PORT" ]; do NOPORT=$("$LG" freeport) || fail "loadgen freeport failed"; done
say "nothing listens on 127.0.0.1:$NOPORT (a port that was free a moment ago)"
# start_offline NAME SPOOL_DIR [FLAG...]: iotbox pubsub pointed at NOPORT,
# until it has started (its publish socket is bound before its first line);
# its PID in DAEMON_PID.
start_offline() {
    local name=$1 dir=$2 pid
    shift 2
    LAST_DAEMON=$name
    "$BIN" pubsub --endpoint 127.0.0.1 --port "$NOPORT" --cert "$T/client.pem" --key "$T/client.key" \
        --ca_file "$T/ca.pem" --client_id "bench-$name" --topic "bench/in/$name" \
        --pub_socket "$T/$name.sock" --sub_socket "$T/$name.rmsg" --spool_dir "$dir" \
        --local_socket "$T/$name.mqtt" \
        --keep_alive "$KEEPALIVE" "$@" >"$T/$name.out" 2>"$T/$name.err" &
    pid=$!
    pids+=("$pid")
    wait_until "$TIMEOUT" "'Mqtt5 Client attempting connection...' from iotbox pubsub ($name)" \
        alive_line "$pid" "$T/$name.out" "Mqtt5 Client attempting connection..."
    [ -S "$T/$name.sock" ] || fail "$name: no publish socket at $T/$name.sock"
    DAEMON_PID=$pid
}
# exit_line NAME: "TAKEN SYNCS BYTES" from the daemon's last line of totals.
exit_line() {
    sed -n 's/.*spool: this run: \([0-9]*\) message(s) taken, \([0-9]*\) sync(s), \([0-9]*\) bytes written.*/\1 \2 \3/p' \
        "$T/$1.err" | tail -n1
}
declare -A SP_TP SP_SYNCK SP_WB SP_WC SP_HWM
# spool_run disk|none RUN [CONC]: one daemon, SPOOL_MSGS messages through its
# publish socket, CONC (default BENCH_CONC) connections in flight; appends
# msg/s to SP_TP[MODE] (MODE-cCONC with CONC), syncs per million messages to
# SP_SYNCK, write_bytes and exit-line bytes per message to SP_WB and SP_WC,
# VmHWM to SP_HWM.
spool_run() {
    local mode=$1 r=$2 conc=${3:-$CONC} key name dir pid o p0 p1 line taken syncs written el mps wb=""
    key=$mode${3:+-c$conc}
    name=sp-$key-r$r
    # A fresh directory each run, made by the daemon.
    if [ "$mode" = disk ]; then dir=$SPOOLS/$name; else dir=none; fi
    start_offline "$name" "$dir"
    pid=$DAEMON_PID
    p0=$("$LG" proc --pid "$pid")
    o=$("$LG" pub --timeout "$TIMEOUT" --socket "$T/$name.sock" --topic "$SP_TOPIC" \
        --count "$SPOOL_MSGS" --size "$SIZE" --conc "$conc") || fail "loadgen pub ($name)"
    # Before SIGTERM: the exit adds a done mark and a last commit.
    p1=$("$LG" proc --pid "$pid")
    running "$pid" || fail "$name: the daemon died during the run"
    stop_daemon "$pid"
    [ "$(kv queued "$o")" = "$SPOOL_MSGS" ] ||
        fail "$name: $(kv queued "$o") of $SPOOL_MSGS answered QUEUED, $(kv ok "$o") OK: is something listening on port $NOPORT?"
    line=$(exit_line "$name")
    [ -n "$line" ] || fail "$name: no 'spool: this run: ...' line at the daemon's exit (see $T/$name.err)"
    read -r taken syncs written <<<"$line"
    [ "$taken" -ge "$SPOOL_MSGS" ] || fail "$name: the daemon says it took $taken messages, loadgen sent $SPOOL_MSGS"
    el=$(($(kv last_status_ns "$o") - $(kv first_send_ns "$o")))
    [ "$el" -gt 0 ] || fail "$name: the last status is not after the first send"
    mps=$(((SPOOL_MSGS * 1000000000 + el / 2) / el))
    SP_TP[$key]+="$mps "
    SP_SYNCK[$key]+="$((syncs * 1000000 / taken)) "
    SP_WC[$key]+="$((written / taken)) "
    SP_HWM[$key]+="$(kv hwm_kb "$p1") "
    if [ -n "$(kv write_bytes "$p1")" ]; then
        wb=$(($(kv write_bytes "$p1") - $(kv write_bytes "$p0")))
        SP_WB[$key]+="$((wb / taken)) "
    fi
    raw "spool $name: first send → last QUEUED $((el / 1000)) µs, $mps msg/s; exit line: $taken taken, $syncs syncs, $written bytes written; /proc/PID/io over the run: write_bytes ${wb:-unreadable}, wchar $(($(kv wchar "$p1") - $(kv wchar "$p0")))${wb:+, cancelled_write_bytes $(($(kv cancelled_write_bytes "$p1") - $(kv cancelled_write_bytes "$p0")))}; daemon CPU $((($(kv cpu_ns "$p1") - $(kv cpu_ns "$p0")) / 1000)) µs; VmRSS $(kv rss_kb "$p1") kB VmHWM $(kv hwm_kb "$p1") kB; loadgen: $(tr '\n' ' ' <<<"$o")"
    say "$name: $mps msg/s; $syncs syncs for $taken messages; ${wb:+$((wb / taken)) B/message to the block layer, }$((written / taken)) B/message to write(2)"
}
for r in $(seq 1 "$SPOOL_RUNS"); do
    if [ $((r % 2)) = 1 ]; then spool_run disk "$r"; spool_run none "$r"; else spool_run none "$r"; spool_run disk "$r"; fi
done
# For scale: the syncs follow the clients in flight (each waits for its
# status, so one loop turn reads at most that many messages).
for r in $(seq 1 "$SPOOL_RUNS"); do spool_run disk "$r" "$SPOOL_CONC_HI"; done
read -ra tp_disk <<<"${SP_TP[disk]}"
read -ra tp_none <<<"${SP_TP[none]}"
say "publish socket → spool: $(show 1 0 ' msg/s' "${tp_disk[@]}"); --spool_dir none $(show 1 0 ' msg/s' "${tp_none[@]}")"

# --- 10. recovery of a full spool -----------------------------------------------

step "10. recovery of a full spool ($SPOOL_SIZE bytes), ${REC_RUNS} runs each"
FULL=$SPOOLS/full
o=$("$LG" spool-fill --timeout "$TIMEOUT" --dir "$FULL" --bytes "$SPOOL_SIZE" --size "$SIZE" --topic "$SP_TOPIC") ||
    fail "loadgen spool-fill could not fill $FULL"
REC_MSGS=$(kv messages "$o") REC_BYTES=$(kv bytes "$o") REC_SEGS=$(kv segments "$o")
raw "full spool $FULL: $(tr '\n' ' ' <<<"$o")"
say "$FULL: $REC_MSGS messages, $REC_BYTES bytes in $REC_SEGS files"
# spool_applet: one `iotbox spool FULL`, its wall time in ns.
spool_applet() {
    local o
    o=$("$LG" run --timeout "$TIMEOUT" --expect "for the broker: $REC_MSGS message(s)" -- "$BIN" spool "$FULL") ||
        fail "iotbox spool $FULL"
    kv wall_ns "$o"
}
# The page cache warm: a first run, not counted.
spool_applet >/dev/null
REC_WARM=()
for r in $(seq 1 "$REC_RUNS"); do REC_WARM+=("$(spool_applet)"); done
raw "iotbox spool, warm, wall ns: ${REC_WARM[*]}"
# The daemon's own figure: its start reads the same spool ("both directions
# read in T ms"); pointed at NOPORT, it sends nothing, so the spool stays full.
REC_D=() REC_HWM=()
for r in $(seq 1 "$REC_RUNS"); do
    name=rec-r$r
    start_offline "$name" "$FULL" --spool_size "$SPOOL_SIZE"
    pid=$DAEMON_PID
    wait_until "$TIMEOUT" "the daemon's line on the spool it found ($name)" \
        alive_line "$pid" "$T/$name.err" "message(s) for the broker waiting in"
    ms=$(sed -n 's/.*spool: \([0-9]*\) message(s) for the broker waiting in .*read in \([0-9]*\) ms).*/\1 \2/p' "$T/$name.err" | head -n1)
    [ -n "$ms" ] || fail "$name: no 'read in T ms' in its line on the spool (see $T/$name.err)"
    read -r n ms <<<"$ms"
    [ "$n" = "$REC_MSGS" ] || fail "$name: the daemon found $n messages waiting, the spool holds $REC_MSGS"
    REC_D+=("$ms")
    REC_HWM+=("$(status_kb "$pid" VmHWM)")
    stop_daemon "$pid"
done
raw "daemon start on the full spool: read in ms: ${REC_D[*]}; VmHWM kB: ${REC_HWM[*]}"
# Cold: once, after dropping the page cache (root only; it slows whatever
# else runs on the machine for a moment).
REC_COLD="" REC_COLD_WHY=""
if [ "$(id -u)" != 0 ]; then
    REC_COLD_WHY="not measured: dropping the page cache needs root"
elif ! sync || ! err=$( (echo 3 >/proc/sys/vm/drop_caches) 2>&1); then
    REC_COLD_WHY="not measured: echo 3 > /proc/sys/vm/drop_caches failed${err:+ ($err)}"
else
    REC_COLD=$(spool_applet)
    raw "iotbox spool, cold (after drop_caches), wall ns: $REC_COLD"
fi
[ -z "$REC_COLD_WHY" ] || raw "iotbox spool, cold: $REC_COLD_WHY"
say "recovery of $REC_BYTES bytes: iotbox spool $(show 1e6 0 ' ms' "${REC_WARM[@]}") warm${REC_COLD:+, $(show 1e6 0 ' ms' "$REC_COLD") cold}; the daemon's own $(show 1 0 ' ms' "${REC_D[@]}")"
LAST_DAEMON=""

# --- 11. the local MQTT endpoint vs a mosquitto bridge -------------------------

LC_IDLE_CLIENTS=10
LC_IDLE_SECS=3
# Runs as many as the spool's (a run takes a second or two): the bridge's
# rate on a loaded machine swings by 2× from run to run, so three are few.
LC_RUNS=$SPOOL_RUNS
step "11. local MQTT endpoint vs a mosquitto bridge: mosquitto_pub -l, ${MSGS} x ${SIZE} B, QoS 1, ${LC_RUNS} runs each; then ${LC_IDLE_CLIENTS} idle local clients"
# What a device would run instead of the endpoint: a second mosquitto on
# the device, bridged to the broker. Both sides take the same local client
# (mosquitto_pub, plain MQTT 5 on 127.0.0.1 TCP) and forward to the same
# broker over mutual TLS with the same certificate. Each run starts a fresh
# daemon or bridge, so its VmHWM is that run's peak.
# line_or_exit PID FILE TEXT: FILE has TEXT, or PID is gone.
line_or_exit() { has_line "$3" "$2" || not_running "$1"; }
# start_local NAME: iotbox pubsub, spool on (the product), its local
# endpoint on $T/NAME.mqtt and 127.0.0.1:LPORT (a free port), its --topic
# one nobody uses; until 'Subscription Success.'. --verbosity debug for its
# "local client ID connected" line, the moment the load starts (the debug
# lines are per connection, none per message). PID in DAEMON_PID.
start_local() {
    local name=$1 dir pid
    LAST_DAEMON=$name
    dir=$(spool_dir "$name")
    for _ in 1 2 3 4 5; do
        LPORT=$("$LG" freeport) || fail "loadgen freeport failed"
        "$BIN" pubsub --endpoint 127.0.0.1 --port "$PORT" --cert "$T/client.pem" --key "$T/client.key" \
            --ca_file "$T/ca.pem" --client_id "bench-$name" --topic "bench/in/$name" \
            --pub_socket "$T/$name.sock" --sub_socket "$T/$name.rmsg" --spool_dir "$dir" \
            --local_socket "$T/$name.mqtt" --local_listen "127.0.0.1:$LPORT" \
            --keep_alive "$KEEPALIVE" --verbosity debug >"$T/$name.out" 2>"$T/$name.err" &
        pid=$!
        pids+=("$pid")
        wait_until "$TIMEOUT" "'Subscription Success.' from iotbox pubsub ($name)" \
            line_or_exit "$pid" "$T/$name.out" "Subscription Success."
        if running "$pid"; then
            port_open "$LPORT" || fail "$name: nothing listens on its --local_listen 127.0.0.1:$LPORT"
            [ -S "$T/$name.mqtt" ] || fail "$name: no local endpoint socket at $T/$name.mqtt"
            DAEMON_PID=$pid
            return 0
        fi
        wait "$pid" 2>/dev/null || true
        forget "$pid"
        grep -q "cannot listen on" "$T/$name.err" || fail "iotbox pubsub ($name) exited before 'Subscription Success.'"
        say "port $LPORT was taken meanwhile; another one"
    done
    fail "iotbox pubsub ($name) could not listen (5 ports tried)"
}
# start_bridge NAME: a mosquitto bridge listening on 127.0.0.1:LPORT (a
# free port) and on $T/NAME.mqtt, connected to the broker as bench-NAME
# and subscribed there for bench/idle/# (the idle clients' topics, as the
# daemon subscribes upstream for its local clients); until the broker's
# log shows that subscription. Local publishes on bench/local/# go out,
# QoS 1. PID in BRIDGE_PID.
start_bridge() {
    local name=$1 pid end
    LAST_BRIDGE=$name
    for _ in 1 2 3 4 5; do
        LPORT=$("$LG" freeport) || fail "loadgen freeport failed"
        # notifications false: else it publishes retained $SYS connection
        # messages upstream; try_private false: else a CONNECT with protocol
        # level 0x84; the default max_queued_messages (1000) would drop
        # under mosquitto_pub -l.
        {
            echo "# written by scripts/bench.sh: a mosquitto bridge, what the local MQTT"
            echo "# endpoint replaces"
            mosquitto_common_conf
            cat <<EOF
max_inflight_messages 100
listener $LPORT 127.0.0.1
listener 0 $T/$name.mqtt
connection aws
address 127.0.0.1:$PORT
bridge_protocol_version mqttv50
remote_clientid bench-$name
cleansession true
try_private false
notifications false
bridge_attempt_unsubscribe false
restart_timeout 1 5
bridge_cafile $T/ca.pem
bridge_certfile $T/client.pem
bridge_keyfile $T/client.key
topic bench/local/# out 1
topic bench/idle/# in 1
EOF
        } >"$T/$name.conf"
        : >"$T/$name.log"
        "$MOSQUITTO" -c "$T/$name.conf" 2>>"$T/$name.log" >/dev/null &
        pid=$!
        pids+=("$pid")
        end=$(($(now_ms) + TIMEOUT * 1000))
        while running "$pid" && ! port_open "$LPORT" && [ "$(now_ms)" -lt "$end" ]; do sleep 0.01; done
        if running "$pid" && port_open "$LPORT"; then
            wait_until "$TIMEOUT" "the bridge's subscription at the broker ($name)" sub_ready "bench-$name" 1 "bench/idle/#"
            running "$pid" || fail "the bridge $name exited"
            BRIDGE_PID=$pid
            return 0
        fi
        running "$pid" && fail "the bridge $name did not open port $LPORT within ${TIMEOUT}s"
        wait "$pid" 2>/dev/null || true
        forget "$pid"
        grep -q "Address already in use" "$T/$name.log" || fail "the bridge $name did not start"
        say "port $LPORT was taken meanwhile; another one"
    done
    fail "the bridge $name could not listen (5 ports tried)"
}
stop_bridge() {
    kill -TERM "$1" 2>/dev/null || true
    wait_exit 10 "$1" "exit of the bridge mosquitto after SIGTERM" || true
}
declare -A LC_TP LC_DONE LC_CPUK LC_HWM LC_RSS
# local_run iotbox|bridge RUN: a fresh daemon or bridge; a counting
# mosquitto_sub at the broker; MSGS lines into mosquitto_pub -l on LPORT,
# written once the daemon or bridge logged its connection.
local_run() {
    local who=$1 r=$2 id topic pid log ready spid o c0 b0 p b1 n first last el mps cpu done_ns syncs
    id=lc-$who-r$r
    topic=bench/local/$who/r$r
    if [ "$who" = iotbox ]; then
        start_local "$id"
        pid=$DAEMON_PID log=$T/$id.err ready="local client pub-$id connected"
    else
        start_bridge "$id"
        pid=$BRIDGE_PID log=$T/$id.log ready="as pub-$id ("
    fi
    "$MSUB" "${MCA[@]}" -i "sub-$id" -q 1 -C "$MSGS" -F %U -t "$topic" >"$T/$id.arr" 2>"$T/$id.suberr" &
    spid=$!
    pids+=("$spid")
    wait_until "$TIMEOUT" "SUBACK for the counting mosquitto_sub ($id)" sub_ready "sub-$id" 1 "$topic"
    c0=$(cpu_ns "$pid")
    b0=$(cpu_ns "$BROKER")
    o=$("$LG" pipe --timeout "$TIMEOUT" --log "$log" --ready "$ready" --count "$MSGS" --size "$SIZE" -- \
        "$MPUB" -h 127.0.0.1 -p "$LPORT" -V mqttv5 -i "pub-$id" -q 1 -t "$topic" -l) ||
        fail "loadgen pipe mosquitto_pub -l through $who ($id)"
    wait_exit "$TIMEOUT" "$spid" "all $MSGS messages at the subscriber ($id)" ||
        fail "the counting mosquitto_sub failed ($id): $(cat "$T/$id.suberr")"
    running "$pid" || fail "$id: the $who process died during the run"
    p=$("$LG" proc --pid "$pid")
    b1=$(cpu_ns "$BROKER")
    syncs=""
    if [ "$who" = iotbox ]; then
        stop_daemon "$pid"
        syncs=$(exit_line "$id")
        [ -z "$syncs" ] || syncs="; the daemon's exit line: $(echo "$syncs" | awk '{print $1 " messages taken, " $2 " syncs, " $3 " bytes written"}')"
    else
        stop_bridge "$pid"
    fi
    n=$(wc -l <"$T/$id.arr")
    [ "$n" -eq "$MSGS" ] || fail "$id: the subscriber got $n of $MSGS messages"
    first=$(kv first_send_ns "$o")
    last=$(tail -n1 "$T/$id.arr")
    el=$(($(ns_of "$last") - first))
    [ "$el" -gt 0 ] || fail "$id: the last arrival ($last) is not after the first line written ($first ns)"
    mps=$(((MSGS * 1000000000 + el / 2) / el))
    cpu=$(($(kv cpu_ns "$p") - c0))
    done_ns=$(kv exit_ns "$o")
    LC_TP[$who]+="$mps "
    LC_DONE[$who]+="$done_ns "
    LC_CPUK[$who]+="$((cpu * 1000 / MSGS)) "
    LC_HWM[$who]+="$(kv hwm_kb "$p") "
    LC_RSS[$who]+="$(kv rss_kb "$p") "
    raw "local endpoint $id: first line → last arrival upstream $((el / 1000)) µs, $mps msg/s; mosquitto_pub -l exit $((done_ns / 1000)) µs after its first line; $who CPU $((cpu / 1000)) µs; broker CPU $(((b1 - b0) / 1000)) µs; $who after the run: VmRSS $(kv rss_kb "$p") kB VmHWM $(kv hwm_kb "$p") kB threads $(kv threads "$p") voluntary switches $(kv vcsw "$p")$syncs; loadgen: $(tr '\n' ' ' <<<"$o")"
    say "$id: $mps msg/s upstream; mosquitto_pub done in $(show 1e6 0 ' ms' "$done_ns"); $who CPU $(show 1e6 2 '' $((cpu * 1000 / MSGS))) ms per 1000 messages; VmHWM $(kv hwm_kb "$p") kB"
}
for r in $(seq 1 "$LC_RUNS"); do
    if [ $((r % 2)) = 1 ]; then local_run iotbox "$r"; local_run bridge "$r"; else local_run bridge "$r"; local_run iotbox "$r"; fi
done
read -ra lc_d <<<"${LC_TP[iotbox]:-}"
read -ra lc_b <<<"${LC_TP[bridge]:-}"
say "mosquitto_pub -l → broker: local endpoint $(show 1 0 ' msg/s' "${lc_d[@]}"), mosquitto bridge $(show 1 0 ' msg/s' "${lc_b[@]}")"

# Idle: a fresh daemon and a fresh bridge side by side, LC_IDLE_CLIENTS
# mosquitto_sub each on its UNIX socket, each on a topic of its own; ready
# when the subscription is in place upstream (the broker logged the
# daemon's SUBSCRIBE for that topic) or at the bridge (its log; the bridge
# is subscribed upstream for bench/idle/# since it connected).
start_local lc-idle
LI=$DAEMON_PID
start_bridge lc-bidle
BI=$BRIDGE_PID
idle_subs=()
for k in $(seq 1 "$LC_IDLE_CLIENTS"); do
    "$MSUB" --unix "$T/lc-idle.mqtt" -V mqttv5 -i "idle-d$k" -k "$KEEPALIVE" -q 1 -t "bench/idle/d/$k" >/dev/null 2>"$T/idle-d$k.err" &
    pids+=("$!")
    idle_subs+=("$!")
    "$MSUB" --unix "$T/lc-bidle.mqtt" -V mqttv5 -i "idle-b$k" -k "$KEEPALIVE" -q 1 -t "bench/idle/b/$k" >/dev/null 2>"$T/idle-b$k.err" &
    pids+=("$!")
    idle_subs+=("$!")
done
# upstream_sub K: the broker logged the daemon's SUBSCRIBE for client K's
# topic (any QoS); bridge_sub K: the bridge logged client K's SUBSCRIBE.
upstream_sub() { grep -qE ": bench-lc-idle [0-2] bench/idle/d/$1\$" "$BLOG"; }
bridge_sub() { grep -qE ": idle-b$1 1 bench/idle/b/$1\$" "$T/lc-bidle.log"; }
for k in $(seq 1 "$LC_IDLE_CLIENTS"); do
    wait_until "$TIMEOUT" "the daemon's upstream SUBSCRIBE for local client idle-d$k" upstream_sub "$k"
    wait_until "$TIMEOUT" "the bridge's SUBACK for idle-b$k" bridge_sub "$k"
done
sleep "$LC_IDLE_SECS"
for p in "${idle_subs[@]}"; do running "$p" || fail "an idle local mosquitto_sub exited (see $T/idle-*.err)"; done
running "$LI" || fail "the idle daemon lc-idle died"
running "$BI" || fail "the idle bridge lc-bidle died"
pi=$("$LG" proc --pid "$LI")
pb=$("$LG" proc --pid "$BI")
LC_IDLE_RSS_D=$(kv rss_kb "$pi") LC_IDLE_HWM_D=$(kv hwm_kb "$pi")
LC_IDLE_RSS_B=$(kv rss_kb "$pb") LC_IDLE_HWM_B=$(kv hwm_kb "$pb")
raw "local endpoint idle, $LC_IDLE_CLIENTS clients on the UNIX socket, ${LC_IDLE_SECS}s after the last subscription: iotbox VmRSS $LC_IDLE_RSS_D kB VmHWM $LC_IDLE_HWM_D kB threads $(kv threads "$pi"); bridge VmRSS $LC_IDLE_RSS_B kB VmHWM $LC_IDLE_HWM_B kB threads $(kv threads "$pb")"
say "idle with $LC_IDLE_CLIENTS local clients: iotbox VmRSS $LC_IDLE_RSS_D kB, bridge $LC_IDLE_RSS_B kB"
for p in "${idle_subs[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${idle_subs[@]}"; do wait_exit 10 "$p" "exit of an idle local mosquitto_sub" || true; done
stop_daemon "$LI"
stop_bridge "$BI"
LAST_DAEMON="" LAST_BRIDGE=""

# --- 12. the table -------------------------------------------------------------

step "12. the table"
md=$T/bench.md
# The figures for loadgen table: one KEY=VALUES line each.
samples=$T/samples.txt
sample() { printf '%s=%s\n' "$1" "${*:2}" >>"$samples"; }
: >"$samples"
# arm_label PATH: the build's triple, and whether it is the musl product.
arm_label() {
    local t
    t=$(echo "$1" | sed 's|^target/||; s|^cross/||; s|/release/iotbox$||')
    case $t in *musl*) ;; *) t="$t: glibc static of make cross-check, not the musl product" ;; esac
    echo "$t; built $(built "$1"), last commit $HEAD_DATE"
}
sample msgs "$MSGS"
sample size "$SIZE"
sample conc "$CONC"
sample idle_secs "$IDLE_SECS"
sample keepalive "$KEEPALIVE"
sample size_x86 "$SIZE_X86"
sample size_msub_prog "$SIZE_MSUB_PROG"
sample size_msub "$SIZE_MSUB"
if [ -n "$SIZE_ARMV7" ]; then sample size_armv7 "$SIZE_ARMV7"; sample label_armv7 "$(arm_label "$ARMV7_BIN")"; fi
if [ -n "$SIZE_AARCH64" ]; then sample size_aarch64 "$SIZE_AARCH64"; sample label_aarch64 "$(arm_label "$AARCH64_BIN")"; fi
sample rss_d_idle "$RSS_D_IDLE"
sample hwm_d_idle "$HWM_D_IDLE"
sample rss_s_idle "$RSS_S_IDLE"
sample hwm_s_idle "$HWM_S_IDLE"
sample rss_d_after "$RSS_D_AFTER"
sample hwm_d_after "$HWM_D_AFTER"
sample mpub_hwm "${MPUB_HWM:-}"
sample wake_d "${WAKE_D[@]}"
sample wake_s "${WAKE_S[@]}"
sample start_d "${START_D[@]}"
sample start_s "${START_S[@]}"
sample scpu_d "${SCPU_D[@]}"
sample scpu_s "${SCPU_S[@]}"
for k in iotbox1 iotbox0 mosq1 mosq0; do
    sample "tp_$k" "${TP[$k]:-}"
    sample "cpuk_$k" "${CPUK[$k]:-}"
done
sample tp_iotbox1_c1 "${TP[iotbox1-c1]:-}"
sample cpuk_iotbox1_c1 "${CPUK[iotbox1-c1]:-}"
sample lat50_d "${LAT50_D[@]}"
sample lat50_s "${LAT50_S[@]}"
sample lat99_d "${LAT99_D[@]}"
sample lat99_s "${LAT99_S[@]}"
sample os_d "${OS_D[@]}"
sample os_s "${OS_S[@]}"
sample os_dc "${OS_DC[@]}"
sample os_sc "${OS_SC[@]}"
sample os_dt "${OS_DT[@]}"
sample sp_msgs "$SPOOL_MSGS"
sample sp_conc_hi "$SPOOL_CONC_HI"
for k in disk none "disk-c$SPOOL_CONC_HI"; do
    kk=${k/-c$SPOOL_CONC_HI/_hi}
    sample "sp_tp_$kk" "${SP_TP[$k]:-}"
    sample "sp_synck_$kk" "${SP_SYNCK[$k]:-}"
    sample "sp_wb_$kk" "${SP_WB[$k]:-}"
    sample "sp_wc_$kk" "${SP_WC[$k]:-}"
    sample "sp_hwm_$kk" "${SP_HWM[$k]:-}"
done
sample rec_msgs "$REC_MSGS"
sample rec_bytes "$REC_BYTES"
sample rec_segs "$REC_SEGS"
sample rec_warm "${REC_WARM[@]}"
sample rec_cold "$REC_COLD"
sample rec_cold_why "$REC_COLD_WHY"
sample rec_d "${REC_D[@]}"
sample rec_hwm "${REC_HWM[@]}"
sample lc_idle_clients "$LC_IDLE_CLIENTS"
for w in iotbox bridge; do
    sample "lc_tp_$w" "${LC_TP[$w]:-}"
    sample "lc_done_$w" "${LC_DONE[$w]:-}"
    sample "lc_cpuk_$w" "${LC_CPUK[$w]:-}"
    sample "lc_hwm_$w" "${LC_HWM[$w]:-}"
    sample "lc_rss_$w" "${LC_RSS[$w]:-}"
done
sample lc_idle_rss_iotbox "$LC_IDLE_RSS_D"
sample lc_idle_hwm_iotbox "$LC_IDLE_HWM_D"
sample lc_idle_rss_bridge "$LC_IDLE_RSS_B"
sample lc_idle_hwm_bridge "$LC_IDLE_HWM_B"
{
    echo "# iotbox benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(uname -m), $(nproc) CPUs, Linux $(uname -r); $IOTBOX_VERSION ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ', src modified')); mosquitto $MOSQ_VERSION on 127.0.0.1, mutual TLS, RSA 2048 keys, \`set_tcp_nodelay true\`; spool on $SPOOL_FS ($SPOOL_DEV).$([ "$QUICK" = 1 ] && echo ' **BENCH_QUICK=1: one run of the long figures, a 10 s idle window.**')"
    echo
    echo "Values: median (min–max, n runs). ratio = iotbox ÷ mosquitto clients (medians): below 1 is better for iotbox except for throughput, where above 1 is; the spool rows have no mosquitto counterpart, and where they use the ratio column the figure says what it divides; in the local MQTT endpoint rows the second column is a mosquitto bridge (the same mosquitto_pub through a second mosquitto bridged to the broker). The machine is shared and noisy: compare the ratios."
    echo
    "$LG" table --samples "$samples" || fail "loadgen table: could not make the table from $samples"
} >"$md"

cat >>"$md" <<EOF

## How each figure is measured

- **Setup.** One mosquitto $MOSQ_VERSION on 127.0.0.1 (\`require_certificate true\`, \`set_tcp_nodelay true\`, \`max_queued_messages 1000000\` so a slow subscriber is queued, not dropped; logging without per-packet debug lines). One RSA 2048 CA, server and client certificate (rcgen, X.509 v3; \`scripts/pki.sh\`); iotbox and the mosquitto clients use the same client certificate, the same broker, MQTT 5, TLS 1.3. Every \`iotbox pubsub\` has its own \`--local_socket\` (the local MQTT endpoint, listening as in the product; never /tmp/iotbox_mqtt) and its own \`--spool_dir\` in the bench's work directory (on $SPOOL_FS, $SPOOL_DEV; never /var/lib/iotbox): each message from the publish socket is written there and synced (write + fdatasync, once per event-loop turn for all read in that turn) before anything else happens to it, so every figure below includes that. The load generator is \`bench/loadgen\`.
- **Binary size**: the static musl binary (the release profile strips it; a copy is run through \`strip\` anyway). The one x86_64 figure is held against both budgets: part one's (≤ 1.5 MiB) and part two's (≤ 2 MiB, everything in: the binary measured has the local MQTT endpoint). mosquitto_sub is dynamic: its own file plus the libraries \`ldd\` lists (libmosquitto, libssl, libcrypto, libcjson), libc not counted. ARM sizes are shown when a build is there (musl builds first, else the glibc-static ones of \`make cross-check\`); they are not rebuilt here, so their build time is shown beside the last commit's.
- **RSS**: VmRSS and VmHWM from /proc/PID/status, 2 s after \`Subscription Success.\` for \`iotbox pubsub\` and after the broker logged the subscription of a \`mosquitto_sub -k $KEEPALIVE\` on an unused topic. "After" is the QoS 1 daemon once its ${RUNS} throughput runs (${MSGS} messages each, ${CONC} clients at a time) are over; the QoS 0 daemon's figures are in the raw data. mosquitto_pub -l's VmHWM is read by loadgen once all lines of a run were written to its stdin.
- **Idle wake-ups**: voluntary context switches (all threads, /proc/PID/task/*/status) of both idle processes over the same ${IDLE_SECS} s windows, ${RUNS} consecutive windows; involuntary ones are in the raw data. A keep-alive ping costs about two (the timer, then PINGRESP).
- **exec → subscribed**: loadgen spawns the program with stdout on a pipe and takes the time when the line arrives. iotbox: \`Subscription Success.\` (printed on the SUBACK). mosquitto_sub has no such line, so its topic holds a retained message: the broker sends it right after the SUBACK and mosquitto_sub prints it at once; that line is its "subscribed" (it includes the one extra message, a few µs). Runs alternate iotbox/mosquitto_sub; fresh client ids; each process is then stopped with SIGTERM. CPU until then: the process's time on CPU (/proc/PID/task/*/schedstat) read when the line arrived.
- **Throughput**: a \`mosquitto_sub -C $MSGS -F %U\` subscribes first (the broker's log shows it); then $MSGS messages of $SIZE B go out: through iotbox's publish socket, one UNIX connection per message (connect, write \`topic\\npayload\`, shut down, read \`OK\`), $CONC connections in flight from loadgen threads; or as $MSGS lines on the stdin of \`mosquitto_pub -l\`, written once the broker logged its connection (so its connect is not counted, as the daemon's is not). Time from the first send (loadgen's clock, CLOCK_REALTIME) to the subscriber's receive time of the last message (%U, same clock). Same QoS for publisher and subscriber. QoS 0 uses a second daemon started with \`--qos 0\`. Rounds alternate which side goes first. The socket figure depends on how many clients are in flight (each message is its own connection; more at once means more work per event-loop wake-up): BENCH_CONC sets it, and the row "one client at a time" shows the other end.
- **CPU per 1000 messages**: the daemon's time on CPU (schedstat, the same quantity as utime+stime in ns) before the first send and after the last arrival; mosquitto_pub: its rusage at exit (utime+stime) minus its CPU when it had connected. The client side of the socket path (loadgen's own connect/write/read) is not in the daemon's figure; it is in the raw data (\`client_cpu_ns\`), as is the broker's CPU per run.
- **Latency**: $LAT_MSGS messages of $SIZE B, QoS 1, one at a time: each carries its send time, the next goes only after the previous one reached a \`mosquitto_sub -F %U,%p\` (its receive time, %U). iotbox: send time taken before connect() to the publish socket (the \`OK\` is awaited too). mosquitto_pub: a connected \`mosquitto_pub -l\`, send time taken before writing the line to its stdin. Probe messages until one gets through, then 20 warm-up messages, neither counted.
- **One message from a shell script**: loadgen runs the program ${ONESHOTS} times each, alternating: \`iotbox send SOCK FILE\` against the connected QoS 1 daemon (exec → \`OK\` → exit), and \`mosquitto_pub -q 1 -m PAYLOAD\` (exec, TLS handshake, CONNECT, PUBLISH, PUBACK, DISCONNECT, exit). Wall time spawn → exit; CPU from rusage of the child (utime+stime). The daemon's CPU for each message (schedstat before/after) is added in the last row.
- **Publish socket → spool** (the rows from "publish socket → spool" to "… for scale"): for each run a fresh daemon with a new \`--spool_dir\` of its own (or \`--spool_dir none\`), pointed at 127.0.0.1:$NOPORT, where nothing listens: its connection attempts are refused and retried, so each message is appended to the spool, written and fdatasync'ed with the others read in the same loop turn, and answered \`QUEUED\` at once; no TLS, no broker. loadgen sends $SPOOL_MSGS messages of $SIZE B as in the throughput rows (one connection per message, $CONC in flight); rate = $SPOOL_MSGS ÷ (first send → last \`QUEUED\` read by loadgen); every message must come back \`QUEUED\`. $SPOOL_RUNS runs each, spool on and \`none\` alternating. **Syncs**: the daemon's exit line after SIGTERM (\`spool: this run: N message(s) taken, K sync(s), B bytes written\`: an fdatasync per commit, and an fsync of the directory for each new segment file), K × 1000 ÷ N. **write_bytes**: /proc/PID/io of the daemon read once it started and again after the last \`QUEUED\`, just before SIGTERM; the difference ÷ N. Linux counts write_bytes when a page-cache page is dirtied, a whole 4 KiB page at a time, not when the disk is written: a page written, synced and written again (the next turn's records land in the same page) counts again, so with a sync every few messages the figure is about 4 KiB × pages dirtied per sync ÷ messages per sync. **Bytes to write(2)**: B ÷ N from the same exit line (records of 27 B + topic + payload, segment headers, done marks; /proc wchar, in the raw data, agrees). Each client waits for its status, so a loop turn reads at most as many messages as there are clients in flight: the syncs cannot be fewer than 1000 ÷ $CONC per 1000 messages here; the "for scale" row repeats the spool-on runs with $SPOOL_CONC_HI connections in flight.
- **Recovery of a full spool**: \`loadgen spool-fill\` writes $SIZE B messages for the broker into a new directory with the iotbox library's own log (\`Log\` on a \`DirDisk\`: the daemon's records, and segments of the size the daemon uses for that \`--spool_size\`, 1 MiB at 64 MiB; committed 100 messages at a time) until it holds $SPOOL_SIZE bytes, the point where a daemon with that \`--spool_size\` takes nothing more. \`iotbox spool DIR\` runs the daemon's recovery on both directions (every segment read twice, each record's checksum checked) and prints what waits; loadgen times spawn → exit. One run first, not counted, so the page cache holds the files; then $REC_RUNS runs. Cold: one run after \`sync; echo 3 > /proc/sys/vm/drop_caches\` (machine-wide: the binary's own pages are dropped too, so loading it from disk is included). The daemon's figure: $REC_RUNS starts on the same directory, pointed at port $NOPORT (nothing is sent, the spool stays full): the milliseconds of its line \`spool: N message(s) for the broker waiting in DIR (B bytes; both directions read in T ms)\`, then SIGTERM.
- **RSS with the spool on**: "idle" is the idle row's reading (that daemon has its \`--spool_dir\`, empty while idle); "peak" the median VmHWM of the spool-on runs above (read just before SIGTERM); "full spool" the median VmHWM of the daemons started on the full spool, read once they logged their recovery.
- **Local MQTT endpoint vs a mosquitto bridge** (the last five rows). The iotbox side: \`iotbox pubsub\` with \`--local_listen 127.0.0.1:PORT\` and its \`--local_socket\`, a \`--spool_dir\` of its own (spool on, the product), \`--topic\` on a topic nobody publishes to, \`--verbosity debug\` (for its one line per local connection; no debug line per message). The bridge side: a second mosquitto $MOSQ_VERSION, \`persistence false\`, listening on 127.0.0.1:PORT and a UNIX socket, \`connection\` to the same broker with \`bridge_protocol_version mqttv50\`, the same client certificate, \`cleansession true\`, \`try_private false\`, \`notifications false\`, \`max_queued_messages 1000000\` (the default 1000 drops under this load), \`max_inflight_messages 100\`, \`set_tcp_nodelay true\`, \`topic bench/local/# out 1\` and \`topic bench/idle/# in 1\` (its config is in the work directory, lc-*.conf); it counts as ready once the broker logged its SUBSCRIBE for bench/idle/#, i.e. it is connected upstream. Each run starts a fresh daemon (new spool directory) or a fresh bridge and stops it after; ${LC_RUNS} runs each, alternating which goes first. **Rate**: a \`mosquitto_sub -q 1 -C $MSGS -F %U\` at the broker subscribes first (the broker's log shows it); then loadgen writes $MSGS lines of $SIZE B to the stdin of \`mosquitto_pub -V mqttv5 -q 1 -l\` (plain TCP to the local port, as local clients connect), once the daemon (\`local client ID connected\`) or the bridge (\`New client connected ... as ID\`) logged its connection. Rate = $MSGS ÷ (first line written → the last message's receive time at the broker's subscriber). The daemon answers each PUBLISH with PUBACK only once it is in the spool and fdatasync'ed (one sync per loop turn for all read in it; the syncs of each run, from the daemon's exit line, are in the raw data); the bridge answers at once from memory (nothing is persisted). Upstream, both face the broker's Receive Maximum (mosquitto's default \`max_inflight_messages\`, 20, kept here as in the other rows). **Done**: first line → mosquitto_pub's exit, which waits for the PUBACK of its last message: the local acceptance, before anything reached the broker or not. **CPU**: the daemon's or the bridge's time on CPU (schedstat, all threads) from just before mosquitto_pub starts to after the last arrival upstream, ÷ $MSGS × 1000; the broker's CPU per run is in the raw data. **RSS under load**: /proc/PID/status of the daemon or bridge right after the last arrival: VmHWM is that run's peak (a fresh process each run), VmRSS the moment after. **Idle with $LC_IDLE_CLIENTS clients**: a fresh daemon and a fresh bridge side by side; $LC_IDLE_CLIENTS \`mosquitto_sub -V mqttv5 -q 1 --unix SOCKET -t bench/idle/.../K\` each, one topic per client; ready when the broker logged the daemon's upstream SUBSCRIBE for each client's topic (the bridge: its own log shows each client's subscription; it is subscribed upstream for bench/idle/# already); then ${LC_IDLE_SECS} s with nothing sent, then VmRSS and VmHWM.

## Raw data

\`\`\`
$(cat "$RAW")
\`\`\`
EOF

mkdir -p "$(dirname "$OUT")"
cp "$md" "$OUT"
echo
sed -n '/^| figure/,/^$/p' "$md"
echo "(written to $OUT, with the methods and the raw data)"
ok=1
