#!/usr/bin/env bash
# Test recipe/recipes-connectivity/iotbox/files/iotbox.init against a temporary
# configuration (nothing outside a temp dir is touched).
#
# Part 1 (fake daemon): start/status/reload/restart/stop, stale pidfile, the
#   arguments built from the defaults file, SIGKILL after STOP_TIMEOUT, the
#   spool directory (created 0700 by start, SPOOL_DIR and SPOOL_SIZE passed
#   on, nothing created for SPOOL_DIR=none); with a small sh script standing
#   in for iotbox. Needs no broker.
# Part 2 (real daemon): the real binary (IOTBOX_BIN) against a real mosquitto
#   with mutual TLS on 127.0.0.1 (free port, certificates from scripts/pki.sh):
#   start -> status 0 -> "Subscription Success." in the log -> reload ->
#   "iotbox send" reaches a mosquitto_sub -> a mosquitto_pub reaches
#   "iotbox recv" on the delivery socket -> stop -> status 3 -> the publish
#   socket is gone. The spool directory is made in the temp dir (SPOOL_DIR
#   when the binary has --spool_dir, else DEFAULT_SPOOL_DIR).
#
# Both parts run with the system's start-stop-daemon (Debian's) and sh, and,
# when busybox is installed, again with BusyBox's applet and BusyBox's sh
# (what Poky images have).
#
# Usage: scripts/test-initd.sh [--fake-only | --real-only]
# Environment: IOTBOX_BIN (default target/release/iotbox; built with
#   'cargo build --release' when missing), KEEP_TMP=1 keeps the temp dir.
# Needs: start-stop-daemon, mosquitto, mosquitto_sub, mosquitto_pub, python3
#   (Debian: apt-get install mosquitto mosquitto-clients python3), and cargo
#   (scripts/pki.sh builds the certificate generator).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
init=$root/recipe/recipes-connectivity/iotbox/files/iotbox.init

run_fake=1
run_real=1
case "${1:-}" in
    "") ;;
    --fake-only) run_real=0 ;;
    --real-only) run_fake=0 ;;
    *) echo "usage: $0 [--fake-only|--real-only]" >&2; exit 2 ;;
