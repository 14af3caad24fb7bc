#!/usr/bin/env bash
# Install what the build, the tests and the cross check need, and nothing that
# is already there. Idempotent: a second run installs nothing and is quick.
#
#   scripts/deps.sh test    mosquitto, mosquitto-clients, openssl, musl-tools;
#                           for the local endpoint's client tests (tests/local.rs)
#                           python3-venv (paho-mqtt goes into a venv) and
#                           nodejs + npm (mqtt.js), each only if missing
#   scripts/deps.sh static  rustup's x86_64-unknown-linux-musl target (+ musl-tools)
#   scripts/deps.sh cross   Debian's Rust 1.85 (rustc-web) with its std for
#                           amd64, armhf and arm64, the ARM gcc cross linkers and
#                           qemu-user-static (see the README, "Proving it on
#                           ARM here"), plus the cross libc headers
#                           (libc6-dev-{armhf,arm64}-cross) that ring's C needs
#
# Debian 12 (bookworm). Installs with apt-get as root; as another user it says
# what to run instead. `apt-get update` failing on one mirror index is not an
# error: what counts is whether the tools are there afterwards.
set -euo pipefail

me=${0##*/}
say() { printf '%s: %s\n' "$me" "$*"; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

# --- apt helpers -----------------------------------------------------------

# pkg_installed NAME[:ARCH] [VERSION]: dpkg has it (at VERSION, when given).
# Without :ARCH, the native (or arch: all) package counts, not a foreign one.
native_arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
pkg_installed() {
    local name=${1%%:*} arch=${1#*:}
    [ "$arch" != "$1" ] || arch=$native_arch
    dpkg-query -W -f='${db:Status-Status} ${Version} ${Architecture}\n' "$name" 2>/dev/null |
        awk -v a="$arch" -v v="${2:-}" '
            $1 == "installed" && ($3 == a || $3 == "all") && (v == "" || $2 == v) { ok = 1 }
            END { exit !ok }'
}

apt_updated=0
apt_update() {
    [ "$apt_updated" = 1 ] && return 0
    say "apt-get update"
    # One mirror index failing (a stale snapshot, a missing arch) must not stop
    # us: the install below and the checks after it decide.
    if ! apt-get update -qq; then
        say "warning: apt-get update reported errors; going on with the lists it has"
    fi
    apt_updated=1
}

# Keep package maintainer scripts from starting daemons (mosquitto would start
# a broker on port 1883 otherwise). Only added when the machine has none.
policy_added=0
no_service_start() {
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
}
cleanup() {
    if [ "$policy_added" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# apt_install LOGFILE PKG...: install as root, or say what to run.
apt_install() {
    local log=$1
    shift
    if [ "$(id -u)" != 0 ]; then
        die "missing: $*; run as root: apt-get update; apt-get install -y $*"
    fi
    no_service_start
    apt_update
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
        >"$log" 2>&1
}

# --- test: broker, clients, openssl, musl-gcc ------------------------------

deps_test() {
    local missing=() p
    for p in mosquitto mosquitto-clients openssl musl-tools; do
        pkg_installed "$p" || missing+=("$p")
    done
    # tests/local.rs installs paho-mqtt with pip into a venv and mqtt.js with
    # npm. Judged by what works, not by package names: a Node.js from
    # elsewhere (nodesource) brings its own npm, and Debian's npm would clash.
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    if [ ${#missing[@]} -gt 0 ]; then
        local log
        log=$(mktemp)
        if ! apt_install "$log" "${missing[@]}"; then
            tail -n 20 "$log" >&2
            rm -f "$log"
            die "apt-get install ${missing[*]} failed (output above)"
        fi
        rm -f "$log"
    fi
    # mosquitto lives in /usr/sbin, which a non-root PATH may lack.
    local bad=() c
    for c in /usr/sbin/mosquitto mosquitto_pub mosquitto_sub openssl musl-gcc python3 node npm; do
        if [ "${c#/}" != "$c" ]; then [ -x "$c" ] || bad+=("$c"); else command -v "$c" >/dev/null || bad+=("$c"); fi
    done
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || bad+=("python3 venv")
    [ ${#bad[@]} -eq 0 ] || die "still missing after install: ${bad[*]} (apt-get install -y mosquitto mosquitto-clients openssl musl-tools python3-venv nodejs npm)"
    say "test deps ok: $(/usr/sbin/mosquitto -h 2>/dev/null | head -n1 || true)"
}

# --- static: rustup's musl target --------------------------------------------

deps_static() {
    local t=x86_64-unknown-linux-musl
    if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
        say "rustup target add $t"
        rustup target add "$t" >/dev/null 2>&1 ||
            die "rustup target add $t failed (no network to the Rust dist server?); install the target, then re-run"
    fi
    # ring's C and assembly are compiled with musl-gcc when it is there.
    if ! pkg_installed musl-tools; then
        local log
        log=$(mktemp)
        apt_install "$log" musl-tools || { tail -n 20 "$log" >&2; die "apt-get install musl-tools failed"; }
        rm -f "$log"
    fi
    say "static deps ok: $t"
}

# --- cross: Debian's Rust 1.85 for armhf/arm64 + qemu -------------------------

# Highest version of PKG that all of amd64, armhf and arm64 offer.
common_version() {
    local pkg=$1 a
    for a in amd64 armhf arm64; do
        apt-cache madison "$pkg:$a" | awk -F'|' '{gsub(/ /,"",$2); print $2}' | sort -u
    done | sort | uniq -c | awk '$1 == 3 {print $2}' |
        sort -V | tail -n1
}

deps_cross() {
    local arch added=0
    for arch in armhf arm64; do
        if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
            [ "$(id -u)" = 0 ] || die "architecture $arch not enabled; run as root: dpkg --add-architecture $arch; then re-run $0 cross"
            say "dpkg --add-architecture $arch"
            dpkg --add-architecture "$arch"
            added=1
        fi
    done

    # Which 1.85.x is installed, if any: then nothing needs the lists.
    local V=""
    if pkg_installed rustc-web; then
        V=$(dpkg-query -W -f='${Version}' rustc-web)
        case $V in 1.85*) ;; *) V="" ;; esac
    fi
    if [ -z "$V" ] || [ "$added" = 1 ]; then
        [ "$(id -u)" = 0 ] && apt_update
    fi
    if [ -z "$V" ]; then
        V=$(apt-cache madison rustc-web | awk '$3 ~ /^1\.85/ {print $3; exit}')
        [ -n "$V" ] || die "apt has no rustc-web 1.85.x (apt-cache madison rustc-web); is bookworm-updates or -security in sources?"
    fi

    local want=(
        "rustc-web=$V" "libstd-rust-web-dev=$V"
        "libstd-rust-web-dev:armhf=$V" "libstd-rust-web-dev:arm64=$V"
        gcc-arm-linux-gnueabihf gcc-aarch64-linux-gnu qemu-user-static
        # The gcc cross packages only recommend their C library headers, and we
        # install without recommends (qemu-user-static would pull systemd).
        # ring's C code needs them.
        libc6-dev-armhf-cross libc6-dev-arm64-cross
    )
    local missing=() w name ver
    for w in "${want[@]}"; do
        name=${w%%=*}
        ver=""
        [ "$name" = "$w" ] || ver=${w#*=}
        pkg_installed "$name" "$ver" || missing+=("$w")
    done

    if [ ${#missing[@]} -gt 0 ]; then
        local log
        log=$(mktemp)
        # One architecture's package lists may be older than the others'
        # (apt-get update failed on one index: "Mirror sync in progress?").
        # Then a Multi-Arch: same library (liblzma5, zlib1g, libzstd1, ...)
        # has different candidate versions on amd64, armhf and arm64, and apt
        # refuses. Pin each one it names to the highest version all three
        # have, and try again, a few rounds.
        local pins=() round name V
        for round in 1 2 3 4 5; do
            apt_install "$log" ${pins[@]+"${pins[@]}"} ${pins[@]+--allow-downgrades} "${missing[@]}" && break
            local named
            named=$(sed -n \
                -e 's/.*Depends: \([a-z0-9][a-z0-9.+-]*\):\(armhf\|arm64\|amd64\).*not going to be installed.*/\1/p' \
                -e 's/.*\(liblzma5\).*/\1/p' "$log" | sort -u)
            local added_pin=0
            for name in $named; do
                case " ${pins[*]-} " in *" $name="*) continue ;; esac
                V=$(common_version "$name")
                [ -n "$V" ] || continue
                say "apt complained about $name: pinning $name on amd64/armhf/arm64 to $V"
                pins+=("$name=$V" "$name:armhf=$V" "$name:arm64=$V")
                added_pin=1
            done
            if [ "$added_pin" = 0 ] || [ "$round" = 5 ]; then
                tail -n 30 "$log" >&2
                rm -f "$log"
                die "apt-get install ${missing[*]} failed${pins[*]+ even with ${pins[*]}} (output above)"
            fi
        done
        rm -f "$log"
    fi

    local bad=() c
    for c in /usr/bin/rustc arm-linux-gnueabihf-gcc aarch64-linux-gnu-gcc qemu-arm-static qemu-aarch64-static; do
        command -v "$c" >/dev/null || bad+=("$c")
    done
    for c in armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu; do
        [ -d "/usr/lib/rustlib/$c/lib" ] || bad+=("std for $c (/usr/lib/rustlib/$c)")
    done
    for c in arm-linux-gnueabihf aarch64-linux-gnu; do
        [ -f "/usr/$c/include/stdio.h" ] || bad+=("C headers for $c (/usr/$c/include)")
    done
    [ ${#bad[@]} -eq 0 ] || die "still missing after install: ${bad[*]}"
    say "cross deps ok: $(/usr/bin/rustc --version), $(arm-linux-gnueabihf-gcc -dumpversion) gcc, $(qemu-arm-static --version | head -n1)"
}

case ${1:-} in
    test) deps_test ;;
    static) deps_static ;;
    cross) deps_cross ;;
    *) echo "usage: $0 test|static|cross" >&2; exit 2 ;;
esac
