# iotbox: build, test, demo, install, Pi and cross builds.  GNU make.
#
#   make              release build (target/release/iotbox)
#   make static       static x86_64 musl build; prints its size
#   make test         installs mosquitto & co. if missing, then cargo test
#   make demo         the how-to end to end on a local mosquitto (mutual TLS)
#   make install      PREFIX=/usr/local DESTDIR=  (see below)
#   make uninstall    removes exactly what install put (the spool directory
#                     only when empty)
#   make pi-arm64 | pi-armv7 | pi-armv6
#                     static musl builds for Raspberry Pis (rustup targets)
#   make cross-check  Debian's Rust 1.85 (the MSRV) builds for armv7/aarch64,
#                     run under qemu, end-to-end tests under qemu
#   make bench        footprint and speed beside mosquitto's clients
#                     (target/bench.md)
#   make soak         an hour (SOAK_SECS) of mixed load with broker restarts;
#                     RSS, descriptors and CPU once a minute
#   make fleet-sim    200 daemons (FLEET_N) against one local mosquitto, the
#                     broker restarted: reconnects, CONNECTs per second,
#                     memory per daemon (target/fleet-sim.md)
#   make fuzz         cargo-fuzz on the decoders, the MQTT session, the local
#                     endpoint and the spool's recovery, FUZZ_SECS=60 per
#                     target (installs nightly, cargo-fuzz)
#   make check-recipe | recipe-crates | test-install | test-initd
#                     Yocto layer and init script checks
#   make clean
#
# The init script and the systemd units (iotbox.service, iotbox-jobs.service)
# name /usr/bin/iotbox; install rewrites that to $(BINDIR)/iotbox (PREFIX=/usr
# leaves them as they are).
#
# install also makes the spool directory, /var/lib/iotbox (SPOOLDIR), mode
# 0700, when it is missing. It is the daemon's built-in default --spool_dir,
# so it does not follow PREFIX. uninstall removes it only when it is empty:
# what is in it is messages not sent yet.
#
# install takes the binary to install from BIN; by default the static musl
# one when it has been built (make static), else the release one (make). It
# does not build: as root, a build would leave root-owned files in target/.
# Run `make static` (or `make`) first, as yourself.

PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR   ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
# systemd units: /lib/systemd/system for a PREFIX=/usr (distribution) install,
# else under PREFIX.
SYSTEMDUNITDIR ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
SPOOLDIR ?= /var/lib/iotbox
CARGO    ?= cargo
INSTALL  ?= install

STATIC_TARGET := x86_64-unknown-linux-musl
STATIC_BIN    := target/$(STATIC_TARGET)/release/iotbox
RELEASE_BIN   := target/release/iotbox
BIN ?= $(firstword $(wildcard $(STATIC_BIN)) $(wildcard $(RELEASE_BIN)))

RECIPE_FILES := recipe/recipes-connectivity/iotbox/files
INIT_SRC     := $(RECIPE_FILES)/iotbox.init
DEFAULT_SRC  := $(RECIPE_FILES)/iotbox.default
SERVICE_SRC  := $(RECIPE_FILES)/iotbox.service
JOBS_SERVICE_SRC := $(RECIPE_FILES)/iotbox-jobs.service

.PHONY: all build static test demo install uninstall clean \
	pi-arm64 pi-armv7 pi-armv6 cross-check bench soak fleet-sim fuzz \
	recipe-crates check-recipe test-initd test-install

all: build

build:
	$(CARGO) build --release

static:
	scripts/deps.sh static
	$(CARGO) build --release --target $(STATIC_TARGET)
	@s=$$(stat -c %s $(STATIC_BIN)); \
	 awk -v f=$(STATIC_BIN) -v s=$$s 'BEGIN { printf "%s: %d bytes (%.2f MiB)\n", f, s, s / 1048576 }'

test:
	scripts/deps.sh test
	$(CARGO) test

demo:
	CARGO="$(CARGO)" scripts/demo.sh

