# flumen — the two commands a user needs:
#   make run    builds flumen and runs the quickstart topology on the shipped Loghub samples
#   make test   checks formatting and lints, runs the topology unit tests of topologies/tests/, then
#               the whole test suite
#   make soak   the SIGKILL battery with 100 kills instead of 10
#   make fuzz   the cargo-fuzz targets of fuzz/, FUZZ_SECONDS (default 60) each; not part of make test
#   make deb    the Debian package (cargo-deb) in $(CARGO_TARGET_DIR)/debian/: binary, flumen@.service
#   make bench-e2e  the README's performance tables: benches/e2e/bench_all.py runs the end-to-end
#               comparisons (peaks, latency, a backlog opening, many connections, big events, fan-out)
#               against the peers that are installed (rsyslog, syslog-ng, socat), writes the raw runs
#               to benches/e2e/results/ and the tables into README.md; about 30 minutes on 2 cores.
#               `make bench-e2e BENCH_QUICK=1` tries it in about 5 (small sizes, README untouched);
#               BENCH_N, BENCH_REPEAT, BENCH_SECTIONS, ... set each section's size (see bench_all.py)
# Both first install, on Debian/Ubuntu, the system packages the build and the tests need.

CARGO_TARGET_DIR ?= $(HOME)/.cache/flumen-target
export CARGO_TARGET_DIR

# clang/libclang-dev: rocksdb's bindgen; cmake, g++: RocksDB's C++ sources; bsdutils: `logger`;
# curl: HTTP tests; procps: `ps` in crash tests; python3: the HTTP redirecting server of tests/http.rs;
# logrotate: Taildir rotation tests; fiu-utils: failing syscalls (fiu-run, fiu-ctrl); fuse3: the
# power-cut test's FUSE file system (fusermount3 when not root); mount: tmpfs mounts of the fault tests;
# dpkg-dev: cargo-deb's dependency list (dpkg-shlibdeps); systemd: systemd-analyze, which checks the
# package's unit; adduser: the package's postinst creates the user `flumen`;
# python3-prometheus-client: the Prometheus parser that reads /metrics/prometheus in tests/monitoring.rs;
# tmux: the terminal `flumen top` runs in for tests/top.rs; libssl-dev, libsasl2-dev, pkg-config: librdkafka
# with SSL and SASL; openssl: `openssl s_client` in the TLS tests; rsyslog-gnutls, rsyslog-openssl:
# rsyslog sending RFC 5425 syslog over TLS; thrift-compiler: Flume's Thrift IDL compiled for the Python
# Thrift peer of tests/thrift.rs; python3-venv: the virtual environment of the Python peers (PYENV);
# socat: the plain socket-to-file copy `make bench-e2e` measures as the ceiling of the memory path;
# valgrind, linux-perf: the profiles of benches/e2e/profile/.
APT_PACKAGES := clang libclang-dev cmake g++ make bsdutils curl procps kcat python3 logrotate fiu-utils fuse3 mount \
  dpkg-dev systemd adduser python3-prometheus-client tmux libssl-dev libsasl2-dev pkg-config openssl \
  rsyslog rsyslog-gnutls rsyslog-openssl thrift-compiler python3-venv socat valgrind linux-perf

# The Python peers of the Avro and Thrift tests (Apache Avro's and Apache Thrift's Python libraries from
# PyPI), in a virtual environment under the target dir; the tests find it through FLUMEN_PYENV.
PYENV ?= $(CARGO_TARGET_DIR)/pyenv
PY_PACKAGES := avro==1.12.0 thrift==0.22.0
export FLUMEN_PYENV := $(PYENV)

pyenv: deps
	@[ -x $(PYENV)/bin/python ] || python3 -m venv $(PYENV)
	@$(PYENV)/bin/python -c 'import avro.ipc, thrift' 2>/dev/null || $(PYENV)/bin/pip install -q $(PY_PACKAGES)

.PHONY: pyenv deps build run test topology-tests soak bench bench-e2e fuzz deb cargo-deb
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

# cargo-deb builds the package; it is installed (outside the project's target dir) when missing.
cargo-deb: deps
	@command -v cargo-deb >/dev/null || env -u CARGO_TARGET_DIR cargo install --locked cargo-deb

