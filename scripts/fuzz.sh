#!/usr/bin/env bash
# Fuzz the broker-facing decoders, the MQTT session, the local MQTT endpoint
# (its server codec and per-client machine) and the spool's recovery with
# cargo-fuzz (libFuzzer). The targets and their checks are in fuzz/ (a
# crate of its own, on nightly; the iotbox crate stays on stable). Installs
# what is missing: rustup's nightly toolchain (minimal profile) and
# cargo-fuzz (crates.io).
#
#   scripts/fuzz.sh [TARGET...]    codec_decode local_client message_parse
#                                  proxy_reply session session_wrap
#                                  spool_recovery (default: all)
#
# Environment:
#   FUZZ_SECS=60         seconds per target
#   FUZZ_CORPUS_MAX=200  a corpus with more files than this is minimized
#                        afterwards (cargo fuzz cmin, edge coverage kept)
#   FUZZ_SANITIZER=none  iotbox forbids unsafe code and every check is a
#                        panic, so AddressSanitizer mostly costs executions;
#                        set to "address" to use it anyway
#
# Each corpus is fuzz/corpus/<target> (committed; tests/fuzz_corpus.rs replays
# it on stable), seeded from fuzz/src/seeds.rs when empty. A crash leaves its
# input in fuzz/artifacts/<target>/ and makes the script exit 1 after the
# other targets have run. The last lines are the executions per target.
set -euo pipefail

me=${0##*/}
say() { printf '%s: %s\n' "$me" "$*"; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
all_targets=(codec_decode local_client message_parse proxy_reply session session_wrap spool_recovery)
secs=${FUZZ_SECS:-60}
corpus_max=${FUZZ_CORPUS_MAX:-200}
sanitizer=${FUZZ_SANITIZER:-none}
[[ $secs =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECS=$secs: expected a number of seconds"
[[ $corpus_max =~ ^[1-9][0-9]*$ ]] || die "FUZZ_CORPUS_MAX=$corpus_max: expected a number of files"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || die "unknown target $t (one of: ${all_targets[*]})"
done

# --- what it needs: nightly, cargo-fuzz, a C++ compiler (libFuzzer) --------

command -v rustup >/dev/null ||
    die "rustup is needed for the nightly toolchain (cargo-fuzz needs nightly); install rustup, then re-run"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    say "rustup toolchain install nightly --profile minimal"
    rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || true
    rustup run nightly rustc --version >/dev/null 2>&1 ||
        die "rustup toolchain install nightly --profile minimal failed (no network to the Rust dist server?)"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "cargo install cargo-fuzz --locked"
    log=$(mktemp)
    cargo install cargo-fuzz --locked >"$log" 2>&1 || true
    if ! cargo fuzz --version >/dev/null 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        die "cargo install cargo-fuzz --locked failed (output above)"
    fi
    rm -f "$log"
fi
command -v c++ >/dev/null ||
    die "no C++ compiler (c++) to build libFuzzer; install one (Debian: apt-get install g++), then re-run"
say "$(rustup run nightly rustc --version), $(cargo fuzz --version)"

# --- build, seed, run ----------------------------------------------------------

cd "$root/fuzz"
flags=(--release --debug-assertions --sanitizer "$sanitizer")
say "cargo +nightly fuzz build ${flags[*]}"
cargo +nightly fuzz build "${flags[@]}"

corpus_count() { find "corpus/$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }
for t in "${targets[@]}"; do
    if [ "$(corpus_count "$t")" -eq 0 ]; then
        say "seeding empty corpora (fuzz/src/seeds.rs)"
        cargo +nightly run --quiet --example seeds -- corpus
        break
    fi
done

logs=target/fuzz-logs
mkdir -p "$logs"
summary=()
failed=()
for t in "${targets[@]}"; do
    log=$logs/$t.log
    say "$t: ${secs}s, corpus fuzz/corpus/$t ($(corpus_count "$t") files), log fuzz/$log"
    rc=0
    # -timeout: one input running 10 s is a hang (a busy loop), reported as
    # a crash. -rss_limit_mb: a leak or an unbounded buffer.
    cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    if [ "$rc" != 0 ]; then
        grep -E '^(thread .* panicked|==[0-9]+== ERROR|ALARM|SUMMARY)' "$log" | head -n 5 >&2 || true
        grep -E 'Test unit written to' "$log" >&2 || true
        failed+=("$t")
    fi
    if [ "$(corpus_count "$t")" -gt "$corpus_max" ]; then
        # Keep the committed corpus small: the fewest inputs (set cover) that
        # reach every edge the corpus reaches, hit counts aside. The fuzzer
        # grows the rest back within seconds.
        before=$(corpus_count "$t")
        cargo +nightly fuzz cmin "${flags[@]}" "$t" "corpus/$t" -- -set_cover_merge=1 -use_counters=0 \
            >"$logs/$t.cmin.log" 2>&1 ||
            say "warning: cargo fuzz cmin $t failed (fuzz/$logs/$t.cmin.log)"
        say "$t: corpus minimized from $before to $(corpus_count "$t") files"
    fi
    summary+=("$(printf '%-14s %12s executions  %5s corpus files  %s' "$t" "${execs:-?}" \
        "$(corpus_count "$t")" "$([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc, see fuzz/$log)")")")
done

printf '\n%s: %ss per target\n' "$me" "$secs"
printf '%s\n' "${summary[@]}"
[ ${#failed[@]} -eq 0 ] || die "crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/; replay with cargo +nightly fuzz run <target> <file>)"
