# The two commands of README.md: `make run` and `make test`. Both install the Debian packages
# they need (idempotently) first.

APT_PACKAGES := pkg-config libudev-dev openssl libtss2-dev swtpm swtpm-tools tpm2-tools
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CARGO ?= cargo

.PHONY: deps run test lint bench

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }

# Provision five simulated devices end to end, export the batch, list the database.
run: deps
	$(CARGO) build
	./target/debug/station doctor
	./target/debug/station provision --count 5
	./target/debug/station export
	./target/debug/station list --limit 10

test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test

bench: deps
	$(CARGO) bench --bench protocol
	$(CARGO) bench --bench e2e
