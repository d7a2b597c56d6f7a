#!/bin/sh
# Runs `FLUMEN run --quiet TOPOLOGY` after making a fresh AES-256 key at keys/bench.key beside
# the topology (the harness renders it into the run's scratch directory), readable by its owner
# only as flumen requires. exec: the harness measures flumen's own process.
set -eu
flumen=$1
topology=$2
keys=$(dirname "$topology")/keys
umask 077
mkdir -p "$keys"
head -c 32 /dev/urandom > "$keys/bench.key"
exec "$flumen" run --quiet "$topology"