esac

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
die() { echo "test-initd: $*" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/iotbox-initd.XXXXXX")
# Every run of the init script here points DEFAULT_SPOOL_DIR into $tmp: the
# system's own spool directory must not appear because of this test.
system_spool=/var/lib/iotbox
system_spool_before=no
if [ -e "$system_spool" ]; then system_spool_before=yes; fi
started_pids=()   # processes this script started (killed on exit)
pidfiles=()       # pidfiles of daemons started through the init script

cleanup() {
    local pid f
    for f in "${pidfiles[@]}"; do
        if [ -r "$f" ] && read -r pid <"$f" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${started_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${started_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "test-initd: kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

command -v start-stop-daemon >/dev/null || die "start-stop-daemon not found (Debian: apt-get install dpkg)"

# BusyBox's start-stop-daemon is what Poky images run: test with it too.
# Debian's busybox package only adds /bin/busybox (no applet links).
if ! command -v busybox >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test-initd: installing busybox (apt-get)"
    apt-get install -y -qq busybox >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 || true; apt-get install -y -qq busybox >/dev/null 2>&1; } || true
fi

# The start-stop-daemon implementations to test with: label=path.
ssds=("debian=$(command -v start-stop-daemon)")
if command -v busybox >/dev/null && busybox start-stop-daemon --help >/dev/null 2>&1; then
    mkdir -p "$tmp/busybox"
    ln -s "$(command -v busybox)" "$tmp/busybox/start-stop-daemon"
    ssds+=("busybox=$tmp/busybox/start-stop-daemon")
else
    echo "test-initd: busybox not installed; testing with Debian's start-stop-daemon only"
fi

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@"; do
        if [ "$SECONDS" -ge "$end" ]; then
            fail "timed out after ${secs}s waiting for $what"
            return 1
        fi
        sleep 0.1
    done
}

# The shell that runs the init script: sh here; BusyBox's ash (Poky's
# /bin/sh) together with BusyBox's start-stop-daemon.
init_sh=(sh)
use_shell_for() {
    if [ "$1" = busybox ]; then init_sh=(busybox sh); else init_sh=(sh); fi
}

# initd ENVFILE ACTION: run the init script with the test's overrides;
# sets $out and $rc.
initd() {
    local envfile=$1 action=$2
    set +e
    local -a vars
    mapfile -t vars <"$envfile"
    out=$(env "${vars[@]}" "${init_sh[@]}" "$init" "$action" 2>&1)
    rc=$?
    set -e
    printf '    [%s %s -> %s] %s\n' "${envfile##*/}" "$action" "$rc" "$(echo "$out" | tr '\n' '|')"
}

expect_rc() {
    local want=$1 what=$2
    if [ "$rc" -eq "$want" ]; then ok "$what (exit $rc)"; else fail "$what: exit $rc, expected $want; output: $out"; fi
}

expect_out() {
    local pattern=$1 what=$2
    if printf '%s\n' "$out" | grep -Eq -- "$pattern"; then ok "$what"; else fail "$what: output '$out' does not match /$pattern/"; fi
}

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
    local stat
    [ -n "$1" ] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# mode_of PATH: its permission bits in octal (e.g. 700), empty if missing.
mode_of() {
    stat -c %a "$1" 2>/dev/null || true
}

pid_from() {
    local pid=
    [ -r "$1" ] && read -r pid <"$1"
    echo "$pid"
}

# ---------------------------------------------------------------- part 1 --
fake_part() {
    local label=$1 ssd=$2
    local d=$tmp/fake-$label
    mkdir -p "$d/bin"
    use_shell_for "$label"
    echo "== part 1, fake daemon, $label start-stop-daemon, init script run by: ${init_sh[*]}"

    # The stand-in daemon: records its argv, creates the "publish socket"
    # (a plain file here), prints the daemon's status lines, removes the file
    # and exits 0 on SIGTERM, logs SIGHUP. Named iotbox, like the binary.
    cat >"$d/bin/iotbox" <<EOF
#!/bin/sh
printf '%s\n' "\$@" >"$d/args"
pub=
while [ \$# -gt 0 ]; do
    case \$1 in --pub_socket) pub=\$2; shift ;; esac
    shift
done
if [ -n "\$IGNORE_TERM" ]; then
    trap '' TERM
else
    trap 'rm -f "\$pub"; echo "Mqtt5 Client stopped."; exit 0' TERM
fi
trap 'echo "got SIGHUP" >&2' HUP
: >"\$pub"
echo "Mqtt5 Client attempting connection..."
echo "Subscription Success."
while :; do sleep 1 & wait \$! || true; done
EOF
    chmod +x "$d/bin/iotbox"

    cat >"$d/defaults" <<EOF
# test defaults (fake daemon)
ENDPOINT=broker.example.test
CERT="$d/dev ice.cert.pem"
KEY=$d/device.private.key
CA_FILE=
CLIENT_ID=basicPubSub
TOPICS="sdk/test/python  sdk/test/+/x  a/#  *"
PUB_SOCKET=$d/smsg
SUB_SOCKET=$d/rmsg
LOG_FILE=$d/log/iotbox.log
EXTRA_ARGS="--port 8883 --verbosity Debug"
EOF
    local envf=$d/env
    printf '%s\n' "IOTBOX_DEFAULTS=$d/defaults" "DAEMON=$d/bin/iotbox" \
        "PIDFILE=$d/iotbox.pid" "START_STOP_DAEMON=$ssd" "STOP_TIMEOUT=3" \
        "DEFAULT_SPOOL_DIR=$d/var/lib/iotbox" >"$envf"
    pidfiles+=("$d/iotbox.pid")

    initd "$envf" status
    expect_rc 3 "status before start"
    expect_out '^iotbox is not running$' "status before start says not running"

    initd "$envf" start
    expect_rc 0 "start"
    initd "$envf" status
    expect_rc 0 "status after start"
    local pid
    pid=$(pid_from "$d/iotbox.pid")
    expect_out "^iotbox is running \\(pid $pid\\)\$" "status names the pid from the pidfile"
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = iotbox ]; then
        ok "pidfile holds the daemon's own pid"
    else
        fail "pidfile pid '$pid' is not the daemon"
    fi
    wait_for 5 "fake daemon output in LOG_FILE" grep -q '^Subscription Success\.$' "$d/log/iotbox.log" &&
        ok "daemon stdout goes to LOG_FILE"

    local want
    want=$(printf '%s\n' pubsub --endpoint broker.example.test --cert "$d/dev ice.cert.pem" \
        --key "$d/device.private.key" --client_id basicPubSub \
        --topic sdk/test/python --topic 'sdk/test/+/x' --topic 'a/#' --topic '*' \
        --pub_socket "$d/smsg" --sub_socket "$d/rmsg" --log_file "$d/log/iotbox.log" \
        --port 8883 --verbosity Debug)
    if [ "$(cat "$d/args" 2>/dev/null)" = "$want" ]; then
        ok "arguments built from the defaults file"
    else
        fail "arguments: got '$(tr '\n' ' ' <"$d/args")', want '$(echo "$want" | tr '\n' ' ')'"
    fi
    # No SPOOL_DIR: no --spool_dir (the daemon's default), and start made
    # that default directory (DEFAULT_SPOOL_DIR here), 0700.
    if [ -d "$d/var/lib/iotbox" ] && [ "$(mode_of "$d/var/lib/iotbox")" = 700 ]; then
        ok "start created the default spool directory, mode 0700"
    else
        fail "default spool directory $d/var/lib/iotbox: mode '$(mode_of "$d/var/lib/iotbox")', want a directory with 700"
    fi

    initd "$envf" start
    expect_rc 0 "start while running"
    expect_out 'already running' "start while running says so"
    if [ "$(pid_from "$d/iotbox.pid")" = "$pid" ]; then ok "no second daemon"; else fail "start while running replaced the pid"; fi

    initd "$envf" reload
    expect_rc 0 "reload"
    wait_for 5 "SIGHUP to reach the daemon" grep -q 'got SIGHUP' "$d/log/iotbox.log" &&
        ok "reload sends SIGHUP"

    initd "$envf" restart
    expect_rc 0 "restart"
    local pid2
    pid2=$(pid_from "$d/iotbox.pid")
    if [ -n "$pid2" ] && [ "$pid2" != "$pid" ]; then ok "restart started a new process"; else fail "restart: pid $pid -> $pid2"; fi

    initd "$envf" stop
    expect_rc 0 "stop"
    initd "$envf" status
    expect_rc 3 "status after stop"
    expect_out '^iotbox is not running$' "status after stop says not running"
    if [ ! -e "$d/smsg" ]; then ok "publish socket removed"; else fail "publish socket still there after stop"; fi
    if [ ! -e "$d/iotbox.pid" ]; then ok "pidfile removed"; else fail "pidfile still there after stop"; fi
    if alive "$pid2"; then fail "daemon $pid2 still alive after stop"; else ok "daemon gone after stop"; fi

    initd "$envf" stop
    expect_rc 0 "stop when not running"

    echo 999999 >"$d/iotbox.pid"
    initd "$envf" status
    expect_rc 1 "status with a stale pidfile"
    initd "$envf" start
    expect_rc 0 "start over a stale pidfile"
    initd "$envf" stop
    expect_rc 0 "stop after start over a stale pidfile"

    # A daemon that ignores SIGTERM is killed after STOP_TIMEOUT.
    printf '%s\n' "IGNORE_TERM=1" >>"$envf"
    initd "$envf" start
    expect_rc 0 "start (daemon ignoring SIGTERM)"
    pid=$(pid_from "$d/iotbox.pid")
    initd "$envf" stop
    expect_rc 0 "stop falls back to SIGKILL"
    expect_out 'SIGKILL' "stop says it used SIGKILL"
    if alive "$pid"; then fail "daemon $pid survived SIGKILL"; else ok "stubborn daemon gone"; fi

    # SYSLOG=yes: output goes to logger (a stand-in here) through a fifo that
    # is unlinked once both ends are open.
    mkdir -p "$d/fakebin" "$d/tmp"
    cat >"$d/fakebin/logger" <<EOF
#!/bin/sh
echo "\$*" >"$d/logger.args"
exec cat >>"$d/syslog.out"
EOF
    chmod +x "$d/fakebin/logger"
    sed 's/^LOG_FILE=.*/LOG_FILE=/' "$d/defaults" >"$d/defaults-syslog"
    echo "SYSLOG=yes" >>"$d/defaults-syslog"
    printf '%s\n' "IOTBOX_DEFAULTS=$d/defaults-syslog" "DAEMON=$d/bin/iotbox" \
        "PIDFILE=$d/iotbox.pid" "START_STOP_DAEMON=$ssd" "TMPDIR=$d/tmp" \
        "PATH=$d/fakebin:$PATH" "DEFAULT_SPOOL_DIR=$d/var/lib/iotbox" >"$d/env-syslog"
    initd "$d/env-syslog" start
    expect_rc 0 "start with SYSLOG=yes"
    wait_for 5 "daemon output to reach logger" grep -q '^Subscription Success\.$' "$d/syslog.out" &&
        ok "SYSLOG=yes sends the output to logger"
    if [ "$(cat "$d/logger.args" 2>/dev/null)" = "-t iotbox" ]; then ok "logger tag is iotbox"; else fail "logger args: $(cat "$d/logger.args" 2>/dev/null)"; fi
    if grep -q -- '--log_file' "$d/args"; then fail "--log_file passed with SYSLOG=yes"; else ok "no --log_file with SYSLOG=yes"; fi
    if [ -z "$(ls -A "$d/tmp")" ]; then ok "logger fifo unlinked"; else fail "left in TMPDIR: $(ls -A "$d/tmp")"; fi
    initd "$d/env-syslog" stop
    expect_rc 0 "stop with SYSLOG=yes"
    wait_for 5 "Mqtt5 Client stopped. in the syslog stand-in" grep -q '^Mqtt5 Client stopped\.$' "$d/syslog.out" &&
        ok "output after SIGTERM still reaches logger"

    # Spool settings. spool_start NAME SPOOL_DIR SPOOL_SIZE: start with them
    # added to the defaults (DEFAULT_SPOOL_DIR=$d/NAME-default), in an empty
    # working directory $d/NAME-cwd; leaves the daemon running.
    spool_start() {
        local name=$1
        { cat "$d/defaults"; printf 'SPOOL_DIR="%s"\nSPOOL_SIZE=%s\n' "$2" "$3"; } >"$d/defaults-$name"
        printf '%s\n' "IOTBOX_DEFAULTS=$d/defaults-$name" "DAEMON=$d/bin/iotbox" \
            "PIDFILE=$d/iotbox.pid" "START_STOP_DAEMON=$ssd" "STOP_TIMEOUT=3" \
            "DEFAULT_SPOOL_DIR=$d/$name-default" >"$d/env-$name"
        mkdir -p "$d/$name-cwd"
        rm -f "$d/args"
        cd "$d/$name-cwd"
        initd "$d/env-$name" start
        cd - >/dev/null
        expect_rc 0 "start with SPOOL_DIR=$2 SPOOL_SIZE=$3"
        wait_for 5 "the fake daemon to record its arguments" test -s "$d/args" || true
    }
    local spool="$d/spool dir/queue"
    spool_start set "$spool" 1048576
    want=$(printf '%s\n' pubsub --endpoint broker.example.test --cert "$d/dev ice.cert.pem" \
        --key "$d/device.private.key" --client_id basicPubSub \
        --topic sdk/test/python --topic 'sdk/test/+/x' --topic 'a/#' --topic '*' \
        --pub_socket "$d/smsg" --sub_socket "$d/rmsg" \
        --spool_dir "$spool" --spool_size 1048576 --log_file "$d/log/iotbox.log" \
        --port 8883 --verbosity Debug)
    if [ "$(cat "$d/args" 2>/dev/null)" = "$want" ]; then
        ok "SPOOL_DIR and SPOOL_SIZE passed as --spool_dir and --spool_size"
    else
        fail "arguments with SPOOL_DIR: got '$(tr '\n' ' ' <"$d/args")', want '$(echo "$want" | tr '\n' ' ')'"
    fi
    if [ -d "$spool" ] && [ "$(mode_of "$spool")" = 700 ]; then
        ok "start created SPOOL_DIR and its parent, mode 0700"
    else
        fail "SPOOL_DIR $spool: mode '$(mode_of "$spool")', want a directory with 700"
    fi
    if [ ! -e "$d/set-default" ]; then ok "default spool directory not made when SPOOL_DIR is set"; else fail "$d/set-default made although SPOOL_DIR is set"; fi
    initd "$d/env-set" stop
    expect_rc 0 "stop (SPOOL_DIR set)"

    mkdir -m 0750 "$d/existing-spool"
    : >"$d/existing-spool/segment"
    spool_start existing "$d/existing-spool" ""
    if [ "$(mode_of "$d/existing-spool")" = 750 ] && [ -f "$d/existing-spool/segment" ]; then
        ok "an existing spool directory is left as it is"
    else
        fail "existing spool directory: mode $(mode_of "$d/existing-spool"), contents: $(find "$d/existing-spool" -mindepth 1 -printf '%f ')"
    fi
    if grep -q -- '--spool_size' "$d/args"; then fail "--spool_size passed with SPOOL_SIZE empty"; else ok "no --spool_size with SPOOL_SIZE empty"; fi
    initd "$d/env-existing" stop
    expect_rc 0 "stop (existing spool directory)"

    spool_start none none ""
    if grep -qxF -- '--spool_dir' "$d/args" && grep -qxF none "$d/args"; then
        ok "SPOOL_DIR=none passed as --spool_dir none"
    else
        fail "SPOOL_DIR=none: arguments '$(tr '\n' ' ' <"$d/args")'"
    fi
    if [ ! -e "$d/none-default" ] && [ -z "$(ls -A "$d/none-cwd")" ]; then
        ok "SPOOL_DIR=none creates no directory"
    else
        fail "SPOOL_DIR=none: made $(ls -d "$d/none-default" 2>/dev/null) $(find "$d/none-cwd" -mindepth 1 -printf '%f ')"
    fi
    initd "$d/env-none" stop
    expect_rc 0 "stop (SPOOL_DIR=none)"

    # A directory that cannot be made is not fatal: the daemon falls back to
    # memory and says so itself.
    : >"$d/not-a-dir"
    spool_start unusable "$d/not-a-dir/spool" ""
    expect_out 'cannot create spool directory' "start says the spool directory cannot be made"
    if grep -qxF -- "$d/not-a-dir/spool" "$d/args"; then ok "the daemon still gets --spool_dir (and falls back itself)"; else fail "unusable SPOOL_DIR not passed: $(tr '\n' ' ' <"$d/args")"; fi
    initd "$d/env-unusable" stop
    expect_rc 0 "stop (unusable SPOOL_DIR)"

    # Failures the script reports before starting anything.
    printf '%s\n' "IOTBOX_DEFAULTS=$d/defaults" "DAEMON=$d/bin/missing" \
        "PIDFILE=$d/iotbox.pid" "START_STOP_DAEMON=$ssd" \
        "DEFAULT_SPOOL_DIR=$d/var/lib/iotbox" >"$d/env-missing"
    initd "$d/env-missing" start
    expect_rc 5 "start without the binary (LSB 5)"
    sed 's/^ENDPOINT=.*/ENDPOINT=/' "$d/defaults" >"$d/defaults-noendpoint"
    printf '%s\n' "IOTBOX_DEFAULTS=$d/defaults-noendpoint" "DAEMON=$d/bin/iotbox" \
        "PIDFILE=$d/iotbox.pid" "START_STOP_DAEMON=$ssd" \
        "DEFAULT_SPOOL_DIR=$d/var/lib/iotbox" >"$d/env-noendpoint"
    initd "$d/env-noendpoint" start
    expect_rc 6 "start without ENDPOINT (LSB 6)"

    # A daemon that exits at once (bad flags) is reported as a failed start.
    cat >"$d/bin/iotbox" <<'EOF'
#!/bin/sh
echo "pubsub: --cert: No such file or directory" >&2
exit 1
EOF
    initd "$envf" start
    expect_rc 1 "start of a daemon that exits at once"
    expect_out 'No such file' "failed start shows the log's last lines"

    # A DAEMON that execs something under another name is reported, and its
    # pidfile kept (this script's cleanup kills it through that pidfile).
    cat >"$d/bin/iotbox" <<'EOF'
#!/bin/sh
exec sleep 300
EOF
    printf '%s\n' "IOTBOX_DEFAULTS=$d/defaults" "DAEMON=$d/bin/iotbox" \
        "PIDFILE=$d/renamed.pid" "START_STOP_DAEMON=$ssd" \
        "DEFAULT_SPOOL_DIR=$d/var/lib/iotbox" >"$d/env-renamed"
    pidfiles+=("$d/renamed.pid")
    initd "$d/env-renamed" start
    expect_rc 1 "start of a daemon that changes its name"
    expect_out "runs as 'sleep', not 'iotbox'" "name mismatch is explained"
    if alive "$(pid_from "$d/renamed.pid")"; then ok "its pidfile is kept"; else fail "renamed daemon: pidfile lost"; fi

    initd "$envf" bogus
    expect_rc 2 "unknown action"
}

# The systemd unit builds the same argument list from the same defaults file:
# run its ExecStart shell (as systemd would hand it to /bin/sh) against a
# stand-in that prints its arguments, without and with the spool settings.
unit_part() {
    local d=$tmp/unit
    local unit=$root/recipe/recipes-connectivity/iotbox/files/iotbox.service
    mkdir -p "$d"
    echo "== systemd unit: ExecStart argument list"
    cat >"$d/iotbox" <<'EOF'
#!/bin/sh
printf '%s\n' "$@"
EOF
    chmod +x "$d/iotbox"
    # systemd joins "\"-continued lines with a space and turns "$$" into "$".
    local cmd script
    cmd=$(awk '/^ExecStart=/ { on = 1 }
        on { line = $0; more = sub(/\\$/, "", line); buf = buf line (more ? " " : "")
             if (!more) { print buf; exit } }' "$unit")
    cmd=${cmd#ExecStart=}
    cmd=${cmd//\$\$/\$}
    case $cmd in
        "/bin/sh -c '"*"'") ;;
        *) fail "unexpected ExecStart form: $cmd"; return ;;
    esac
    script=${cmd#"/bin/sh -c '"}
    script=${script%"'"}
    script=${script//\/usr\/bin\/iotbox/$d/iotbox}

    cat >"$d/defaults" <<EOF
ENDPOINT=broker.example.test
CERT="$d/dev ice.cert.pem"
KEY=$d/device.private.key
CA_FILE=
CLIENT_ID=basicPubSub
TOPICS="sdk/test/python  sdk/test/+/x  a/#  *"
PUB_SOCKET=$d/smsg
SUB_SOCKET=$d/rmsg
LOG_FILE=/var/log/iotbox.log
EXTRA_ARGS="--port 8883 --verbosity Debug"
EOF
    # unit_args DEFAULTS: the argument list ExecStart builds from it.
    # EnvironmentFile exports the settings; a file in the cwd checks that "*"
    # is not globbed.
    unit_args() {
        # shellcheck disable=SC2016 # expanded by the inner sh
        (cd "$d" && : >"$d/glob-bait" &&
            env -i PATH=/usr/bin:/bin sh -c 'set -a; . "$1"; set +a; exec sh -c "$2"' \
                sh "$1" "$script")
    }
    local got want
    got=$(unit_args "$d/defaults")
    want=$(printf '%s\n' pubsub --endpoint broker.example.test --cert "$d/dev ice.cert.pem" \
        --key "$d/device.private.key" --client_id basicPubSub \
        --topic sdk/test/python --topic 'sdk/test/+/x' --topic 'a/#' --topic '*' \
        --pub_socket "$d/smsg" --sub_socket "$d/rmsg" --port 8883 --verbosity Debug)
    if [ "$got" = "$want" ]; then
        ok "unit ExecStart builds the arguments from the defaults file"
    else
        fail "unit ExecStart arguments: got '$(echo "$got" | tr '\n' ' ')', want '$(echo "$want" | tr '\n' ' ')'"
    fi

    # SPOOL_DIR and SPOOL_SIZE, when set, are passed on (empty above: not).
    { cat "$d/defaults"; printf '%s\n' 'SPOOL_DIR="/var/spool dir/iotbox"' SPOOL_SIZE=1048576; } >"$d/defaults-spool"
    got=$(unit_args "$d/defaults-spool")
    want=$(printf '%s\n' pubsub --endpoint broker.example.test --cert "$d/dev ice.cert.pem" \
        --key "$d/device.private.key" --client_id basicPubSub \
        --topic sdk/test/python --topic 'sdk/test/+/x' --topic 'a/#' --topic '*' \
        --pub_socket "$d/smsg" --sub_socket "$d/rmsg" \
        --spool_dir "/var/spool dir/iotbox" --spool_size 1048576 --port 8883 --verbosity Debug)
    if [ "$got" = "$want" ]; then
        ok "unit ExecStart passes SPOOL_DIR and SPOOL_SIZE as --spool_dir and --spool_size"
    else
        fail "unit ExecStart arguments with SPOOL_DIR: got '$(echo "$got" | tr '\n' ' ')', want '$(echo "$want" | tr '\n' ' ')'"
    fi
    { cat "$d/defaults"; echo SPOOL_DIR=none; } >"$d/defaults-nospool"
    got=$(unit_args "$d/defaults-nospool")
    if [ "$(echo "$got" | grep -A1 -xF -- --spool_dir)" = "$(printf '%s\n' --spool_dir none)" ]; then
        ok "unit ExecStart passes SPOOL_DIR=none as --spool_dir none"
    else
        fail "unit ExecStart with SPOOL_DIR=none: '$(echo "$got" | tr '\n' ' ')'"
    fi
}

# ---------------------------------------------------------------- part 2 --
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

broker_port=
start_broker() {
    local c=$tmp/certs
    broker_port=$(free_port)
    cat >"$tmp/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
persistence false
log_dest file $tmp/mosquitto.log
log_type all
listener $broker_port 127.0.0.1
cafile $c/ca.pem
certfile $c/server.pem
keyfile $c/server.key
require_certificate true
use_identity_as_username true
set_tcp_nodelay true
EOF
    # As root, mosquitto drops to user "mosquitto", which cannot read the
    # 0700 temp dir: keep it as the user running the test.
    if [ "$(id -u)" = 0 ]; then echo "user root" >>"$tmp/mosquitto.conf"; fi
    mosquitto -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.out" 2>&1 &
    started_pids+=($!)
    wait_for 10 "mosquitto to listen on $broker_port" \
        grep -qs "Opening ipv4 listen socket on port $broker_port" "$tmp/mosquitto.log" ||
        { cat "$tmp/mosquitto.out" "$tmp/mosquitto.log" >&2 || true; die "mosquitto did not start"; }
    sleep 0.2
}

mqtt_tls=()
real_part() {
    local label=$1 ssd=$2 bin=$3
    local d=$tmp/real-$label
    mkdir -p "$d"
    use_shell_for "$label"
    echo "== part 2, real daemon $bin, mosquitto on 127.0.0.1:$broker_port, $label start-stop-daemon, init script run by: ${init_sh[*]}"
    local c=$tmp/certs
    local down="iotbox/initd-$label/down" up="iotbox/initd-$label/up"
    cat >"$d/defaults" <<EOF
ENDPOINT=127.0.0.1
CERT=$c/device.pem
KEY=$c/device.key
CA_FILE=$c/ca.pem
CLIENT_ID=iotbox-initd-$label-$$
TOPICS="$down"
PUB_SOCKET=$d/smsg
SUB_SOCKET=$d/rmsg
LOG_FILE=$d/iotbox.log
EXTRA_ARGS="--port $broker_port"
EOF
    # A binary with the spool gets its own directory in the temp dir; one
    # without it gets no --spool_dir (an empty SPOOL_DIR), and start makes
    # DEFAULT_SPOOL_DIR.
    local spool=$d/var/lib/iotbox has_spool=no
    if "$bin" pubsub --help 2>&1 | grep -q -- '--spool[_-]dir'; then
        has_spool=yes
        spool=$d/spool
        echo "SPOOL_DIR=$spool" >>"$d/defaults"
    fi
    local envf=$d/env
    printf '%s\n' "IOTBOX_DEFAULTS=$d/defaults" "DAEMON=$bin" \
        "PIDFILE=$d/iotbox.pid" "START_STOP_DAEMON=$ssd" "STOP_TIMEOUT=10" \
        "DEFAULT_SPOOL_DIR=$d/var/lib/iotbox" >"$envf"
    pidfiles+=("$d/iotbox.pid")

    initd "$envf" start
    expect_rc 0 "start"
    initd "$envf" status
    expect_rc 0 "status after start"
    expect_out '^iotbox is running \(pid [0-9]+\)$' "status says running with a pid"
    if ! wait_for 20 "'Subscription Success.' in $d/iotbox.log" \
            grep -q '^Subscription Success\.' "$d/iotbox.log"; then
        echo "--- $d/iotbox.log" >&2; tail -n 20 "$d/iotbox.log" >&2 || true
        initd "$envf" stop
        return
    fi
    ok "daemon subscribed (log shows Subscription Success.)"
    if [ -d "$spool" ] && [ "$(mode_of "$spool")" = 700 ]; then
        ok "spool directory ${spool#"$d"/} is there, mode 0700"
    else
        fail "spool directory $spool: mode '$(mode_of "$spool")', want a directory with 700"
    fi
    if [ $has_spool = yes ]; then
        if [ -n "$(ls -A "$spool" 2>/dev/null)" ]; then
            ok "the daemon uses SPOOL_DIR (files in it: $(find "$spool" -mindepth 1 -printf '%f '))"
        else
            fail "SPOOL_DIR $spool is empty while the daemon runs (no lock file)"
        fi
    fi

    initd "$envf" reload
    expect_rc 0 "reload (SIGHUP)"
    initd "$envf" status
    expect_rc 0 "still running after reload"

    # Publish direction: iotbox send -> daemon -> broker -> mosquitto_sub.
    mosquitto_sub "${mqtt_tls[@]}" -i "observer-$label-$$" -v -t "$up" -C 1 -W 30 \
        >"$d/sub.out" 2>&1 &
    local sub_pid=$!
    started_pids+=("$sub_pid")
    # (mosquitto_sub's own output is block-buffered into a file: ask the broker.)
    wait_for 10 "mosquitto_sub to be subscribed" \
        grep -q "Sending SUBACK to observer-$label-$$" "$tmp/mosquitto.log" || true
    local payload="hello from test-initd $label $$ $RANDOM"
    printf '%s\n%s' "$up" "$payload" >"$d/message.txt"
    if out=$("$bin" send "$d/smsg" "$d/message.txt" 2>&1); then
        ok "iotbox send through the init-started daemon: $out"
    else
        fail "iotbox send failed: $out"
    fi
    local end=$((SECONDS + 20))
    while kill -0 "$sub_pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
    if grep -qF -- "$up $payload" "$d/sub.out"; then
        ok "mosquitto_sub received the message"
    else
        fail "mosquitto_sub did not receive '$payload': $(tr '\n' '|' <"$d/sub.out")"
    fi

    # Delivery direction: mosquitto_pub -> broker -> daemon -> iotbox recv.
    "$bin" recv "$d/rmsg" 1 >"$d/recv.out" 2>&1 &
    local recv_pid=$!
    started_pids+=("$recv_pid")
    wait_for 10 "iotbox recv to bind $d/rmsg" test -S "$d/rmsg" || true
    local payload2="down $label $$ $RANDOM"
    mosquitto_pub "${mqtt_tls[@]}" -i "pub-$label-$$" -t "$down" -q 1 -m "$payload2" ||
        fail "mosquitto_pub failed"
    end=$((SECONDS + 20))
    while kill -0 "$recv_pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
    if grep -qF -- "$payload2" "$d/recv.out"; then
        ok "iotbox recv got the message from the broker"
    else
        fail "iotbox recv did not get '$payload2': $(tr '\n' '|' <"$d/recv.out")"
    fi

    local pid
    pid=$(pid_from "$d/iotbox.pid")
    initd "$envf" stop
    expect_rc 0 "stop"
    if grep -q 'SIGKILL' <<<"$out"; then fail "daemon ignored SIGTERM for ${STOP_TIMEOUT:-10}s"; fi
    initd "$envf" status
    expect_rc 3 "status after stop"
    expect_out '^iotbox is not running$' "status after stop says not running"
    if [ ! -e "$d/smsg" ]; then ok "publish socket removed by the daemon"; else fail "publish socket $d/smsg still exists"; fi
    if alive "$pid"; then fail "daemon $pid still alive"; else ok "daemon exited"; fi
    if grep -q '^Mqtt5 Client stopped\.' "$d/iotbox.log"; then ok "log ends with Mqtt5 Client stopped."; else fail "no 'Mqtt5 Client stopped.' in the log"; fi
}

if [ $run_fake = 1 ]; then
    unit_part
    for s in "${ssds[@]}"; do
        fake_part "${s%%=*}" "${s#*=}"
    done
fi

if [ $run_real = 1 ]; then
    for tool in mosquitto mosquitto_sub mosquitto_pub; do
        if ! command -v "$tool" >/dev/null && [ -x "$root/scripts/deps.sh" ]; then
            "$root/scripts/deps.sh" test || true
            break
        fi
    done
    for tool in mosquitto mosquitto_sub mosquitto_pub python3; do
        command -v "$tool" >/dev/null ||
            die "$tool not found (Debian: apt-get install mosquitto mosquitto-clients python3)"
    done
    bin=${IOTBOX_BIN:-$root/target/release/iotbox}
    case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
    if [ ! -x "$bin" ]; then
        [ -z "${IOTBOX_BIN:-}" ] || die "IOTBOX_BIN=$IOTBOX_BIN is not an executable"
        echo "test-initd: $bin missing; cargo build --release"
        (cd "$root" && cargo build --release) || die "cargo build --release failed"
    fi
    # ca, server (localhost) and the clients device (the daemon's) and
    # observer (mosquitto_sub/_pub's), CN = name (use_identity_as_username).
    "$root/scripts/pki.sh" "$tmp/certs" device observer || die "scripts/pki.sh could not make the certificates"
    start_broker
    mqtt_tls=(-h 127.0.0.1 -p "$broker_port" --cafile "$tmp/certs/ca.pem"
        --cert "$tmp/certs/observer.pem" --key "$tmp/certs/observer.key")
    for s in "${ssds[@]}"; do
        real_part "${s%%=*}" "${s#*=}" "$bin"
    done
fi

if [ $system_spool_before = no ] && [ -e "$system_spool" ]; then
    fail "$system_spool appeared during the test"
else
    ok "$system_spool not created by the test"
fi

echo "test-initd: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
