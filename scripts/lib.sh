# shellcheck shell=bash
# Sourced by demo.sh, bench.sh, soak.sh and fleet-sim.sh: the processes a script started and its
# temp dir, cleaned up on exit. Kills only PIDs in `pids`, never by name.

pids=()   # started and not yet reaped

# forget PID: it has been reaped (a reaped PID may be someone else's soon).
forget() {
    local p keep=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# stop_started: SIGTERM everything in pids, SIGKILL what is still there
# after 5 s, and reap it.
stop_started() {
    local p end
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    end=$(($(date +%s) + 5))
    for p in "${pids[@]}"; do
        while kill -0 "$p" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.05; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    pids=()
}

# drop_tmp NAME DIR OK: remove DIR when OK is 1 (unless KEEP=1), else say
# where its files are.
drop_tmp() {
    local name=$1 dir=$2 ok=$3
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    if [ "$ok" = 1 ] && [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$dir"
    else
        echo "$name: files kept in $dir" >&2
    fi
}

# clean_up_on_exit NAME: whatever way the script ends (exit, error, INT,
# TERM), stop what it started and drop its temp dir $T when $ok is 1 (see
# drop_tmp); the exit status is kept.
clean_up_on_exit() {
    cleanup_name=$1
    trap _clean_up EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
_clean_up() {
    local rc=$?
    stop_started
    drop_tmp "$cleanup_name" "$T" "$ok"
    exit "$rc"
}
