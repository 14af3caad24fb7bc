#!/usr/bin/env bash
# `make fleet-sim`: a fleet of daemons on this machine against one local
# mosquitto (plain TCP on 127.0.0.1), the broker restarted under them. Shows
# that all of them reconnect and resubscribe, how the CONNECTs after the
# restart spread over time (the full-jitter backoff, docs/operations.md
# "Connecting and reconnecting") and what each daemon costs in memory. One
# Markdown table on stdout and in target/fleet-sim.md. Not a test: it fails
# only when the fleet did not come up, a daemon did not come back or a
# message did not arrive; the numbers themselves are not judged.
#
#   FLEET_N=200        daemons (client ids dev-001 ...)
#   FLEET_DOWN=0       seconds the broker stays down between stop and start
#   FLEET_TIMEOUT=180  deadline of each wait, seconds
#   FLEET_OUT=FILE     where the table goes too (default target/fleet-sim.md)
#   IOTBOX_BIN=path    the binary (default: the release build, built here;
#                      CARGO_TARGET_DIR is where it is looked for)
#   FLEET_ARGS="..."   more pubsub flags for every daemon, split on blanks
#                      (e.g. "--reconnect_min 10")
#   KEEP=1             keep the work directory (it is kept on failure anyway)
#
# Each daemon has its own client id, its own topic fleet/dev-NNN/in plus the
# shared fleet/all, its own publish and delivery socket paths, its own spool
# (--spool_dir, as on a device; in the work directory, which is on tmpfs,
# /dev/shm, when there is one), no local MQTT endpoint, its stdout and log in
# files. Nobody reads the delivery sockets: what arrives waits in the spools.
#
# The broker logs every connect and subscribe with its own timestamp (epoch
# seconds); a reader in front of the log file adds the time each line came,
# to the microsecond, so CONNECTs can be counted per second and the gaps
# between one client id's CONNECTs measured. Everything it starts is stopped
# by PID on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
N=${FLEET_N:-200}
DOWN=${FLEET_DOWN:-0}
TIMEOUT=${FLEET_TIMEOUT:-180}
OUT=${FLEET_OUT:-target/fleet-sim.md}
read -r -a EXTRA <<<"${FLEET_ARGS:-}"
export LC_ALL=C

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

T=""
ok=0
clean_up_on_exit fleet-sim

say() { printf 'fleet-sim: %s\n' "$*" >&2; }
fail() {
    printf 'fleet-sim: FAILED: %s\n' "$*" >&2
    local f
    for f in ${T:+"$T/broker-1.log" "$T/broker-2.log"}; do
        if [ -s "$f" ]; then
            printf -- '--- last lines of %s:\n' "$f" >&2
            tail -n 10 "$f" | sed 's/^/    /' >&2
        fi
    done
    exit 1
}
now() { echo "$EPOCHREALTIME"; }
now_ms() { date +%s%3N; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
running() { kill -0 "$1" 2>/dev/null; }
# secs FROM TO: TO - FROM in seconds, two decimals.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

case $N in '' | *[!0-9]*) fail "FLEET_N must be a number, not '$N'" ;; esac
[ "$N" -ge 1 ] || fail "FLEET_N must be at least 1"

# --- tools, binary, work directory ---------------------------------------------

scripts/deps.sh test >/dev/null
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || fail "no mosquitto broker (apt-get install mosquitto)"
command -v mosquitto_pub >/dev/null || fail "no mosquitto_pub (apt-get install mosquitto-clients)"
if [ -n "${IOTBOX_BIN:-}" ]; then
    BIN=$IOTBOX_BIN
else
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
    say "cargo build --release"
    "$CARGO" build --release >/dev/null 2>&1 || fail "cargo build --release failed"
    BIN=$TARGET_DIR/release/iotbox
fi
[ -x "$BIN" ] || fail "no executable at $BIN"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
IOTBOX_VERSION=$("$BIN" --version 2>&1 | head -n1)
case $(file -b "$BIN" 2>/dev/null || true) in
    *static*) LINKAGE=static ;;
    *dynamic*) LINKAGE=dynamic ;;
    *) LINKAGE="linkage unknown" ;;
