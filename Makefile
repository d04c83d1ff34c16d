# The two commands of README.md: `make run` and `make test`. Both install the Debian packages
# they need (idempotently) first.

APT_PACKAGES := build-essential pkg-config libudev-dev openssl libtss2-dev swtpm swtpm-tools tpm2-tools lintian postgresql python3-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CARGO ?= cargo

SMP_VENV := target/smp-venv
SMPCLIENT_VERSION := 7.3.0

.PHONY: smp-venv deps gui-deps gui-runtime run run-headless test headless bench fuzz cargo-fuzz screenshot screenshot-build screenshot-one screenshot-gang cargo-deb deb deb-check

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }
	@$(CARGO) clippy -V >/dev/null 2>&1 && $(CARGO) fmt --version >/dev/null 2>&1 || \
	  { command -v rustup >/dev/null && rustup component add clippy rustfmt; } || \
	  { echo "cargo clippy and cargo fmt are needed: rustup component add clippy rustfmt"; exit 1; }

# The station window on the repository's station.toml (built-in simulated device).
run: deps gui-runtime
	$(CARGO) build
	./target/debug/station

# The same pipeline headless: provision five simulated devices, export, list.
run-headless: deps
	$(CARGO) build
	./target/debug/station doctor
	./target/debug/station provision --count 5
	./target/debug/station export
	./target/debug/station list --limit 10

test: deps deb-check headless smp-venv
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test

# The independent SMP client tests/smp.rs checks the simulator against: Python's smpclient in a
# virtual environment, made once (and again if the pinned version changes).
smp-venv: deps
	@if ! $(SMP_VENV)/bin/python -c "import serial, smpclient, importlib.metadata as m; assert m.version('smpclient') == '$(SMPCLIENT_VERSION)'" 2>/dev/null; then \
	  rm -rf $(SMP_VENV) && python3 -m venv $(SMP_VENV) && \
	  $(SMP_VENV)/bin/pip install -q 'smpclient[serial]==$(SMPCLIENT_VERSION)' || \
	  { echo "cannot create the smpclient virtual environment in $(SMP_VENV) (python3-venv and PyPI are needed)"; exit 1; }; \
	fi

# The headless build (no window, no eframe/egui linked) for MES line PCs: it must build,
# lint clean, link no GUI crate, and refuse the window with a usage error.
headless: deps
	$(CARGO) clippy --no-default-features --lib --bins --target-dir target/headless -- -D warnings
	$(CARGO) build --no-default-features --target-dir target/headless
	@tree=$$($(CARGO) tree --no-default-features -e normal --prefix none) || exit 1; \
	if printf '%s\n' "$$tree" | grep -E '^(eframe|egui|egui_extras|winit|glow) '; then \
	  echo "the headless build links the crates above"; exit 1; fi
	@target/headless/debug/station --version
	@out=$$(target/headless/debug/station 2>&1); rc=$$?; \
	[ $$rc = 2 ] && printf '%s' "$$out" | grep -q "built without the window" || \
	  { echo "headless station without a command: exit $$rc, $$out"; exit 1; }
	@echo "headless station: builds, links no eframe/egui, refuses the window with exit 2"

CARGO_DEB_VERSION := 3.8.0

cargo-deb:
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked --version $(CARGO_DEB_VERSION)

# The Debian package a station PC is set up from (installer/README.md): the `deb` profile
# (release, stripped).
deb: deps cargo-deb
	$(CARGO) deb --profile deb

# Build the package exactly as `make deb` does, as two versions (the second without building
# again), and check it: contents, stripped binary, control, conffiles, lintian,
# install/upgrade/purge.
deb-check: deps cargo-deb
	$(CARGO) deb --profile deb --deb-version 0.1.0-1 -o target/debian/check-1.deb
	$(CARGO) deb --profile deb --no-build --deb-version 0.1.0-2 -o target/debian/check-2.deb
	installer/check-deb.sh target/debian/check-1.deb target/debian/check-2.deb

bench: deps gui-deps
	$(CARGO) bench --bench protocol
	$(CARGO) bench --bench e2e

# Coverage-guided fuzzing of every parser fed from outside (docs/fuzzing.md): each target of
# fuzz/ for FUZZ_SECONDS under libFuzzer, which needs a nightly toolchain and cargo-fuzz
# (installed here once). New inputs go to fuzz/corpus-run/ (not kept); the seeds and the
# regressions are read, never written. `make test` replays both on stable Rust.
FUZZ_TARGETS := frames responses csr ek dps_answers config smp
FUZZ_SECONDS ?= 60
FUZZ_FLAGS ?= -rss_limit_mb=2048 -timeout=5
# AddressSanitizer by default; `none` runs two to three times as many inputs a second (the long
# runs of fuzz/RESULTS.md: the station's own code is safe Rust).
FUZZ_SANITIZER ?= address
# Inputs long enough for a stream or a script to hold frames beyond the 4096-byte body limit (for
# frames from the start, and two of the largest frames: growing lengths slowly never reached
# 4 KiB in 6 minutes).
FUZZ_MAX_LEN_frames := 8192
FUZZ_MAX_LEN_responses := 16384
CARGO_FUZZ_VERSION := 0.13.2
NIGHTLY ?= nightly

