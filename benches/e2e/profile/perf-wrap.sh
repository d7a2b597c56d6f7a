#!/bin/sh
# perf-wrap.sh OUT BIN args...: the agent under perf record (cpu-clock samples, user and kernel)
out=$1; shift
exec perf record -e cpu-clock -F 4999 -o "$out" -- "$@"
