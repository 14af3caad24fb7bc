SUMMARY = "Bridge local UNIX sockets to AWS IoT Core over MQTT 5 with mutual TLS"
DESCRIPTION = "iotbox is one small binary: 'iotbox pubsub' (also 'mqtt5_pubsub') \
               keeps one MQTT 5 connection to AWS IoT Core authenticated with the \
               device certificate and bridges it to two UNIX domain sockets; \
               'iotbox send|recv' (also 'awsapp send|recv') talk to those sockets. \
               A drop-in replacement for the patched AWS SDK mqtt5_pubsub sample \
               plus the awsapp tool."
# No public home page yet: a placeholder under .invalid, the domain reserved
# for names that must never resolve (RFC 2606), so nothing can mistake it for
# a real site. Replace it with the repository's address once it is published.
HOMEPAGE = "https://iotbox.invalid/"
SECTION = "net"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=98190ba86716c686bd7fe121360bdc3b"

# Source: the repository this layer lives in (recipe/recipes-connectivity/
# iotbox/ is three levels below its root), built in place with externalsrc, so
# the recipe always builds the tree it sits in and never lags behind it. The
# crates still come through the fetcher from iotbox-crates.inc (crate:// URLs
# stay in SRC_URI under externalsrc); keep that file in step with Cargo.lock
# with scripts/recipe-crates.sh (or 'bitbake -c update_crates iotbox').
# To build another checkout: EXTERNALSRC:pn-iotbox = "/abs/path" in local.conf.
inherit externalsrc
EXTERNALSRC := "${@os.path.normpath(os.path.join(d.getVar('THISDIR'), '..', '..', '..'))}"
# Do not create oe-workdir/oe-logs symlinks inside the source checkout.
EXTERNALSRC_SYMLINKS = ""

require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates update-alternatives update-rc.d systemd

# Cargo.toml's release profile has 'strip = true'; an already stripped binary
# fails oe-core's already-stripped QA check (an error) and leaves nothing for
# ${PN}-dbg. Let OE strip it instead. lto, opt-level and panic stay as written.
CARGO_BUILD_FLAGS += "--config profile.release.strip=false"

IOTBOX_FILES = "${S}/recipe/recipes-connectivity/iotbox/files"

# cargo_do_install has already put ${bindir}/iotbox in place.
# ${localstatedir}/lib/iotbox is the spool (the daemon's default --spool_dir),
# 0700 as it holds message payloads; the default FILES:${PN} has
# ${localstatedir}, so the package owns the empty directory. The init script
# and the unit (StateDirectory=) also make it when it is missing.
do_install:append() {
    install -d ${D}${sysconfdir}/init.d ${D}${sysconfdir}/default ${D}${systemd_system_unitdir}
    install -m 0755 ${IOTBOX_FILES}/iotbox.init ${D}${sysconfdir}/init.d/iotbox
    install -m 0644 ${IOTBOX_FILES}/iotbox.default ${D}${sysconfdir}/default/iotbox
    install -m 0644 ${IOTBOX_FILES}/iotbox.service ${D}${systemd_system_unitdir}/iotbox.service
    install -m 0644 ${IOTBOX_FILES}/iotbox-jobs.service ${D}${systemd_system_unitdir}/iotbox-jobs.service
    install -d -m 0700 ${D}${localstatedir}/lib/iotbox
}

# One binary, two more names (the multicall binary case of update-alternatives).
ALTERNATIVE:${PN} = "awsapp mqtt5_pubsub"
ALTERNATIVE_TARGET = "${bindir}/iotbox"

# Both init systems are supported: update-rc.d.bbclass and systemd.bbclass
# drop whichever of /etc/init.d/iotbox and the units the image's
# DISTRO_FEATURES do not use. The job runner (iotbox jobs) is started by the
# init script beside the daemon, or by iotbox-jobs.service, enabled too: both
# start it only when JOBS_EXEC is set in /etc/default/iotbox.
INITSCRIPT_NAME = "iotbox"
INITSCRIPT_PARAMS = "defaults 90 10"
SYSTEMD_SERVICE:${PN} = "iotbox.service iotbox-jobs.service"

CONFFILES:${PN} = "${sysconfdir}/default/iotbox"