esac
MOSQ_VERSION=$({ "$MOSQUITTO" -h 2>/dev/null || true; } | head -n1 | sed "s/^mosquitto version //")

# The broker holds a descriptor per daemon, and then some.
need_fds=$((N + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
    ulimit -n "$need_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" ||
        fail "cannot raise the descriptor limit to $need_fds (ulimit -n is $(ulimit -n))"
    [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$need_fds" ] ||
        fail "the descriptor limit is $(ulimit -n), $need_fds are needed (ulimit -Hn)"
fi

# On tmpfs when there is one: the spools' fdatasync then costs nothing, as
# on most devices' flash it costs little next to the network.
base=${TMPDIR:-/tmp}
if [ -z "${TMPDIR:-}" ] && [ "$(stat -f -c %T /dev/shm 2>/dev/null || true)" = tmpfs ] && [ -w /dev/shm ]; then
    base=/dev/shm
fi
T=$(mktemp -d "$base/iotbox-fleet.XXXXXX")
chmod 0700 "$T"
mkdir -m 0700 "$T/spool" "$T/sock" "$T/out"
SPOOL_FS=$(stat -f -c %T "$T/spool" 2>/dev/null || echo '?')

width=3
[ "${#N}" -le 3 ] || width=${#N}
IDS=()
for ((i = 1; i <= N; i++)); do IDS+=("$(printf 'dev-%0*d' "$width" "$i")"); done

# --- the broker ------------------------------------------------------------------

# A port below the range the kernel hands out to outgoing connections (the
# daemons' among them), so that no client socket holds it when the broker
# starts again; mosquitto says when one is taken anyway, and another is tried.
eph_low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
port_span=$((eph_low - 20000))
[ "$port_span" -ge 1000 ] || port_span=40000
pick_port() {
    PORT=$((20000 + RANDOM % port_span))
    while port_open "$PORT"; do PORT=$((20000 + RANDOM % port_span)); done
}
# write_conf: the broker's configuration, for $PORT.
write_conf() {
    cat >"$T/mosquitto.conf" <<EOF
# written by scripts/fleet-sim.sh
# As root, mosquitto would switch to the user 'mosquitto'; this keeps it.
user $(id -un)
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_timestamp true
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
connection_messages true
listener $PORT 127.0.0.1
max_connections -1
EOF
}

# stamp: every line of stdin with the time it came (epoch seconds to the
# microsecond) in front.
stamp() { while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done; }

broker_pid="" stamp_pid="" BLOG=""
# start_broker K: mosquitto on $PORT, its log through stamp into
# broker-K.log. Sets T_LISTEN (the stamp of its "running" line). Returns 2
# when the port was taken.
start_broker() {
    BLOG=$T/broker-$1.log
    rm -f "$T/broker.fifo"
    mkfifo "$T/broker.fifo"
    stamp <"$T/broker.fifo" >>"$BLOG" &
    stamp_pid=$!
    pids+=("$stamp_pid")
    "$MOSQUITTO" -c "$T/mosquitto.conf" 2>"$T/broker.fifo" >/dev/null &
    broker_pid=$!
    pids+=("$broker_pid")
    local end=$(($(now_ms) + 10000))
    until port_open "$PORT"; do
        if ! running "$broker_pid"; then
            wait "$broker_pid" 2>/dev/null || true
            forget "$broker_pid"
            wait "$stamp_pid" 2>/dev/null || true
            forget "$stamp_pid"
            grep -q "Address already in use" "$BLOG" && return 2
            fail "mosquitto exited (see $BLOG)"
        fi
        [ "$(now_ms)" -lt "$end" ] || fail "mosquitto did not listen within 10 s"
        sleep 0.01
    done
    # The broker's own word that it is up: a daemon may get in before the
    # probe above does.
    T_LISTEN=""
    while [ -z "$T_LISTEN" ] && [ "$(now_ms)" -lt "$end" ]; do
        T_LISTEN=$(awk '$3 == "mosquitto" && $4 == "version" && $6 == "running" { print $1; exit }' "$BLOG")
        [ -n "$T_LISTEN" ] || sleep 0.01
    done
    [ -n "$T_LISTEN" ] || fail "mosquitto listens but did not log 'running' (see $BLOG)"
}
# stop_broker: SIGTERM, wait for it and for its log's reader (which ends
# with the log).
stop_broker() {
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    forget "$broker_pid"
    wait "$stamp_pid" 2>/dev/null || true
    forget "$stamp_pid"
}

# --- reading the broker's log ------------------------------------------------------
#
# Lines are "STAMP EPOCH: text": "New client connected from ADDR as ID (p5,
# c1, k60)." on a CONNECT accepted, "ID QOS FILTER" on each filter of a
# SUBSCRIBE.

# ready LOG: "COUNT LAST": how many client ids have, since their last
# CONNECT in LOG, subscribed to both their filters, and when the last of them
# got there.
ready() {
    awk '
        $3 == "New" && $4 == "client" && $5 == "connected" && $8 == "as" {
            id = $9; conn[id] = 1; delete all[id]; delete own[id]; delete at[id]; next
        }
        NF == 5 && $3 ~ /^dev-[0-9]+$/ && $4 ~ /^[0-2]$/ {
            id = $3
            if ($5 == "fleet/all") all[id] = 1
            else if ($5 == "fleet/" id "/in") own[id] = 1
            if ((id in conn) && (id in all) && (id in own) && !(id in at)) at[id] = $1 + 0
        }
        END {
            n = 0; last = 0
            for (id in at) { n++; if (at[id] > last) last = at[id] }
            printf "%d %.6f\n", n, last
        }' "$1"
}
# missing LOG: the client ids not ready in LOG, space-separated.
missing() {
    printf '%s\n' "${IDS[@]}" | awk -v file="$1" '
        BEGIN {
            while ((getline l < file) > 0) {
                split(l, f, " ")
                if (f[3] == "New" && f[4] == "client" && f[5] == "connected") { c[f[9]] = 1; delete a[f[9]]; delete o[f[9]] }
                else if (f[4] ~ /^[0-2]$/ && f[5] == "fleet/all") a[f[3]] = 1
                else if (f[4] ~ /^[0-2]$/ && f[5] == "fleet/" f[3] "/in") o[f[3]] = 1
            }
        }
        !(($0 in c) && ($0 in a) && ($0 in o)) { printf "%s ", $0 }'
}
# not_ready LOG: the client ids not ready in LOG, comma-separated, each
# that is no longer running marked so.
not_ready() {
    local id out=""
    for id in $(missing "$1"); do
        out+="${out:+, }$id"
        running "${DAEMONS[10#${id#dev-} - 1]}" || out+=" (exited)"
    done
    echo "$out"
}
# alive: how many daemons are running.
DAEMONS=()
alive() {
    local p n=0
    for p in "${DAEMONS[@]}"; do running "$p" && n=$((n + 1)); done
    echo "$n"
}
# pending LOG: how many of the daemons not ready in LOG are still running
# (the others will never be).
pending() {
    local id n=0
    for id in $(missing "$1"); do
        running "${DAEMONS[10#${id#dev-} - 1]}" && n=$((n + 1))
    done
    echo "$n"
}
# wait_ready LOG: until all N are ready in LOG, TIMEOUT, or only daemons
# that exited are missing; READY_N and READY_AT (the stamp of the last one)
# say how far it got.
wait_ready() {
    local end r
    end=$(($(now_ms) + TIMEOUT * 1000))
    while :; do
        r=$(ready "$1")
        READY_N=${r% *} READY_AT=${r#* }
        [ "$READY_N" -lt "$N" ] || return 0
        [ "$(now_ms)" -lt "$end" ] || return 1
        [ "$(pending "$1")" -gt 0 ] || return 1
        sleep 0.2
    done
}
# got TEXT I: daemon I printed "Publish received on topic TEXT", ID in TEXT
# standing for its client id.
got() {
    local id=${IDS[$2]}
    grep -qxF -- "Publish received on topic ${1//ID/$id}" "$T/out/$id.out"
}
# received TEXT: how many daemons got TEXT.
received() {
    local i n=0
    for i in "${!IDS[@]}"; do got "$1" "$i" && n=$((n + 1)); done
    echo "$n"
}
# wait_received TEXT: until every running daemon got TEXT, or TIMEOUT.
wait_received() {
    local end i
    end=$(($(now_ms) + TIMEOUT * 1000))
    for i in "${!IDS[@]}"; do
        until got "$1" "$i" || ! running "${DAEMONS[i]}"; do
            [ "$(now_ms)" -lt "$end" ] || return 1
            sleep 0.2
        done
    done
}

# --- memory ------------------------------------------------------------------------

# mem_row: "rss_med rss_max pss_med pss_max pss_sum private_med" in kB over
# the running daemons: VmRSS from /proc/PID/status, Pss and Private_* from
# /proc/PID/smaps_rollup.
mem_row() {
    local p
    for p in "${DAEMONS[@]}"; do
        running "$p" || continue
        awk '
            FILENAME ~ /status$/ && $1 == "VmRSS:" { rss = $2 }
            FILENAME ~ /rollup$/ && $1 == "Pss:" { pss = $2 }
            FILENAME ~ /rollup$/ && ($1 == "Private_Clean:" || $1 == "Private_Dirty:") { priv += $2 }
            END { print rss, pss, priv }' "/proc/$p/status" "/proc/$p/smaps_rollup" 2>/dev/null || true
    done | awk '
        { r[NR] = $1; p[NR] = $2; v[NR] = $3; sum += $2 }
        function med(a, n,   i, j, t) {
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        END {
            n = NR; if (n == 0) { print "0 0 0 0 0 0"; exit }
            printf "%d %d %d %d %d %d\n", med(r, n), r[n], med(p, n), p[n], sum, med(v, n)
        }'
}
broker_rss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$broker_pid/status" 2>/dev/null || echo '?'; }

# --- 1. the fleet comes up ------------------------------------------------------------

tries=0
while :; do
    pick_port
    write_conf
    rm -f "$T/broker-1.log"
    rc=0
    start_broker 1 || rc=$?
    [ "$rc" = 2 ] || break
    tries=$((tries + 1))
    [ "$tries" -lt 5 ] || fail "mosquitto found its port taken 5 times (see $BLOG)"
    say "port $PORT was taken meanwhile; another one"
done
say "mosquitto $MOSQ_VERSION on 127.0.0.1:$PORT (pid $broker_pid); $N daemons of $BIN"
T_START=$(now)
for id in "${IDS[@]}"; do
    mkdir -m 0700 "$T/spool/$id"
    "$BIN" pubsub --plaintext --endpoint 127.0.0.1 --port "$PORT" --client_id "$id" \
        --topic "fleet/$id/in" --topic fleet/all \
        --pub_socket "$T/sock/$id.smsg" --sub_socket "$T/sock/$id.rmsg" \
        --spool_dir "$T/spool/$id" --local_socket none ${EXTRA[@]+"${EXTRA[@]}"} \
        </dev/null >"$T/out/$id.out" 2>"$T/out/$id.log" &
    pids+=("$!")
    DAEMONS+=("$!")
done
T_SPAWNED=$(now)
wait_ready "$BLOG" || fail "$READY_N of $N daemons connected and subscribed within ${TIMEOUT}s (not: $(not_ready "$BLOG"))"
START_SECS=$(secs "$T_START" "$READY_AT")
say "all $N connected and subscribed $START_SECS s after the first was started (spawning took $(secs "$T_START" "$T_SPAWNED") s)"

# Delivery before the restart, then memory once the fleet is idle.
mosquitto_pub -h 127.0.0.1 -p "$PORT" -V mqttv5 -i fleet-console -q 1 -t fleet/all -m before-restart ||
    fail "mosquitto_pub to fleet/all failed"
wait_received "fleet/all:before-restart" || fail "fleet/all reached $(received "fleet/all:before-restart") of $N daemons"
sleep 2
read -r RSS_MED RSS_MAX PSS_MED PSS_MAX PSS_SUM PRIV_MED <<<"$(mem_row)"
BROKER_RSS_1=$(broker_rss)
say "memory per daemon: VmRSS median $RSS_MED kB (max $RSS_MAX), Pss median $PSS_MED kB (max $PSS_MAX)"

# --- 2. the broker restarts -------------------------------------------------------------

say "restarting the broker (down ${DOWN} s)"
T_KILL=$(now)
stop_broker
sleep "$DOWN"
start_broker 2 || fail "port $PORT was taken while the broker was down (see $BLOG)"
DOWN_SECS=$(secs "$T_KILL" "$T_LISTEN")
back=1
wait_ready "$BLOG" || back=0
RESTART_SECS=$(secs "$T_LISTEN" "$READY_AT")
BACK_N=$READY_N
NOT_BACK=""
if [ "$back" = 1 ]; then
    say "all $N reconnected and resubscribed $RESTART_SECS s after the broker was running again"
else
    NOT_BACK=$(not_ready "$BLOG")
    say "only $BACK_N of $N reconnected and resubscribed; not: $NOT_BACK"
fi

# Delivery after the restart: the shared topic, then each device's own.
mosquitto_pub -h 127.0.0.1 -p "$PORT" -V mqttv5 -i fleet-console -q 1 -t fleet/all -m after-restart ||
    fail "mosquitto_pub to fleet/all failed"
for id in "${IDS[@]}"; do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -V mqttv5 -i fleet-console -q 1 -t "fleet/$id/in" -m "for-$id" ||
        fail "mosquitto_pub to fleet/$id/in failed"
done
wait_received "fleet/all:after-restart" || true
wait_received "fleet/ID/in:for-ID" || true
GOT_ALL=$(received "fleet/all:after-restart")
GOT_OWN=$(received "fleet/ID/in:for-ID")
read -r RSS2_MED RSS2_MAX PSS2_MED PSS2_MAX PSS2_SUM _ <<<"$(mem_row)"
BROKER_RSS_2=$(broker_rss)
ALIVE=$(alive)

# The fleet stops as an init system would stop it: SIGTERM, then each
# daemon's exit status (the broker is still up).
for p in "${DAEMONS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
end=$(($(now_ms) + 15000))
while [ "$(alive)" -gt 0 ] && [ "$(now_ms)" -lt "$end" ]; do sleep 0.1; done
CLEAN_EXITS=0
for p in "${DAEMONS[@]}"; do
    running "$p" && continue
    rc=0
    wait "$p" 2>/dev/null || rc=$?
    forget "$p"
    [ "$rc" != 0 ] || CLEAN_EXITS=$((CLEAN_EXITS + 1))
done

# --- 3. what the broker's log says ---------------------------------------------------------

# The CONNECTs after the restart: per second of the broker's clock, the
# busiest one, the busiest 1 s window on the stamps, first → last.
read -r CONNECTS FIRST_AT LAST_AT NSECS BUSY BUSY_SEC WINDOW <<<"$(awk '
    $3 == "New" && $4 == "client" && $5 == "connected" && $9 ~ /^dev-/ {
        n++; t[n] = $1 + 0; s = $2; sub(/:$/, "", s); per[s]++
    }
    END {
        if (n == 0) { print "0 0 0 0 0 0 0"; exit }
        busy = 0; secs = 0
        for (s in per) { secs++; if (per[s] > busy || (per[s] == busy && s < bsec)) { busy = per[s]; bsec = s } }
        w = 0; j = 1
        for (i = 1; i <= n; i++) { while (t[i] - t[j] >= 1) j++; if (i - j + 1 > w) w = i - j + 1 }
        printf "%d %.6f %.6f %d %d %s %d\n", n, t[1], t[n], secs, busy, bsec, w
    }' "$T/broker-2.log")"
# Per second of the broker's clock from its first second after the restart.
HIST=$(awk -v from="${T_LISTEN%.*}" '
    $3 == "New" && $4 == "client" && $5 == "connected" && $9 ~ /^dev-/ {
        s = $2; sub(/:$/, "", s); per[s - from]++; if (s - from > last) last = s - from
    }
    END { for (i = 0; i <= last; i++) printf "| +%d s | %d |\n", i, per[i] + 0 }' "$T/broker-2.log")
# One client id's CONNECTs closer than 1 s (both logs, on the stamps), and
# the client ids that CONNECTed more than once after the restart.
read -r CLOSE MIN_GAP MIN_GAP_ID <<<"$(awk '
    $3 == "New" && $4 == "client" && $5 == "connected" && $9 ~ /^dev-/ {
        id = $9; t = $1 + 0
        if (id in last) {
            g = t - last[id]
            if (g < 1) near++
            if (min == "" || g < min) { min = g; minid = id }
        }
        last[id] = t
    }
    END { printf "%d %s %s\n", near + 0, (min == "" ? "-" : sprintf("%.3f", min)), (minid == "" ? "-" : minid) }' \
    "$T/broker-1.log" "$T/broker-2.log")"
TWICE=$(awk '$3 == "New" && $4 == "client" && $5 == "connected" && $9 ~ /^dev-/ { c[$9]++ }
    END { n = 0; for (id in c) if (c[id] > 1) n++; print n }' "$T/broker-2.log")
# The daemons' side: attempts that failed while the broker was down, and the
# first wait each drew after losing the connection.
FAILED_ATTEMPTS=$(cat "$T"/out/*.log | grep -c "cannot connect to" || true)
read -r WAIT_MED WAIT_MAX <<<"$(for id in "${IDS[@]}"; do
    sed -n 's/.*next connection attempt in \([0-9.]*\) s.*/\1/p' "$T/out/$id.log" | head -n1
done | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "- -"; else printf "%.1f %.1f\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[NR] }')"
SUBSCRIBED_TWICE=0
for id in "${IDS[@]}"; do
    [ "$(grep -c '^Subscription Success\.' "$T/out/$id.out" || true)" -ge 2 ] && SUBSCRIBED_TWICE=$((SUBSCRIBED_TWICE + 1))
done

# --- 4. the table --------------------------------------------------------------------------

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
spread=$(secs "$FIRST_AT" "$LAST_AT")
first_after=$(secs "$T_LISTEN" "$FIRST_AT")
if [ "$CONNECTS" -gt 0 ]; then
    busy_off=$((BUSY_SEC - ${T_LISTEN%.*}))
else
    busy_off=0
fi
md=$T/fleet-sim.md
{
    echo "# iotbox fleet simulation"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); \`FLEET_N=$N FLEET_DOWN=$DOWN${FLEET_ARGS:+ FLEET_ARGS=\"$FLEET_ARGS\"}${IOTBOX_BIN:+ IOTBOX_BIN=$IOTBOX_BIN} make fleet-sim\`; $(uname -m), $(nproc) CPUs, $(awk '$1 == "MemTotal:" { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r); $IOTBOX_VERSION ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ', src modified')), $BIN ($LINKAGE, $(stat -c %s "$BIN") bytes); mosquitto $MOSQ_VERSION on 127.0.0.1, plain TCP; spools on $SPOOL_FS."
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| daemons | $N (dev-$(printf '%0*d' "$width" 1) … ${IDS[N - 1]}), each with a spool, topics fleet/dev-NNN/in and fleet/all |"
    echo "| first started → all connected and subscribed | $START_SECS s (starting them took $(secs "$T_START" "$T_SPAWNED") s) |"
    echo "| VmRSS per daemon, idle: median (max) | $RSS_MED kB ($RSS_MAX kB) |"
    echo "| Pss per daemon, idle: median (max) | $PSS_MED kB ($PSS_MAX kB) |"
    echo "| private (clean + dirty) per daemon, idle: median | $PRIV_MED kB |"
    echo "| Pss of all $N daemons, idle | $(mib "$PSS_SUM") |"
    echo "| broker VmRSS with the fleet, before / after the restart | $BROKER_RSS_1 kB / $BROKER_RSS_2 kB |"
    echo "| broker down (SIGTERM → running again) | $DOWN_SECS s |"
    echo "| connection attempts that failed meanwhile (daemons' logs) | $FAILED_ATTEMPTS |"
    echo "| first wait drawn after the loss: median (max) | $WAIT_MED s ($WAIT_MAX s) |"
    echo "| broker running → all reconnected and resubscribed | $([ "$back" = 1 ] && echo "$RESTART_SECS s" || echo "**$BACK_N of $N; not: $NOT_BACK**") |"
    echo "| CONNECTs after the restart | $CONNECTS |"
    echo "| broker running → first CONNECT | $first_after s |"
    echo "| spread, first → last CONNECT | $spread s |"
    echo "| seconds (broker clock) with CONNECTs | $NSECS |"
    echo "| busiest second (broker clock) | $BUSY CONNECTs (+$busy_off s) |"
    echo "| busiest 1 s window (any start) | $WINDOW CONNECTs |"
    echo "| client ids that CONNECTed more than once after the restart | $TWICE |"
    echo "| one client id's CONNECTs less than 1 s apart (whole run) | $CLOSE (shortest gap $MIN_GAP s, $MIN_GAP_ID) |"
    echo "| daemons that printed Subscription Success. again | $SUBSCRIBED_TWICE of $N |"
    echo "| fleet/all after the restart received by | $GOT_ALL of $N |"
    echo "| fleet/dev-NNN/in after the restart received by | $GOT_OWN of $N |"
    echo "| Pss per daemon after the restart: median (max); all $N | $PSS2_MED kB ($PSS2_MAX kB); $(mib "$PSS2_SUM") |"
    echo "| VmRSS per daemon after the restart: median (max) | $RSS2_MED kB ($RSS2_MAX kB) |"
    echo "| daemons running at the end | $ALIVE of $N |"
    echo "| daemons that exited with status 0 on SIGTERM | $CLEAN_EXITS of $N |"
    echo
    echo "## CONNECTs per second after the restart"
    echo
    echo "Seconds of the broker's clock (its log's timestamps), +0 the second in which it logged that it was running again."
    echo
    echo "| second | CONNECTs |"
    echo "|---|---|"
    echo "$HIST"
    echo
    echo "## How"
    echo
    echo "- One mosquitto, \`persistence false\`, \`max_connections -1\`, logging connects (\`connection_messages true\`) and subscribes with \`log_timestamp true\` (epoch seconds); its stderr goes through a reader that puts the time each line came, to the microsecond, in front. The broker's seconds give the per-second counts; the microsecond stamps the spread, the 1 s window and the gaps between one client id's CONNECTs. A CONNECT is the broker's \`New client connected ... as dev-NNN\` line (accepted); attempts that found the port closed are counted from the daemons' logs (\`cannot connect to\`)."
    echo "- Each daemon: \`iotbox pubsub --plaintext --client_id dev-NNN --topic fleet/dev-NNN/in --topic fleet/all --spool_dir DIR --local_socket none\`, its own publish and delivery socket paths, the default \`--reconnect_max\` and \`--keep_alive\`; FLEET_ARGS: \`${FLEET_ARGS:-none}\`. Connected and subscribed: the broker logged the client's CONNECT and, after it, both its filters."
    echo "- Memory: 2 s after a message on fleet/all reached every daemon. VmRSS from /proc/PID/status; Pss, Private_Clean and Private_Dirty from /proc/PID/smaps_rollup. VmRSS counts the binary's pages (and the C library's, for a dynamic build) in full in every daemon, although all daemons share them; Pss divides each shared page among the processes that map it, so Pss is what one more daemon costs, and the sum of Pss is what the fleet costs."
    echo "- Restart: SIGTERM to the broker's PID, wait for it to exit, FLEET_DOWN seconds, the same command and configuration on the same port, its log in a new file. Each daemon's connection was its first one, so its backoff is at the lowest step: the first wait after the loss is drawn between 0 and 1 s (full jitter), and no CONNECT comes sooner than 1 s after the last one (src/daemon/backoff.rs, src/daemon/broker/link.rs). That first wait is read from each daemon's log (\`next connection attempt in X s\`)."
    echo "- Delivery after the restart: one QoS 1 message to fleet/all and one to each fleet/dev-NNN/in (mosquitto_pub), counted in the daemons' stdout (\`Publish received on topic ...\`)."
} >"$md"
mkdir -p "$(dirname "$OUT")"
cp "$md" "$OUT"
sed -n '/^| figure/,/^$/p' "$md"
echo "(written to $OUT, with the CONNECTs per second)"

[ "$back" = 1 ] || fail "$((N - BACK_N)) daemon(s) did not reconnect and resubscribe: $NOT_BACK"
[ "$GOT_ALL" -ge "$N" ] || fail "fleet/all after the restart reached $GOT_ALL of $N daemons"
[ "$GOT_OWN" -ge "$N" ] || fail "fleet/dev-NNN/in after the restart reached $GOT_OWN of $N daemons"
[ "$ALIVE" -ge "$N" ] || fail "$((N - ALIVE)) daemon(s) exited"
ok=1
