#!/usr/bin/env bash
# Test 'make install' / 'make uninstall' into a temporary DESTDIR:
#
#   make install   PREFIX=/usr DESTDIR=$tmp BIN=$IOTBOX_BIN
#     $tmp/usr/bin/iotbox                     executable
#     $tmp/usr/bin/awsapp, mqtt5_pubsub       symlinks resolving to iotbox
#                                             (relative, or absolute without DESTDIR)
#     $tmp/etc/init.d/iotbox                  executable, = files/iotbox.init
#     $tmp/etc/default/iotbox                 = files/iotbox.default
#     $tmp/{usr/,}lib/systemd/system/iotbox.service  = files/iotbox.service
#     $tmp/{usr/,}lib/systemd/system/iotbox-jobs.service
#                                             = files/iotbox-jobs.service
#     $tmp/var/lib/iotbox                     the spool: a directory, mode 0700
#   make uninstall PREFIX=/usr DESTDIR=$tmp
#     all of the above gone
#   the spool directory: install leaves an existing one (mode, contents)
#     alone; uninstall keeps it, and what is in it, when it is not empty
#   PREFIX=/usr/local: the init script and the units name the binary there;
#     the spool is still var/lib/iotbox (the daemon's default)
#
# Environment: IOTBOX_BIN (default target/release/iotbox; built with
# 'cargo build --release' when missing), KEEP_TMP=1 keeps the temp dir.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
files=$root/recipe/recipes-connectivity/iotbox/files

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
die() { echo "test-install: $*" >&2; exit 1; }

[ -f "$root/Makefile" ] || die "no Makefile in $root (install/uninstall targets expected)"

bin=${IOTBOX_BIN:-$root/target/release/iotbox}
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
if [ ! -x "$bin" ]; then
    [ -z "${IOTBOX_BIN:-}" ] || die "IOTBOX_BIN=$IOTBOX_BIN is not an executable"
    echo "test-install: $bin missing; cargo build --release"
    (cd "$root" && cargo build --release) || die "cargo build --release failed"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/iotbox-install.XXXXXX")