# --- install -------------------------------------------------------------

install:
	@if [ -z "$(BIN)" ] || [ ! -x "$(BIN)" ]; then \
	  echo "make install: no binary to install ($(STATIC_BIN) or $(RELEASE_BIN)); run 'make static' or 'make' first, or pass BIN=path" >&2; exit 1; fi
	@echo "installing $(BIN)"
	$(INSTALL) -d $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/iotbox
	ln -sfn iotbox $(DESTDIR)$(BINDIR)/awsapp
	ln -sfn iotbox $(DESTDIR)$(BINDIR)/mqtt5_pubsub
ifneq ($(wildcard $(INIT_SRC)),)
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/init.d
	sed 's|/usr/bin/iotbox|$(BINDIR)/iotbox|g' $(INIT_SRC) >$(DESTDIR)$(SYSCONFDIR)/init.d/iotbox
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/init.d/iotbox
endif
ifneq ($(wildcard $(DEFAULT_SRC)),)
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/default
	@# The configuration is the user's: on a live system (no DESTDIR) an
	@# existing one is kept.
	@if [ -z "$(DESTDIR)" ] && [ -e $(SYSCONFDIR)/default/iotbox ]; then \
	  echo "keeping existing $(SYSCONFDIR)/default/iotbox (the shipped one is $(DEFAULT_SRC))"; \
	else \
	  echo "$(INSTALL) -m 0644 $(DEFAULT_SRC) $(DESTDIR)$(SYSCONFDIR)/default/iotbox"; \
	  $(INSTALL) -m 0644 $(DEFAULT_SRC) $(DESTDIR)$(SYSCONFDIR)/default/iotbox; \
	fi
endif
ifneq ($(wildcard $(SERVICE_SRC)),)
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	sed 's|/usr/bin/iotbox|$(BINDIR)/iotbox|g' $(SERVICE_SRC) >$(DESTDIR)$(SYSTEMDUNITDIR)/iotbox.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/iotbox.service
endif
ifneq ($(wildcard $(JOBS_SERVICE_SRC)),)
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	sed 's|/usr/bin/iotbox|$(BINDIR)/iotbox|g' $(JOBS_SERVICE_SRC) >$(DESTDIR)$(SYSTEMDUNITDIR)/iotbox-jobs.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/iotbox-jobs.service
endif
	@# The spool: an existing one, with whatever mode its owner gave it and
	@# maybe messages in it, is left as it is.
	@if [ -d $(DESTDIR)$(SPOOLDIR) ]; then \
	  echo "keeping existing $(DESTDIR)$(SPOOLDIR)"; \
	else \
	  echo "$(INSTALL) -d -m 0700 $(DESTDIR)$(SPOOLDIR)"; \
	  $(INSTALL) -d -m 0700 $(DESTDIR)$(SPOOLDIR); \
	fi

# Removes what install put there. The configuration file only when it is
# still the shipped one (an edited one is the user's); the spool directory
# only when it is empty (never rm -r: it holds messages not sent yet).
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/iotbox
	@for n in awsapp mqtt5_pubsub; do \
	  f=$(DESTDIR)$(BINDIR)/$$n; \
	  if [ -L "$$f" ] && [ "$$(readlink "$$f")" = iotbox ]; then echo "rm -f $$f"; rm -f "$$f"; fi; \
	done
ifneq ($(wildcard $(INIT_SRC)),)
	rm -f $(DESTDIR)$(SYSCONFDIR)/init.d/iotbox
endif
ifneq ($(wildcard $(DEFAULT_SRC)),)
	@f=$(DESTDIR)$(SYSCONFDIR)/default/iotbox; \
	if [ -e "$$f" ]; then \
	  if cmp -s "$$f" $(DEFAULT_SRC); then echo "rm -f $$f"; rm -f "$$f"; \
	  else echo "keeping $$f: it differs from the shipped $(DEFAULT_SRC)"; fi; \
	fi
