# flumen — the two commands a user needs:
#   make run    builds flumen and runs the quickstart topology on the shipped Loghub samples
#   make test   checks formatting and lints, then runs the whole test suite
#   make soak   the SIGKILL battery with 100 kills instead of 10
# Both first install, on Debian/Ubuntu, the system packages the build and the tests need.

CARGO_TARGET_DIR ?= $(HOME)/.cache/flumen-target
export CARGO_TARGET_DIR

# clang/libclang-dev: rocksdb's bindgen; cmake, g++: RocksDB's C++ sources; bsdutils: `logger`;
# curl: HTTP tests; procps: `ps` in crash tests; python3: the HTTP redirecting server of tests/http.rs;
# logrotate: Taildir rotation tests; fiu-utils: failing syscalls (fiu-run, fiu-ctrl); fuse3: the
# power-cut test's FUSE file system (fusermount3 when not root).
APT_PACKAGES := clang libclang-dev cmake g++ make bsdutils curl procps kcat python3 logrotate fiu-utils fuse3

.PHONY: deps build run test soak bench
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }

build: deps
	cargo build --release --bins

run: build
	$(CARGO_TARGET_DIR)/release/flumen run --once topologies/quickstart.ron

test: deps
	cargo fmt --all -- --check
	cargo clippy --release --all-targets -- -D warnings
	cargo test --release

soak: deps
	KILLS=100 cargo test --release --test sigkill -- --nocapture

bench: deps
	cargo bench --bench channel --bench syslog
