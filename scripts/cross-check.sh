#!/usr/bin/env bash
# `make cross-check`: prove iotbox builds with the minimum Rust (Debian's 1.85)
# for the Pi's two ARM architectures and that those binaries pass the
# end-to-end tests under qemu. See the README, "Proving it on ARM here".
#
#  1. scripts/deps.sh cross: Debian's rustc 1.85 with std for armhf/arm64, ARM
#     gcc (linker, and C compiler for ring), qemu-user-static.
#  2. With rustup's cargo and RUSTC=/usr/bin/rustc (so Cargo.lock as committed
#     must build with 1.85: this is the MSRV check), static glibc release
#     builds (+crt-static) for armv7-unknown-linux-gnueabihf and
#     aarch64-unknown-linux-gnu into target/cross; sizes; `--version` under
#     qemu-arm-static / qemu-aarch64-static.
#  3. When rustup can add aarch64-unknown-linux-musl (the target users get for
#     64-bit Pis; `make pi-arm64`), that build too (rustup's rustc, rust-lld),
#     with its size and `--version` under qemu.
#  4. The end-to-end tests (tests/e2e.rs), built for the host by the same
#     rustc 1.85, run once per ARM binary:
#     IOTBOX_BIN=<arm binary> IOTBOX_RUNNER=qemu-…-static cargo test --test e2e
#
# These glibc-static binaries are a proof, not a product: static glibc resolves
# names through NSS at run time. Users get the musl builds (make pi-*).
#
# Environment:
#   CROSS_TARGET_DIR  cargo target dir (default target/cross)
#   CROSS_E2E         1: run the e2e tests under qemu (fail if tests/e2e.rs is
#                     missing); 0: skip them; auto (default): run them when
#                     tests/e2e.rs exists, else say loudly that they were skipped
#   CROSS_MUSL        auto (default) | 0: the aarch64 musl build of step 3
#   CROSS_FAST        1: thin LTO and 16 codegen units for the ARM release builds
#                     (quicker to build, a bigger binary; sizes then are not the
#                     release sizes)
set -euo pipefail

cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
TD=${CROSS_TARGET_DIR:-target/cross}
case $TD in /*) ;; *) TD=$PWD/$TD ;; esac
E2E=${CROSS_E2E:-auto}
MUSL=${CROSS_MUSL:-auto}

t_all=$(date +%s%N)
since() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f s", (b - a) / 1e9 }'; }
hdr() { printf '\n== cross-check: %s\n' "$*"; }
size_line() { # FILE
    local s
    s=$(stat -c %s "$1")
    awk -v f="$1" -v s="$s" 'BEGIN { printf "   %s: %d bytes (%.2f MiB)\n", f, s, s / 1048576 }'
}

hdr "deps (scripts/deps.sh cross)"
t=$(date +%s%N)
scripts/deps.sh cross
echo "   deps: $(since "$t")"

export RUSTC=/usr/bin/rustc
echo "   rustc: $($RUSTC --version); cargo: $($CARGO --version)"

if [ "${CROSS_FAST:-0}" = 1 ]; then
    export CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
    echo "   CROSS_FAST=1: thin LTO, 16 codegen units (sizes below are not release sizes)"
fi

# triple  gcc  qemu
targets=(
    "armv7-unknown-linux-gnueabihf arm-linux-gnueabihf-gcc qemu-arm-static"
    "aarch64-unknown-linux-gnu aarch64-linux-gnu-gcc qemu-aarch64-static"
)

bins=()
for spec in "${targets[@]}"; do
    read -r triple gcc qemu <<<"$spec"
    upper=$(printf '%s' "$triple" | tr 'a-z-' 'A-Z_')
    lower=$(printf '%s' "$triple" | tr '-' '_')
    hdr "build $triple with $($RUSTC --version | cut -d' ' -f1-2)"
    t=$(date +%s%N)
    env "CARGO_TARGET_${upper}_LINKER=$gcc" "CC_${lower}=$gcc" \
        "CARGO_TARGET_${upper}_RUSTFLAGS=-C target-feature=+crt-static" \
        "$CARGO" build --release --locked --target "$triple" --target-dir "$TD"
    echo "   build $triple: $(since "$t")"
    bin=$TD/$triple/release/iotbox
    # The release profile strips; say so if it ever stops doing that.
    if readelf -S "$bin" 2>/dev/null | grep -q '\.symtab'; then echo "   warning: $bin is not stripped"; fi
    size_line "$bin"
    printf '   $ %s %s --version\n' "$qemu" "${bin#"$PWD"/}"
    "$qemu" "$bin" --version | sed 's/^/   /'
    bins+=("$bin $qemu")
done

if [ "$MUSL" != 0 ]; then
    # rustup's own toolchain for this one: Debian ships no musl std.
    musl=aarch64-unknown-linux-musl
    hdr "build $musl (what 64-bit Pis get: make pi-arm64)"
    if rustup target list --installed 2>/dev/null | grep -qx "$musl" ||
        rustup target add "$musl" >/dev/null 2>&1; then
        t=$(date +%s%N)
        (unset RUSTC; scripts/pi-build.sh "$musl" pi-arm64)
        echo "   build $musl: $(since "$t")"
        bin=target/$musl/release/iotbox
        printf '   $ qemu-aarch64-static %s --version\n' "$bin"
        qemu-aarch64-static "$bin" --version | sed 's/^/   /'
        bins+=("$PWD/$bin qemu-aarch64-static")
    else
        echo "   SKIPPED: rustup target add $musl failed here (no access to the target's std)"
    fi
fi


run_e2e=0
case $E2E in
    0) echo; echo "== cross-check: e2e under qemu: SKIPPED (CROSS_E2E=0)" ;;
    1) run_e2e=1 ;;
    *) if [ -f tests/e2e.rs ]; then run_e2e=1; else
        echo; echo "== cross-check: e2e under qemu: SKIPPED: there is no tests/e2e.rs yet (CROSS_E2E=1 makes this an error)"
    fi ;;
esac
if [ "$run_e2e" = 1 ]; then
    [ -f tests/e2e.rs ] || { echo "cross-check: CROSS_E2E=1 but tests/e2e.rs does not exist" >&2; exit 1; }
    scripts/deps.sh test
    hdr "build the e2e tests for the host with $($RUSTC --version | cut -d' ' -f1-2)"
    t=$(date +%s%N)
    "$CARGO" test --locked --test e2e --target-dir "$TD" --no-run
    echo "   build e2e: $(since "$t")"
    for b in "${bins[@]}"; do
        read -r bin qemu <<<"$b"
        hdr "e2e with IOTBOX_BIN=${bin#"$PWD"/} IOTBOX_RUNNER=$qemu"
        t=$(date +%s%N)
        IOTBOX_BIN=$bin IOTBOX_RUNNER=$qemu "$CARGO" test --locked --test e2e --target-dir "$TD"
        echo "   e2e under $qemu: $(since "$t")"
    done
fi

printf '\n== cross-check: done in %s\n' "$(since "$t_all")"
