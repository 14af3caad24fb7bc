#!/usr/bin/env bash
# Build the static musl binary for a Raspberry Pi: `make pi-arm64|pi-armv7|pi-armv6`.
#
#   scripts/pi-build.sh TRIPLE MAKE-TARGET
#
#   pi-arm64  aarch64-unknown-linux-musl        Pi 3/4/5, 64-bit OS
#   pi-armv7  armv7-unknown-linux-musleabihf    Pi 2/3/4, 32-bit OS
#   pi-armv6  arm-unknown-linux-musleabihf      Pi Zero/1 (an armv7 binary dies
#                                               there with "Illegal instruction")
#
# Needs rustup's std for TRIPLE (added here when missing). Links with rust-lld,
# which ships with rustup's toolchain, and musl's self-contained start files,
# which ship with the target: no ARM linker or ARM libc is needed. One C
# compiler for the target is still needed, for ring's C and assembly: clang
# (any clang can target ARM), or an ARM gcc (Debian's gcc-arm-linux-gnueabihf /
# gcc-aarch64-linux-gnu do; a musl-cross gcc too). Override with CC_<triple>,
# e.g. CC_armv7_unknown_linux_musleabihf=arm-linux-musleabihf-gcc.
set -euo pipefail

triple=${1:?usage: $0 TRIPLE MAKE-TARGET}
mk=${2:-$triple}
CARGO=${CARGO:-cargo}
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    if ! out=$(rustup target add "$triple" 2>&1); then
        # rustup prints "error: ...", then "Caused by:" and numbered causes
        # (then maybe a backtrace): keep the error and the last cause.
        out=$(printf '%s\n' "$out" | sed '/^Stack backtrace:/,$d')
        first=$(printf '%s\n' "$out" | grep -m1 '^error:' | sed 's/^error: *//') || true
        cause=$(printf '%s\n' "$out" | sed -n '/^Caused by:/,$p' | grep -E '^ +[0-9]+: ' | tail -n1 | sed 's/^ *[0-9]*: *//') || true
        echo "rustup target add $triple failed (${first:-?}${cause:+: $cause}): no access to static.rust-lang.org, or a mirror without this target? install the target (rustup target add $triple), then re-run make $mk" >&2
        exit 1
    fi
fi

# Cargo's env names for this triple.
upper=$(printf '%s' "$triple" | tr 'a-z-' 'A-Z_')
lower=$(printf '%s' "$triple" | tr '-' '_')

linker_var=CARGO_TARGET_${upper}_LINKER
export "$linker_var=${!linker_var:-rust-lld}"

cc_var=CC_${lower}
if [ -z "${!cc_var:-}" ]; then
    case $triple in
        aarch64-*) gccs="aarch64-linux-musl-gcc aarch64-linux-gnu-gcc" ;;
        *) gccs="arm-linux-musleabihf-gcc arm-linux-gnueabihf-gcc" ;;
    esac
    for c in ${gccs%% *} clang ${gccs#* }; do
        if command -v "$c" >/dev/null; then
            export "$cc_var=$c"
            break
        fi
    done
    if [ -z "${!cc_var:-}" ]; then
        echo "no C compiler for $triple (ring needs one): install clang (apt-get install clang) or an ARM gcc, or set $cc_var, then re-run make $mk" >&2
        exit 1
    fi
fi

echo "$CARGO build --release --target $triple  (linker ${!linker_var}, C compiler ${!cc_var})"
"$CARGO" build --release --target "$triple"
bin=target/$triple/release/iotbox
size=$(stat -c %s "$bin")
awk -v f="$bin" -v s="$size" 'BEGIN { printf "%s: %d bytes (%.2f MiB)\n", f, s, s / 1048576 }'
