#!/bin/sh
# Makes syslog-ng runnable for the tests without installing it as a package: Debian's
# syslog-ng-core conflicts with rsyslog (both provide system-log-daemon), and the tests need both.
#
# Fetches syslog-ng-core with `apt-get download`, unpacks it with `dpkg -x` into $1 (default
# $CARGO_TARGET_DIR/peers/syslog-ng; no maintainer script runs, nothing starts), installs the
# libraries it depends on with apt-get (as root), and writes $1/bin/syslog-ng, a wrapper that runs
# the unpacked binary with its own modules and libraries. Prints the wrapper's path.
# Does nothing but print it when the wrapper is there and runs.
set -eu

TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/flumen-target}
PREFIX=${1:-$TARGET/peers/syslog-ng}
WRAPPER="$PREFIX/bin/syslog-ng"
export DEBIAN_FRONTEND=noninteractive

if [ -x "$WRAPPER" ] && "$WRAPPER" --version >/dev/null 2>&1; then
    echo "$WRAPPER"
    exit 0
fi

SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
# The Depends of syslog-ng-core (first alternative of each, versions dropped): libraries only.
deps=$(apt-cache show --no-all-versions syslog-ng-core | sed -n 's/^Depends: //p' | tr ',' '\n' \
       | sed 's/|.*//; s/(.*)//; s/:any//; s/ //g' | grep -v '^$' | sort -u)
if [ -z "$deps" ]; then
    $SUDO apt-get update -q >&2
    deps=$(apt-cache show --no-all-versions syslog-ng-core | sed -n 's/^Depends: //p' | tr ',' '\n' \
           | sed 's/|.*//; s/(.*)//; s/:any//; s/ //g' | grep -v '^$' | sort -u)
fi
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $deps >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download syslog-ng-core >&2)
rm -rf "${PREFIX:?}/root"
mkdir -p "$PREFIX/root" "$PREFIX/bin"
dpkg -x "$tmp"/syslog-ng-core_*.deb "$PREFIX/root"

root="$PREFIX/root"
moddir=$(ls -d "$root"/usr/lib/syslog-ng/[0-9]* | sort -V | tail -n 1)
cat > "$WRAPPER" <<WRAP
#!/bin/sh
# syslog-ng unpacked from its Debian package by tests/peers/syslog-ng.sh (not installed).
LD_LIBRARY_PATH="$root/usr/lib/syslog-ng\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" \\
    exec "$root/usr/sbin/syslog-ng" --module-path="$moddir" "\$@"
WRAP
chmod +x "$WRAPPER"
"$WRAPPER" --version >/dev/null
echo "$WRAPPER"