cleanup() {
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "test-install: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
dest=$tmp/root

echo "== make install PREFIX=/usr DESTDIR=$dest BIN=$bin"
if ! make -C "$root" install PREFIX=/usr DESTDIR="$dest" BIN="$bin"; then
    die "make install failed"
fi
echo "-- installed:"
(cd "$dest" && find . \( -type f -o -type l -o -path ./var/lib/iotbox \) -printf '   %M %p %l\n' | sort)

# --- install
if [ -f "$dest/usr/bin/iotbox" ] && [ -x "$dest/usr/bin/iotbox" ]; then
    ok "usr/bin/iotbox is an executable file"
else
    fail "usr/bin/iotbox missing or not executable"
fi
if cmp -s "$bin" "$dest/usr/bin/iotbox"; then ok "usr/bin/iotbox is IOTBOX_BIN"; else fail "usr/bin/iotbox differs from $bin"; fi

for name in awsapp mqtt5_pubsub; do
    link=$dest/usr/bin/$name
    if [ ! -L "$link" ]; then
        fail "usr/bin/$name is not a symlink"
        continue
    fi
    target=$(readlink "$link")
    case $target in
        "$tmp"*) fail "usr/bin/$name -> $target: DESTDIR leaked into the link"; continue ;;
        /*) resolved=$dest$target ;;
        *) resolved=$dest/usr/bin/$target ;;
    esac
    if [ "$(readlink -f "$resolved")" = "$(readlink -f "$dest/usr/bin/iotbox")" ]; then
        ok "usr/bin/$name -> $target (resolves to usr/bin/iotbox)"
    else
        fail "usr/bin/$name -> $target does not resolve to usr/bin/iotbox"
    fi
done

if [ -x "$dest/etc/init.d/iotbox" ] && [ -f "$dest/etc/init.d/iotbox" ]; then
    ok "etc/init.d/iotbox is executable"
else
    fail "etc/init.d/iotbox missing or not executable"
fi
if cmp -s "$files/iotbox.init" "$dest/etc/init.d/iotbox"; then
    ok "etc/init.d/iotbox is files/iotbox.init"
else
    fail "etc/init.d/iotbox differs from files/iotbox.init"
fi

if [ -f "$dest/etc/default/iotbox" ]; then
    ok "etc/default/iotbox installed"
    if cmp -s "$files/iotbox.default" "$dest/etc/default/iotbox"; then
        ok "etc/default/iotbox is files/iotbox.default"
    else
        fail "etc/default/iotbox differs from files/iotbox.default"
    fi
    if [ -x "$dest/etc/default/iotbox" ]; then fail "etc/default/iotbox is executable"; fi
else
    fail "etc/default/iotbox missing"
fi

for name in iotbox.service iotbox-jobs.service; do
    unit=
    for u in usr/lib/systemd/system/$name lib/systemd/system/$name; do
        if [ -f "$dest/$u" ]; then unit=$u; break; fi
    done
    if [ -n "$unit" ]; then
        ok "$unit installed"
        if cmp -s "$files/$name" "$dest/$unit"; then
            ok "$unit is files/$name"
        else
            fail "$unit differs from files/$name"
        fi
        if [ -x "$dest/$unit" ]; then fail "$unit is executable"; fi
    else
        fail "$name not in usr/lib/systemd/system or lib/systemd/system"
    fi
done

# mode_of PATH: its permission bits in octal (e.g. 700), empty if missing.
mode_of() {
    stat -c %a "$1" 2>/dev/null || true
}
if [ -d "$dest/var/lib/iotbox" ] && [ ! -L "$dest/var/lib/iotbox" ] &&
    [ "$(mode_of "$dest/var/lib/iotbox")" = 700 ]; then
    ok "var/lib/iotbox (the spool) is a directory, mode 0700"
else
    fail "var/lib/iotbox: mode '$(mode_of "$dest/var/lib/iotbox")', want a directory with 700"
fi

# --- uninstall
echo "== make uninstall PREFIX=/usr DESTDIR=$dest"
if ! make -C "$root" uninstall PREFIX=/usr DESTDIR="$dest"; then
    die "make uninstall failed"
fi
for p in usr/bin/iotbox usr/bin/awsapp usr/bin/mqtt5_pubsub etc/init.d/iotbox \
    etc/default/iotbox usr/lib/systemd/system/iotbox.service lib/systemd/system/iotbox.service \
    usr/lib/systemd/system/iotbox-jobs.service lib/systemd/system/iotbox-jobs.service \
    var/lib/iotbox; do
    if [ -e "$dest/$p" ] || [ -L "$dest/$p" ]; then
        fail "$p still there after uninstall"
    else
        ok "$p gone after uninstall"
    fi
done
left=$(cd "$dest" && find . \( -type f -o -type l \) | sort)
if [ -n "$left" ]; then
    fail "files left after uninstall: $(echo "$left" | tr '\n' ' ')"
else
    ok "no files left under DESTDIR"
fi

# --- the spool directory holds messages not sent yet: install leaves an
# existing one as it is, uninstall never removes what is in it.
spool_dest=$tmp/spool
mkdir -p "$spool_dest/var/lib"
mkdir -m 0750 "$spool_dest/var/lib/iotbox"
echo "not sent yet" >"$spool_dest/var/lib/iotbox/segment"
echo "== make install / uninstall PREFIX=/usr DESTDIR=$spool_dest, with a spool holding a segment"
make -C "$root" install PREFIX=/usr DESTDIR="$spool_dest" BIN="$bin" >"$tmp/spool.log" 2>&1 ||
    { cat "$tmp/spool.log" >&2; die "make install (existing spool) failed"; }
if [ "$(mode_of "$spool_dest/var/lib/iotbox")" = 750 ] && [ -f "$spool_dest/var/lib/iotbox/segment" ]; then
    ok "install leaves an existing spool directory (mode, contents) as it is"
else
    fail "install changed the existing spool: mode $(mode_of "$spool_dest/var/lib/iotbox"), segment $([ -f "$spool_dest/var/lib/iotbox/segment" ] && echo kept || echo gone)"
fi
make -C "$root" uninstall PREFIX=/usr DESTDIR="$spool_dest" >>"$tmp/spool.log" 2>&1 ||
    { cat "$tmp/spool.log" >&2; die "make uninstall (spool not empty) failed"; }
if [ "$(cat "$spool_dest/var/lib/iotbox/segment" 2>/dev/null)" = "not sent yet" ]; then
    ok "uninstall keeps a spool directory that is not empty, and what is in it"
else
    fail "uninstall removed the spooled segment"
fi
if grep -q "keeping $spool_dest/var/lib/iotbox" "$tmp/spool.log"; then
    ok "uninstall says it kept the spool directory"
else
    fail "uninstall did not say it kept the spool directory: $(tr '\n' '|' <"$tmp/spool.log")"
fi
left=$(cd "$spool_dest" && find . \( -type f -o -type l \) ! -path ./var/lib/iotbox/segment | sort)
if [ -z "$left" ]; then ok "uninstall removed everything else"; else fail "left besides the spool: $(echo "$left" | tr '\n' ' ')"; fi

# --- PREFIX=/usr/local: the init script and the units must name the binary
# where it was installed.
local_dest=$tmp/local
echo "== make install PREFIX=/usr/local DESTDIR=$local_dest"
make -C "$root" install PREFIX=/usr/local DESTDIR="$local_dest" BIN="$bin" >"$tmp/local-install.log" 2>&1 ||
    { cat "$tmp/local-install.log" >&2; die "make install PREFIX=/usr/local failed"; }
if [ -x "$local_dest/usr/local/bin/iotbox" ] && [ -L "$local_dest/usr/local/bin/awsapp" ] &&
    [ -L "$local_dest/usr/local/bin/mqtt5_pubsub" ]; then
    ok "PREFIX=/usr/local: binary and symlinks in usr/local/bin"
else
    fail "PREFIX=/usr/local: binary or symlinks missing in usr/local/bin"
fi
# shellcheck disable=SC2016 # a literal ${...} in the script
if grep -qF 'DAEMON=${DAEMON:-/usr/local/bin/iotbox}' "$local_dest/etc/init.d/iotbox" 2>/dev/null; then
    ok "PREFIX=/usr/local: init script runs /usr/local/bin/iotbox"
else
    fail "PREFIX=/usr/local: init script's DAEMON is not /usr/local/bin/iotbox"
fi
local_unit=$(find "$local_dest" -name iotbox.service | head -n 1)
if [ -n "$local_unit" ] && grep -q 'exec /usr/local/bin/iotbox pubsub' "$local_unit"; then
    ok "PREFIX=/usr/local: unit runs /usr/local/bin/iotbox (${local_unit#"$local_dest"/})"
else
    fail "PREFIX=/usr/local: unit missing or does not run /usr/local/bin/iotbox"
fi
local_jobs_unit=$(find "$local_dest" -name iotbox-jobs.service | head -n 1)
if [ -n "$local_jobs_unit" ] && grep -q 'exec /usr/local/bin/iotbox jobs' "$local_jobs_unit" &&
    ! grep -q '/usr/bin/iotbox' "$local_jobs_unit"; then
    ok "PREFIX=/usr/local: jobs unit runs /usr/local/bin/iotbox (${local_jobs_unit#"$local_dest"/})"
else
    fail "PREFIX=/usr/local: jobs unit missing or does not run /usr/local/bin/iotbox"
fi
if [ -d "$local_dest/var/lib/iotbox" ] && [ "$(mode_of "$local_dest/var/lib/iotbox")" = 700 ]; then
    ok "PREFIX=/usr/local: the spool is still var/lib/iotbox, mode 0700 (the daemon's default)"
else
    fail "PREFIX=/usr/local: no var/lib/iotbox with mode 700"
fi
make -C "$root" uninstall PREFIX=/usr/local DESTDIR="$local_dest" >>"$tmp/local-install.log" 2>&1 ||
    { cat "$tmp/local-install.log" >&2; die "make uninstall PREFIX=/usr/local failed"; }
left=$(cd "$local_dest" && find . \( -type f -o -type l \) | sort)
if [ -z "$left" ]; then ok "PREFIX=/usr/local: uninstall leaves nothing"; else fail "PREFIX=/usr/local: left $(echo "$left" | tr '\n' ' ')"; fi
if [ ! -e "$local_dest/var/lib/iotbox" ]; then ok "PREFIX=/usr/local: empty spool directory removed"; else fail "PREFIX=/usr/local: var/lib/iotbox still there"; fi

echo "test-install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