cargo-fuzz:
	@rustup run $(NIGHTLY) rustc --version >/dev/null 2>&1 || \
	  { echo "fuzzing needs a nightly toolchain: rustup toolchain install $(NIGHTLY)"; exit 1; }
	@$(CARGO) +$(NIGHTLY) fuzz --version >/dev/null 2>&1 || \
	  $(CARGO) +$(NIGHTLY) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)

fuzz: deps cargo-fuzz
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus-run/$$t fuzz/regressions/$$t fuzz/artifacts/$$t fuzz/logs; \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  case $$t in frames) len="-max_len=$(FUZZ_MAX_LEN_frames) -len_control=0";; responses) len="-max_len=$(FUZZ_MAX_LEN_responses)";; *) len="";; esac; \
	  $(CARGO) +$(NIGHTLY) fuzz run -s $(FUZZ_SANITIZER) $$t fuzz/corpus-run/$$t fuzz/corpus/$$t fuzz/regressions/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_FLAGS) $$len -artifact_prefix=fuzz/artifacts/$$t/ \
	    2> fuzz/logs/$$t.log || { tail -n 40 fuzz/logs/$$t.log; exit 1; }; \
	  grep -E '^(Done [0-9]+ runs|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb))' fuzz/logs/$$t.log; \
	done

GUI_RUNTIME := libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0
GUI_PACKAGES := $(GUI_RUNTIME) xvfb xauth

gui-runtime:
	@$(MAKE) --no-print-directory gui-deps GUI_PACKAGES="$(GUI_RUNTIME)"

gui-deps:
	@missing=""; for p in $(GUI_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Regenerate the README's pictures from the real window under Xvfb, each once its devices
# pass: docs/station-window.png (one fixture, 1280x800) and docs/station-window-8-fixtures.png
# (a gang of eight simulated fixtures, 1920x1080).
SCREENSHOT := target/screenshot
# station.toml with [gui] auto_start = true and sounds = false: keys already in its [gui] table
# are replaced, not added again (a second [gui] table, or a repeated key, is a config error).
SCREENSHOT_GUI := awk ' \
  /^\[/ { in_gui = ($$0 ~ /^\[gui\]/) } \
  in_gui && /^(auto_start|sounds)[ \t]*=/ { next } \
  { print } \
  /^\[gui\]/ { print "auto_start = true"; print "sounds = false"; found = 1 } \
  END { if (!found) { print ""; print "[gui]"; print "auto_start = true"; print "sounds = false" } }'
SCREENSHOT_RUN := STATION_OPERATOR=demo timeout 180 xvfb-run -a -s

screenshot: screenshot-one screenshot-gang

screenshot-build: deps gui-deps
	$(CARGO) build

screenshot-one: screenshot-build
	rm -rf $(SCREENSHOT)/one && mkdir -p $(SCREENSHOT)/one/assets
	cp -r assets/demo $(SCREENSHOT)/one/assets/
	$(SCREENSHOT_GUI) station.toml > $(SCREENSHOT)/one/station.toml
	STATION_GUI_SCREENSHOT=$(CURDIR)/$(SCREENSHOT)/one/window.png $(SCREENSHOT_RUN) "-screen 0 1280x800x24" \
	  ./target/debug/station --config $(SCREENSHOT)/one/station.toml
	cp $(SCREENSHOT)/one/window.png docs/station-window.png

screenshot-gang: screenshot-build
	rm -rf $(SCREENSHOT)/gang && mkdir -p $(SCREENSHOT)/gang/assets
	cp -r assets/demo $(SCREENSHOT)/gang/assets/
	$(SCREENSHOT_GUI) station.toml > $(SCREENSHOT)/gang/station.toml
	for k in 1 2 3 4 5 6 7 8; do \
	  printf '\n[[fixture]]\nid = "f%s"\nlabel = "Slot %s"\nport = "sim"\n' $$k $$k; \
	done >> $(SCREENSHOT)/gang/station.toml
	STATION_GUI_SCREENSHOT=$(CURDIR)/$(SCREENSHOT)/gang/window.png $(SCREENSHOT_RUN) "-screen 0 1920x1080x24" \
	  ./target/debug/station --config $(SCREENSHOT)/gang/station.toml
	cp $(SCREENSHOT)/gang/window.png docs/station-window-8-fixtures.png