# The package from the release binary `build` made (cargo-deb does not build it again).
deb: build cargo-deb
	cargo deb --no-build --strip --output $(CARGO_TARGET_DIR)/debian/

test: deps cargo-deb pyenv
	@# syslog-ng for tests/tls.rs, unpacked under the target dir (its package conflicts with rsyslog's).
	sh tests/peers/syslog-ng.sh >/dev/null
	cargo fmt --all -- --check
	cargo clippy --release --all-targets -- -D warnings
	$(MAKE) topology-tests
	cargo test --release

# Every topologies/tests/*.ron through the built binary, in one run: it exits 1 when a test fails
# and 2 when a file is malformed (or when the glob matches nothing), so make stops.
topology-tests: build
	$(CARGO_TARGET_DIR)/release/flumen test topologies/tests/*.ron

soak: deps
	KILLS=100 cargo test --release --test sigkill -- --nocapture

bench: deps
	cargo bench --bench channel --bench syslog

# The end-to-end tables, with the release binary `build` made; the harness is ../shared/bench/e2e.py
# (E2E_HARNESS), syslog-ng is $E2E_SYSLOG_NG, else on PATH, in ~/.cache/e2e-peers/bin (the harness's
# setup-peers.sh) or the copy `make test` unpacks under the target dir. BENCH_* variables given to
# make reach bench_all.py through the environment.
bench-e2e: build
	python3 benches/e2e/bench_all.py --flumen $(CARGO_TARGET_DIR)/release/flumen

# The fuzz build has its own target dir (other RUSTFLAGS: it compiles RocksDB and librdkafka again)
# and needs a nightly toolchain. Seeds are written by fuzz/seeds.py from the Loghub samples and the
# example topologies; what libFuzzer finds goes to $(FUZZ_TARGET_DIR)/artifacts/TARGET/. An
# allocation over FUZZ_MALLOC_MB or a resident size over FUZZ_RSS_MB is a finding, as is an input
# taking over 10 s. AddressSanitizer keeps 32 MB of freed memory in quarantine instead of 256 MB,
# so that its own keeping does not reach the resident size limit.
FUZZ_SECONDS ?= 60
FUZZ_TARGET_DIR ?= $(HOME)/.cache/flumen-fuzz-target
FUZZ_TARGETS ?= syslog_parse syslog_frame topology_ron http_body event_codec taildir_position
FUZZ_RSS_MB ?= 512
FUZZ_MALLOC_MB ?= 64
# When the root build has compiled RocksDB, the fuzz build links that librocksdb.a (RocksDB is not
# instrumented either way) instead of compiling it again; FUZZ_ROCKSDB= compiles it.
FUZZ_ROCKSDB ?= $(shell ls -t $(CARGO_TARGET_DIR)/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1)
FUZZ_CARGO := cd fuzz && CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) \
  $(if $(FUZZ_ROCKSDB),ROCKSDB_LIB_DIR=$(patsubst %/,%,$(dir $(FUZZ_ROCKSDB))) ROCKSDB_STATIC=1) nice -n 19 cargo +nightly fuzz
fuzz: deps
	@command -v python3 >/dev/null || { echo "python3 not found (it writes the seeds)"; exit 1; }
	rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	$(FUZZ_CARGO) build --debug-assertions --target-dir $(FUZZ_TARGET_DIR)
	python3 fuzz/seeds.py $(FUZZ_TARGET_DIR)/seeds
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_TARGET_DIR)/corpus/$$t $(FUZZ_TARGET_DIR)/artifacts/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  (ASAN_OPTIONS=quarantine_size_mb=32 $(FUZZ_CARGO) run --debug-assertions --target-dir $(FUZZ_TARGET_DIR) $$t \
	    $(FUZZ_TARGET_DIR)/corpus/$$t $(FUZZ_TARGET_DIR)/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=$(FUZZ_RSS_MB) -malloc_limit_mb=$(FUZZ_MALLOC_MB) \
	    -timeout=10 -print_final_stats=1 -artifact_prefix=$(FUZZ_TARGET_DIR)/artifacts/$$t/); \
	done
