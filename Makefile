# The two commands of the README: `make test` and `make demo`. Both set up a
# fresh machine first (Debian packages, kernel modules).

CARGO ?= cargo

.PHONY: setup build test demo bench lint

setup:
	scripts/setup.sh

build: setup
	$(CARGO) build --workspace --all-targets

# Every test, privileged ones included (they fail, not skip, under CI=true).
test: setup
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast

# The whole story on Debian images: a private containerd with pare-snapshotter,
# a Python web service and a batch job profiled, compacted, run minimized;
# side-by-side table and pare-report.html.
demo: setup
	$(CARGO) build --release --workspace
	PARE_BIN=$(CURDIR)/target/release/pare $(CURDIR)/target/release/pare-demo --html $(CURDIR)/pare-report.html

# The first, FUSE-only story: `pare mount` of a generated image, no containerd.
demo-mount: setup
	$(CARGO) build --release -p pare
	scripts/demo.sh

bench: setup
	$(CARGO) build --release --workspace
	$(CARGO) run --release -p pare-benches --bin view

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