endif
ifneq ($(wildcard $(SERVICE_SRC)),)
	rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/iotbox.service
endif
ifneq ($(wildcard $(JOBS_SERVICE_SRC)),)
	rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/iotbox-jobs.service
endif
	@d=$(DESTDIR)$(SPOOLDIR); \
	if [ -d "$$d" ]; then \
	  if [ -z "$$(ls -A "$$d")" ]; then echo "rmdir $$d"; rmdir "$$d"; \
	  else echo "keeping $$d: it is not empty (messages not sent yet?); remove it by hand if they are not wanted"; fi; \
	fi

clean:
	$(CARGO) clean

# --- Raspberry Pi: static musl, rustup targets, rust-lld -------------------
# scripts/pi-build.sh adds the rustup target when missing (one line saying how
# to fix it when it cannot) and links with rust-lld (shipped with rustup) and
# musl's self-contained start files: no ARM linker or libc is needed. ring's C
# still needs a C compiler for the target: an ARM gcc (Debian's
# gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf) or clang; CC_<triple>
# overrides. Result: target/<triple>/release/iotbox.

pi-arm64:
	CARGO="$(CARGO)" scripts/pi-build.sh aarch64-unknown-linux-musl $@
pi-armv7:
	CARGO="$(CARGO)" scripts/pi-build.sh armv7-unknown-linux-musleabihf $@
pi-armv6:
	CARGO="$(CARGO)" scripts/pi-build.sh arm-unknown-linux-musleabihf $@

cross-check:
	CARGO="$(CARGO)" scripts/cross-check.sh

# Footprint and speed beside mosquitto_pub/mosquitto_sub, same broker, same
# run; prints a table and writes target/bench.md. Not a test: asserts nothing.
bench:
	CARGO="$(CARGO)" scripts/bench.sh

# Not a test either: prints a line a minute, fails only if the daemon died
# or nothing flowed.
soak:
	CARGO="$(CARGO)" scripts/soak.sh

# Nor this: a fleet of daemons on this machine, the broker restarted under
# them; prints a table and writes target/fleet-sim.md. Fails only if the
# fleet did not come up, a daemon did not come back or a message was lost.
fleet-sim:
	CARGO="$(CARGO)" scripts/fleet-sim.sh

# libFuzzer on the broker-facing decoders, the message format, the MQTT
# session, the local endpoint's codec and client machine and the spool's
# recovery from any directory (fuzz/, a nightly crate of its own;
# scripts/fuzz.sh installs nightly and cargo-fuzz when missing).
# Corpora in fuzz/corpus/<target>, replayed on stable by `cargo test`
# (tests/fuzz_corpus.rs). Prints executions per target.
FUZZ_SECS ?= 60
fuzz:
	FUZZ_SECS="$(FUZZ_SECS)" scripts/fuzz.sh

# --- scripts kept with the Yocto layer and init script ---------------------

# run-script NAME: run scripts/NAME.sh, or say it is not written yet.
define run-script
@if [ ! -x scripts/$(1).sh ]; then \
  echo "make $@: scripts/$(1).sh does not exist (yet, or is not executable)" >&2; exit 1; fi
$(2) scripts/$(1).sh
endef

recipe-crates:
	$(call run-script,recipe-crates,)

check-recipe:
	$(call run-script,check-recipe,)

# These two take the binary under test in IOTBOX_BIN; by default the static
# one, built here when needed.
test-install:
	@if [ -z "$$IOTBOX_BIN" ]; then $(MAKE) --no-print-directory static; fi
	$(call run-script,test-install,IOTBOX_BIN="$${IOTBOX_BIN:-$(CURDIR)/$(STATIC_BIN)}")

test-initd:
	@if [ -z "$$IOTBOX_BIN" ]; then $(MAKE) --no-print-directory static; fi
	$(call run-script,test-initd,IOTBOX_BIN="$${IOTBOX_BIN:-$(CURDIR)/$(STATIC_BIN)}")
