#!/usr/bin/env bash
# Test recipe/recipes-connectivity/iotbox/files/iotbox.init against a temporary
# configuration (nothing outside a temp dir is touched).
#
# Part 1 (fake daemon): start/status/reload/restart/stop, stale pidfile, the
#   arguments built from the defaults file, SIGKILL after STOP_TIMEOUT, the
#   spool directory (created 0700 by start, SPOOL_DIR and SPOOL_SIZE passed
#   on, nothing created for SPOOL_DIR=none); the job runner (JOBS_EXEC: its
#   arguments, both pids in status, stop ending runner, its running
#   handler's process group and the daemon, a runner left after JOBS_EXEC
#   was emptied, a handler that runs restart itself); with a small sh script
#   standing in for iotbox. Needs no broker.
# systemd units: the ExecStart lines of iotbox.service and
#   iotbox-jobs.service, and the latter's ExecCondition, run against
#   defaults files.
# Part 2 (real daemon): the real binary (IOTBOX_BIN) against a real mosquitto
#   with mutual TLS on 127.0.0.1 (free port, certificates from scripts/pki.sh):
#   start -> status 0 -> "Subscription Success." in the log -> reload ->
#   "iotbox send" reaches a mosquitto_sub -> a mosquitto_pub reaches
#   "iotbox recv" on the delivery socket -> stop -> status 3 -> the publish
#   socket is gone. The spool directory is made in the temp dir (SPOOL_DIR
#   when the binary has --spool_dir, else DEFAULT_SPOOL_DIR). With JOBS_EXEC
#   set (when the binary has "jobs"), the real job runner runs beside it on
#   the daemon's local socket (in the temp dir): its jobs/get reaches the
#   broker, it retries when no answer comes, stop ends it first.
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
    # Job handlers the fake runner started (their own process groups), while
    # their leader or child is still the process the test started.
    local hpid hpgid hchild
    if [ -r "$tmp/handler-ids" ]; then
        while read -r hpid hpgid hchild; do
            if grep -qF "$tmp" "/proc/$hpgid/cmdline" 2>/dev/null; then kill -KILL "-$hpgid" 2>/dev/null || true; fi
            if [ "$(tr '\0' ' ' 2>/dev/null <"/proc/$hchild/cmdline")" = "sleep 300 " ]; then kill -KILL "$hchild" 2>/dev/null || true; fi
        done <"$tmp/handler-ids"
    fi
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

# stat_field PID N: field N of /proc/PID/stat (4 the parent, 5 the process
# group), empty if there is no such process.
stat_field() {
    local stat
    local -a fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    read -r -a fields <<<"${stat##*) }"
    echo "${fields[$(($2 - 3))]}"
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
    # As "iotbox jobs" it stands in for the job runner: records its argv in
    # jobs-args and, with FAKE_HANDLER=1, runs its --exec handler as the
    # runner does: /bin/sh -c in a process group of its own, the output
    # through a pipe that the runner reads and that ends with it.
    cat >"$d/bin/iotbox" <<EOF
#!/bin/sh
cmd=\$1
case \$cmd in
    jobs) printf '%s\n' "\$@" >"$d/jobs-args" ;;
    *) printf '%s\n' "\$@" >"$d/args" ;;
esac
pub= handler= reader=
while [ \$# -gt 0 ]; do
    case \$1 in --pub_socket) pub=\$2; shift ;; --exec) handler=\$2; shift ;; esac
    shift
done
if [ -n "\$IGNORE_TERM" ]; then
    trap '' TERM
elif [ "\$cmd" = jobs ]; then
    trap 'kill "\$reader" 2>/dev/null; exit 143' TERM
else
    trap 'rm -f "\$pub"; echo "Mqtt5 Client stopped."; exit 0' TERM
fi
trap 'echo "\$cmd got SIGHUP" >&2' HUP
if [ "\$cmd" = jobs ]; then
    echo "job fake-job: waiting for jobs"
    if [ -n "\$FAKE_HANDLER" ]; then
        f=$d/handler-out.\$\$
        rm -f "\$f"
        mkfifo "\$f"
        cat <"\$f" &
        reader=\$!
        setsid /bin/sh -c "\$handler" </dev/null >"\$f" 2>&1 &
    fi
