#!/usr/bin/env bash
# Stops the Janus that scripts/janus/start.sh started in DIR (the pid in DIR/janus.pid):
# SIGTERM, then SIGKILL if it has not exited after 10 s. Does nothing if it is not running.
#   scripts/janus/stop.sh --dir DIR
set -euo pipefail

dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
    --dir=*) dir="${1#*=}"; shift ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "janus/stop.sh: unknown argument: $1" >&2; exit 1 ;;
  esac
done
[ -n "$dir" ] || { echo "janus/stop.sh: --dir DIR is required" >&2; exit 1; }
pidfile="$dir/janus.pid"
[ -s "$pidfile" ] || { echo "janus not running (no $pidfile)"; exit 0; }
pid="$(cat "$pidfile")"
if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null \
   || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "janus" ]; then
  echo "janus not running (stale $pidfile)"
  rm -f "$pidfile"
  exit 0
fi
kill -TERM "$pid"
for _ in $(seq 1 100); do
  kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "janus (pid $pid) stopped"; exit 0; }
  sleep 0.1
done
echo "janus/stop.sh: pid $pid still there after 10 s, sending SIGKILL" >&2
kill -KILL "$pid" 2>/dev/null || true
sleep 0.2
rm -f "$pidfile"