else
    : >"\$pub"
    echo "Mqtt5 Client attempting connection..."
    echo "Subscription Success."
fi
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
    if printf '%s\n' "$out" | grep -q jobs; then
        fail "status without JOBS_EXEC mentions a job runner: $out"
    else
        ok "status without JOBS_EXEC says nothing about a job runner"
    fi
    if [ ! -e "$d/iotbox-jobs.pid" ] && [ ! -e "$d/jobs-args" ]; then
        ok "no job runner started without JOBS_EXEC"
    else
        fail "a job runner was started without JOBS_EXEC"
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
echo "\$*" >>"$d/logger.args"
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

    jobs_part "$ssd"

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

# The job runner (JOBS_EXEC), with the fake daemon of fake_part standing in
# for both; uses fake_part's $d and init_sh. SSD: the start-stop-daemon.
jobs_part() {
    local ssd=$1
    echo "-- the job runner (JOBS_EXEC)"
    # A job's handler: prints its arguments, records "pid pgid child" in
    # handler.ids and waits for its child (a sleep). --stubborn: ignores
    # SIGTERM (and so does its child). --restart: runs the init script's
    # restart, once, and says how it ended in handler-restart.rc.
    cat >"$d/job handler" <<EOF
#!/bin/sh
mode=\$1
printf 'handler args:'; printf ' [%s]' "\$@"; echo
if [ "\$mode" = --restart ] && mkdir "$d/restarted" 2>/dev/null; then
    sleep 2
    ${init_sh[*]} "$init" restart
    echo "restart exit \$?" >"$d/handler-restart.rc"
    exit 0
fi
[ "\$mode" = --stubborn ] && trap '' TERM
sleep 300 &
s=\$(cat /proc/\$\$/stat)
set -- \${s##*) }
echo "\$\$ \$3 \$!" >>"$tmp/handler-ids"
echo "\$\$ \$3 \$!" >"$d/handler.ids.new" && mv "$d/handler.ids.new" "$d/handler.ids"
wait
EOF
    chmod +x "$d/job handler"

    # jobs_env NAME [VAR=VALUE...] <SETTINGS: defaults-NAME, the fake
    # daemon's with a log of its own and SETTINGS added, and env-NAME with
    # FAKE_HANDLER=1 and the VAR=VALUEs.
    jobs_env() {
        local name=$1
        shift
        { grep -v '^LOG_FILE=' "$d/defaults"; echo "LOG_FILE=$d/log/$name.log"; cat; } >"$d/defaults-$name"
        printf '%s\n' "IOTBOX_DEFAULTS=$d/defaults-$name" "DAEMON=$d/bin/iotbox" \
            "PIDFILE=$d/iotbox.pid" "START_STOP_DAEMON=$ssd" "STOP_TIMEOUT=3" \
            "DEFAULT_SPOOL_DIR=$d/var/lib/iotbox" "FAKE_HANDLER=1" "$@" >"$d/env-$name"
    }
    # handler_ids: "pid pgid child" of the handler started last, once it
    # has written them (sets hpid, hpgid, hchild).
    handler_ids() {
        hpid='' hpgid='' hchild=''
        wait_for 5 "the job's handler to start" test -s "$d/handler.ids" || return 1
        read -r hpid hpgid hchild <"$d/handler.ids"
    }
    # group_gone PGID: no process is left in that process group (zombies
    # waiting for init to reap them aside), within a second.
    group_gone() {
        [ -n "$1" ] || return 1
        local end=$((SECONDS + 2)) f stat
        local -a fields
        while [ "$SECONDS" -lt "$end" ]; do
            local left=no
            for f in /proc/[0-9]*/stat; do
                read -r stat 2>/dev/null <"$f" || continue
                read -r -a fields <<<"${stat##*) }"
                if [ "${fields[2]}" = "$1" ] && [ "${fields[0]}" != Z ]; then left=yes; break; fi
            done
            [ $left = no ] && return 0
            sleep 0.1
        done
        return 1
    }
    local jobs_pid=$d/iotbox-jobs.pid
    pidfiles+=("$jobs_pid")

    jobs_env jobs <<EOF
JOBS_EXEC="'$d/job handler' --note \"it's a test\""
JOBS_TIMEOUT=600
JOBS_ARGS="--socket $d/mqtt  --thing_name pi-7"
EOF
    rm -f "$d/jobs-args" "$d/handler.ids"
    initd "$d/env-jobs" start
    expect_rc 0 "start with JOBS_EXEC"
    expect_out '^Starting iotbox jobs$' "start says it starts the job runner"
    local want
    want=$(printf '%s\n' jobs --exec "'$d/job handler' --note \"it's a test\"" --timeout 600 \
        --socket "$d/mqtt" --thing_name pi-7)
    wait_for 5 "the job runner to record its arguments" test -s "$d/jobs-args" || true
    if [ "$(cat "$d/jobs-args" 2>/dev/null)" = "$want" ]; then
        ok "job runner started with jobs --exec JOBS_EXEC --timeout JOBS_TIMEOUT JOBS_ARGS"
    else
        fail "job runner arguments: got '$(tr '\n' ' ' <"$d/jobs-args" 2>/dev/null)', want '$(echo "$want" | tr '\n' ' ')'"
    fi
    local dpid rpid
    dpid=$(pid_from "$d/iotbox.pid")
    rpid=$(pid_from "$jobs_pid")
    if [ -n "$rpid" ] && [ "$rpid" != "$dpid" ] && [ "$(cat "/proc/$rpid/comm" 2>/dev/null)" = iotbox ] &&
        grep -qxF pubsub "$d/args"; then
        ok "the runner's pidfile (PIDFILE's name -jobs.pid) holds the runner's own pid, the daemon's the daemon's"
    else
        fail "pids: daemon '$dpid', runner '$rpid' ($(cat "/proc/$rpid/comm" 2>/dev/null))"
    fi
    initd "$d/env-jobs" status
    expect_rc 0 "status with the runner"
    expect_out "^iotbox is running \\(pid $dpid\\)\$" "status names the daemon's pid"
    expect_out "^iotbox jobs is running \\(pid $rpid\\)\$" "status names the runner's pid"
    if handler_ids; then
        # (The group's leader is the runner's /bin/sh -c, or the handler
        # itself when that sh execs it.)
        if [ "$(stat_field "$hpgid" 4)" = "$rpid" ] && [ "$(stat_field "$hpgid" 5)" = "$hpgid" ] &&
            [ "$(stat_field "$rpid" 5)" != "$hpgid" ]; then
            ok "the job's handler runs in a process group of its own, led by the runner's child"
        else
            fail "handler $hpid: group $hpgid (leader's parent $(stat_field "$hpgid" 4)), runner $rpid"
        fi
    fi
    wait_for 5 "the handler's arguments in the log" \
        grep -qxF "handler args: [--note] [it's a test]" "$d/log/jobs.log" &&
        ok "JOBS_EXEC reaches /bin/sh -c as one word (blanks and quotes intact)"
    if grep -qx 'job fake-job: waiting for jobs' "$d/log/jobs.log"; then ok "the runner's output goes to LOG_FILE"; else fail "no runner output in LOG_FILE"; fi

    initd "$d/env-jobs" start
    expect_rc 0 "start while both run"
    expect_out '^iotbox jobs is already running' "start says the runner is already running"
    if [ "$(pid_from "$jobs_pid")" = "$rpid" ]; then ok "no second runner"; else fail "start while running replaced the runner"; fi

    initd "$d/env-jobs" reload
    expect_rc 0 "reload with the runner"
    wait_for 5 "SIGHUP to reach the daemon" grep -q 'pubsub got SIGHUP' "$d/log/jobs.log" || true
    sleep 0.3
    if grep -q 'jobs got SIGHUP' "$d/log/jobs.log"; then fail "reload sent SIGHUP to the runner"; else ok "reload leaves the runner alone"; fi

    initd "$d/env-jobs" stop
    expect_rc 0 "stop with the runner"
    if printf '%s\n' "$out" | awk '/^Stopping iotbox jobs$/ { j = NR } /^Stopping iotbox$/ { i = NR } END { exit !(j && i && j < i) }'; then
        ok "stop stops the runner, then the daemon"
    else
        fail "stop order: $out"
    fi
    expect_out "^Stopping the running job's handler \\(process group $hpgid\\)\$" "stop says it stops the handler's process group"
    if ! alive "$rpid" && ! alive "$dpid"; then ok "runner and daemon gone after stop"; else fail "after stop: runner $rpid or daemon $dpid alive"; fi
    if group_gone "$hpgid" && ! alive "$hchild"; then ok "the handler's process group (handler and its child) gone after stop"; else fail "handler group $hpgid still there after stop"; fi
    if [ ! -e "$jobs_pid" ] && [ ! -e "$d/iotbox.pid" ]; then ok "both pidfiles removed"; else fail "pidfiles left: $(ls "$d"/*.pid 2>/dev/null)"; fi
    initd "$d/env-jobs" status
    expect_rc 3 "status after stop (the daemon's)"
    expect_out '^iotbox jobs is not running$' "status after stop says the runner is not running"

    # JOBS_EXEC set while the daemon runs: start adds the runner.
    jobs_env nojobs </dev/null
    initd "$d/env-nojobs" start
    expect_rc 0 "start without JOBS_EXEC"
    dpid=$(pid_from "$d/iotbox.pid")
    rm -f "$d/handler.ids"
    initd "$d/env-jobs" start
    expect_rc 0 "start with JOBS_EXEC while the daemon runs"
    if [ "$(pid_from "$d/iotbox.pid")" = "$dpid" ] && alive "$(pid_from "$jobs_pid")"; then
        ok "start adds the runner, the daemon is left running"
    else
        fail "start with JOBS_EXEC while the daemon runs: daemon $dpid -> $(pid_from "$d/iotbox.pid"), runner '$(pid_from "$jobs_pid")'"
    fi
    rpid=$(pid_from "$jobs_pid")
    handler_ids || true
    # JOBS_EXEC emptied since: status still shows the runner, stop stops it.
    initd "$d/env-nojobs" status
    expect_rc 0 "status with JOBS_EXEC emptied, runner still running"
    expect_out "^iotbox jobs is running \\(pid $rpid\\)\$" "status shows a runner left running"
    initd "$d/env-nojobs" stop
    expect_rc 0 "stop with JOBS_EXEC emptied"
    expect_out '^Stopping iotbox jobs$' "stop stops a runner left running"
    if ! alive "$rpid" && group_gone "$hpgid" && [ ! -e "$jobs_pid" ] && [ ! -e "$d/iotbox.pid" ]; then
        ok "runner, handler, daemon and pidfiles gone"
    else
        fail "after stop with JOBS_EXEC emptied: runner $rpid alive? $(alive "$rpid" && echo yes), handler group $hpgid, pidfiles $(ls "$d"/*.pid 2>/dev/null)"
    fi

    # No JOBS_TIMEOUT: no --timeout (the runner's default); a handler that
    # ignores SIGTERM gets SIGKILL after STOP_TIMEOUT.
    jobs_env stubborn <<EOF
JOBS_EXEC="'$d/job handler' --stubborn"
JOBS_TIMEOUT=
JOBS_ARGS=""
EOF
    rm -f "$d/jobs-args" "$d/handler.ids"
    initd "$d/env-stubborn" start
    expect_rc 0 "start (handler ignoring SIGTERM)"
    wait_for 5 "the job runner to record its arguments" test -s "$d/jobs-args" || true
    if [ "$(cat "$d/jobs-args" 2>/dev/null)" = "$(printf '%s\n' jobs --exec "'$d/job handler' --stubborn")" ]; then
        ok "no --timeout with JOBS_TIMEOUT empty, nothing from an empty JOBS_ARGS"
    else
        fail "arguments without JOBS_TIMEOUT: $(tr '\n' ' ' <"$d/jobs-args" 2>/dev/null)"
    fi
    handler_ids || true
    initd "$d/env-stubborn" stop
    expect_rc 0 "stop (handler ignoring SIGTERM)"
    expect_out 'handler \(process group [0-9]+\) is still running after 3s, sending SIGKILL' "stop says it used SIGKILL on the handler"
    if group_gone "$hpgid"; then ok "stubborn handler's group gone"; else fail "handler group $hpgid survived SIGKILL"; fi

    # A job whose handler runs the init script's restart: the stop leaves
    # that handler (its own process group) running, and the restart goes
    # through although the handler's output, where the script writes, ends
    # with the old runner.
    jobs_env restart <<EOF
JOBS_EXEC="'$d/job handler' --restart"
EOF
    rm -rf "$d/restarted" "$d/handler-restart.rc" "$d/handler.ids"
    initd "$d/env-restart" start
    expect_rc 0 "start (a handler that restarts iotbox)"
    dpid=$(pid_from "$d/iotbox.pid")
    rpid=$(pid_from "$jobs_pid")
    if wait_for 20 "the handler's restart to end" test -s "$d/handler-restart.rc"; then
        if [ "$(cat "$d/handler-restart.rc")" = "restart exit 0" ]; then
            ok "restart run by a job's handler completes (exit 0), the handler is left to finish"
        else
            fail "restart from the handler: $(cat "$d/handler-restart.rc"); log: $(tr '\n' '|' <"$d/log/restart.log")"
        fi
    fi
    handler_ids || true
    initd "$d/env-restart" status
    expect_rc 0 "status after the handler's restart"
    local dpid2 rpid2
    dpid2=$(pid_from "$d/iotbox.pid")
    rpid2=$(pid_from "$jobs_pid")
    if [ -n "$dpid2" ] && [ "$dpid2" != "$dpid" ] && [ -n "$rpid2" ] && [ "$rpid2" != "$rpid" ] &&
        printf '%s\n' "$out" | grep -q "^iotbox jobs is running (pid $rpid2)\$"; then
        ok "the handler's restart started a new daemon and a new runner"
    else
        fail "after the handler's restart: daemon $dpid -> $dpid2, runner $rpid -> $rpid2: $out"
    fi
    if grep -q "stopped from the running job's handler (process group [0-9]*), which is left running" "$d/log/restart.log"; then
        ok "the stop said it left the handler that ran it"
    else
        fail "no word in the log about the handler that ran the stop: $(tr '\n' '|' <"$d/log/restart.log")"
    fi
    initd "$d/env-restart" stop
    expect_rc 0 "stop after the handler's restart"
    if ! alive "$rpid2" && ! alive "$dpid2" && group_gone "$hpgid"; then ok "all gone"; else fail "left after stop: runner $rpid2, daemon $dpid2, handler group $hpgid"; fi

    # SYSLOG=yes: the runner's output goes to logger too, tag iotbox-jobs.
    jobs_env syslog "TMPDIR=$d/tmp" "PATH=$d/fakebin:$PATH" <<EOF
LOG_FILE=
SYSLOG=yes
JOBS_EXEC="'$d/job handler'"
EOF
    rm -f "$d/logger.args" "$d/syslog.out"
    initd "$d/env-syslog" start
    expect_rc 0 "start with SYSLOG=yes and JOBS_EXEC"
    wait_for 5 "the runner's output to reach logger" grep -qx 'job fake-job: waiting for jobs' "$d/syslog.out" &&
        ok "SYSLOG=yes sends the runner's output to logger"
    if grep -qx -- '-t iotbox-jobs' "$d/logger.args" && grep -qx -- '-t iotbox' "$d/logger.args"; then
        ok "logger tags: iotbox (daemon), iotbox-jobs (runner)"
    else
        fail "logger args: $(tr '\n' '|' <"$d/logger.args")"
    fi
    initd "$d/env-syslog" stop
    expect_rc 0 "stop with SYSLOG=yes and JOBS_EXEC"
    if [ -z "$(ls -A "$d/tmp")" ]; then ok "logger fifos unlinked"; else fail "left in TMPDIR: $(ls -A "$d/tmp")"; fi
}

# unit_script UNIT KEY: the script of UNIT's "KEY=/bin/sh -c '...'" line as
# systemd hands it to /bin/sh: "\"-continued lines joined with a space,
# "$$" turned into "$"; /usr/bin/iotbox replaced by the stand-in in $d.
unit_script() {
    local cmd script
    cmd=$(awk -v key="$2=" 'index($0, key) == 1 { on = 1 }
        on { line = $0; more = sub(/\\$/, "", line); buf = buf line (more ? " " : "")
             if (!more) { print buf; exit } }' "$1")
    cmd=${cmd#"$2="}
    cmd=${cmd//\$\$/\$}
    case $cmd in
        "/bin/sh -c '"*"'") ;;
        *) fail "unexpected $2 form in ${1##*/}: $cmd"; return 1 ;;
    esac
    script=${cmd#"/bin/sh -c '"}
    script=${script%"'"}
    echo "${script//\/usr\/bin\/iotbox/$d/iotbox}"
}

# unit_run DEFAULTS SCRIPT: runs SCRIPT with sh in $d, with the settings of
# DEFAULTS (none when it is empty) exported as EnvironmentFile does; a file
# in the cwd checks that "*" is not globbed.
unit_run() {
    # shellcheck disable=SC2016 # expanded by the inner sh
    (cd "$d" && : >"$d/glob-bait" &&
        env -i PATH=/usr/bin:/bin sh -c 'set -a; [ -z "$1" ] || . "$1"; set +a; exec sh -c "$2"' \
            sh "$1" "$2")
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
    local script
    script=$(unit_script "$unit" ExecStart) || return

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
        unit_run "$1" "$script"
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

    # iotbox-jobs.service: ExecStart builds "jobs --exec ..." from the same
    # file, and ExecCondition skips the start while JOBS_EXEC is empty.
    echo "== systemd unit iotbox-jobs.service: ExecStart, ExecCondition"
    local jobs_unit=$root/recipe/recipes-connectivity/iotbox/files/iotbox-jobs.service
    local jobs_start jobs_cond
    jobs_start=$(unit_script "$jobs_unit" ExecStart) || return
    jobs_cond=$(unit_script "$jobs_unit" ExecCondition) || return
    { cat "$d/defaults"; cat <<'EOF'; } >"$d/defaults-jobs"
JOBS_EXEC="'/usr/libexec/iotbox/job handler' --note \"it's a test\""
JOBS_TIMEOUT=600
JOBS_ARGS="--socket /run/iotbox/mqtt  --thing_name pi-7"
EOF
    got=$(unit_run "$d/defaults-jobs" "$jobs_start")
    want=$(printf '%s\n' jobs --exec "'/usr/libexec/iotbox/job handler' --note \"it's a test\"" \
        --timeout 600 --socket /run/iotbox/mqtt --thing_name pi-7)
    if [ "$got" = "$want" ]; then
        ok "jobs unit ExecStart builds jobs --exec JOBS_EXEC --timeout JOBS_TIMEOUT JOBS_ARGS"
    else
        fail "jobs unit ExecStart arguments: got '$(echo "$got" | tr '\n' ' ')', want '$(echo "$want" | tr '\n' ' ')'"
    fi
    { cat "$d/defaults"; printf '%s\n' 'JOBS_EXEC="/usr/libexec/iotbox/job-handler"' JOBS_TIMEOUT= 'JOBS_ARGS="*"'; } >"$d/defaults-jobs-min"
    got=$(unit_run "$d/defaults-jobs-min" "$jobs_start")
    want=$(printf '%s\n' jobs --exec /usr/libexec/iotbox/job-handler '*')
    if [ "$got" = "$want" ]; then
        ok "jobs unit ExecStart: no --timeout with JOBS_TIMEOUT empty, JOBS_ARGS not globbed"
    else
        fail "jobs unit ExecStart with JOBS_TIMEOUT empty: got '$(echo "$got" | tr '\n' ' ')', want '$(echo "$want" | tr '\n' ' ')'"
    fi
    if unit_run "$d/defaults-jobs" "$jobs_cond"; then
        ok "jobs unit ExecCondition passes with JOBS_EXEC set"
    else
        fail "jobs unit ExecCondition fails with JOBS_EXEC set (exit $?)"
    fi
    local rc_cond f
    for f in "$d/defaults" "$root/recipe/recipes-connectivity/iotbox/files/iotbox.default" ""; do
        rc_cond=0
        unit_run "$f" "$jobs_cond" || rc_cond=$?
        # 1-254 skips the start; 255 (or a signal) would fail the unit.
        f=${f:+${f##*/} without JOBS_EXEC}
        if [ "$rc_cond" -ge 1 ] && [ "$rc_cond" -le 254 ]; then
            ok "jobs unit ExecCondition skips the start (exit $rc_cond): ${f:-no defaults file}"
        else
            fail "jobs unit ExecCondition, ${f:-no defaults file}: exit $rc_cond, want 1-254"
        fi
    done
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
    # With a binary that has the job runner: JOBS_EXEC set, the daemon's
    # local endpoint and the runner's --socket in the temp dir. There is no
    # AWS Jobs service on the test broker: the runner's requests reach it
    # through the daemon, get no answer, and the runner asks again later.
    local jobs=no
    if "$bin" jobs --help >/dev/null 2>&1 && "$bin" pubsub --help 2>&1 | grep -q -- '--local[_-]socket'; then
        jobs=yes
        sed -i "s|^EXTRA_ARGS=.*|EXTRA_ARGS=\"--port $broker_port --local_socket $d/mqtt\"|" "$d/defaults"
        cat >>"$d/defaults" <<EOF
JOBS_EXEC="cat >/dev/null; echo 'job handled'"
JOBS_TIMEOUT=60
JOBS_ARGS="--socket $d/mqtt"
EOF
    else
        echo "test-initd: $bin has no 'jobs' or no --local_socket: the job runner is not tested with it"
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

    local rpid=
    if [ $jobs = yes ]; then
        pidfiles+=("$d/iotbox-jobs.pid")
        rpid=$(pid_from "$d/iotbox-jobs.pid")
        initd "$envf" status
        expect_out "^iotbox jobs is running \\(pid $rpid\\)\$" "status shows the job runner"
        if [ -n "$rpid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$rpid/cmdline" | grep -qF " jobs --exec "; then
            ok "the job runner is the real iotbox jobs (pid $rpid)"
        else
            fail "pid '$rpid' is not iotbox jobs: $(tr '\0' ' ' 2>/dev/null <"/proc/$rpid/cmdline")"
        fi
        # It asked the daemon for the thing name, subscribed and asked for
        # its jobs: the daemon passed that on to the broker.
        wait_for 30 "the runner's jobs/get to reach the broker through the daemon" \
            grep -qF "'\$aws/things/iotbox-initd-$label-$$/jobs/get'" "$tmp/mosquitto.log" &&
            ok "the runner's jobs/get reached the broker through the init-started daemon"
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

    if [ $jobs = yes ]; then
        # No answer from the broker (no Jobs service): the runner says so
        # and connects again, and is still running.
        wait_for 20 "the runner to give up waiting and connect again" \
            grep -q 'connecting again in' "$d/iotbox.log" &&
            ok "the runner logs that no answer came and tries again ($(grep -m1 'connecting again in' "$d/iotbox.log"))"
        if alive "$rpid"; then ok "the job runner is still running"; else fail "the job runner $rpid exited: $(tail -n 5 "$d/iotbox.log")"; fi
    fi

    local pid
    pid=$(pid_from "$d/iotbox.pid")
    initd "$envf" stop
    expect_rc 0 "stop"
    if [ $jobs = yes ]; then
        expect_out '^Stopping iotbox jobs$' "stop stops the job runner"
        if alive "$rpid"; then fail "job runner $rpid still alive after stop"; else ok "job runner exited"; fi
        if [ ! -e "$d/iotbox-jobs.pid" ]; then ok "the runner's pidfile removed"; else fail "$d/iotbox-jobs.pid still there"; fi
    fi
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
