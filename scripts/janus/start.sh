#!/usr/bin/env bash
# Starts a Janus (Debian package `janus`, 1.1.x) as a benchmark peer on this machine: writes its
# own minimal configuration into DIR (only the VideoRoom plugin and the plain HTTP transport,
# Janus API on 127.0.0.1:PORT/janus, no admin API, no event handlers, no loggers, no STUN/TURN,
# IPv4 only), starts `janus -F DIR -C DIR/janus.jcfg` in the background (pinned to one core with
# --cpu), records its pid in DIR/janus.pid and waits until GET /janus/info answers.
#
#   scripts/janus/start.sh --dir DIR --http-port PORT [--rtp-ports MIN-MAX] [--cpu N]
#                          [--ice-address ADDR] [--debug-level 0-7]
#
# The log level defaults to 2 (errors only): at 3 an overloaded Janus writes one warning per
# dropped packet ("Discarding too old outgoing packet", ~800k lines in one run), which costs it
# CPU exactly when it is the bottleneck. Use --debug-level 3 or 4 to diagnose.
#
# Running it again while that Janus is up does nothing (exit 0). Stop with scripts/janus/stop.sh.
#
# ICE address: Janus 1.1.x cannot offer a 127.0.0.1 candidate. Its src/ice.c skips every
# IFF_LOOPBACK interface before it even looks at ice_enforce_list, so ice_enforce_list = "lo" or
# "127.0.0.1" leaves it with no address of its own, and libnice then falls back to gathering on
# every non-loopback address (IPv6 and link-local included, whatever ipv6 = false says). And
# libnice 0.1.21 (Debian 12) ties each UDP socket to its interface (IP_UNICAST_IF), so
# Janus' packets to a client's 127.0.0.1 candidate leave by eth0 and are lost: ICE fails.
# So we restrict gathering to this machine's own IPv4 address (the default route's source, or
# --ice-address / JANUS_ICE_ADDRESS), write it to DIR/ice-address, and the client must offer a
# host candidate on that same address. Traffic between two local addresses still only goes
# through the kernel's loopback path. See API-NOTES.md.
set -euo pipefail

die() { echo "janus/start.sh: $*" >&2; exit 1; }

dir="" port="" rtp="20000-40000" cpu="" ice="${JANUS_ICE_ADDRESS:-}" level=2
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
    --dir=*) dir="${1#*=}"; shift ;;
    --http-port) port="${2:?--http-port needs a value}"; shift 2 ;;
    --http-port=*) port="${1#*=}"; shift ;;
    --rtp-ports) rtp="${2:?--rtp-ports needs a value}"; shift 2 ;;
    --rtp-ports=*) rtp="${1#*=}"; shift ;;
    --cpu) cpu="${2:?--cpu needs a value}"; shift 2 ;;
    --cpu=*) cpu="${1#*=}"; shift ;;
    --ice-address) ice="${2:?--ice-address needs a value}"; shift 2 ;;
    --ice-address=*) ice="${1#*=}"; shift ;;
    --debug-level) level="${2:?--debug-level needs a value}"; shift 2 ;;
    --debug-level=*) level="${1#*=}"; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[ -n "$dir" ] || die "--dir DIR is required"
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--http-port PORT is required (1-65535)"
[[ "$rtp" =~ ^([0-9]+)-([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -le "${BASH_REMATCH[2]}" ] \
  && [ "${BASH_REMATCH[2]}" -le 65535 ] || die "--rtp-ports must look like MIN-MAX, got '$rtp'"
[ -z "$cpu" ] || [[ "$cpu" =~ ^[0-9]+$ ]] || die "--cpu must be a core number, got '$cpu'"
[[ "$level" =~ ^[0-7]$ ]] || die "--debug-level must be 0-7"
command -v janus >/dev/null || die "janus is not installed (apt-get install janus)"
command -v curl >/dev/null || die "curl is not installed"
[ -z "$cpu" ] || command -v taskset >/dev/null || die "--cpu needs taskset (util-linux)"

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
pidfile="$dir/janus.pid"
log="$dir/janus.log"
info_url="http://127.0.0.1:$port/janus/info"

# Already running? Then there is nothing to do, as long as it answers on the asked port.
if [ -s "$pidfile" ]; then
  old="$(cat "$pidfile")"
  if [[ "$old" =~ ^[0-9]+$ ]] && kill -0 "$old" 2>/dev/null \
     && [ "$(cat "/proc/$old/comm" 2>/dev/null)" = "janus" ]; then
    if curl -fsS -m 2 "$info_url" >/dev/null 2>&1; then
      echo "janus already running (pid $old) on 127.0.0.1:$port"
      exit 0
    fi
    die "janus pid $old from $pidfile is running but does not answer on $info_url; stop it first (scripts/janus/stop.sh --dir $dir)"
  fi
  rm -f "$pidfile"
fi
if command -v ss >/dev/null && [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]; then
  die "something already listens on TCP port $port"
fi

# Where Debian puts the modules; the others found there are disabled one by one.
libdir=""
for d in /usr/lib/x86_64-linux-gnu/janus /usr/lib/aarch64-linux-gnu/janus /usr/lib/janus /opt/janus/lib/janus; do
  [ -f "$d/plugins/libjanus_videoroom.so" ] && { libdir="$d"; break; }
done
[ -n "$libdir" ] || die "cannot find libjanus_videoroom.so under /usr/lib/*/janus"
others() { # others FOLDER KEEP: comma-separated list of the module files in FOLDER except KEEP
  local f out=""
  for f in "$libdir/$1"/libjanus_*.so; do
    [ -e "$f" ] || continue
    f="$(basename "$f")"
    [ "$f" = "$2" ] && continue
    out="${out:+$out,}$f"
  done
  echo "$out"
}

# The address Janus gathers its (only) host candidate on; see the note at the top.
if [ -z "$ice" ]; then
  # Only asks the kernel which source address it would use; nothing is sent.
  ice="$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n1)"
  [ -n "$ice" ] || ice="$(ip -4 -o addr show scope global 2>/dev/null | awk '{split($4,a,"/"); print a[1]; exit}')"
  [ -n "$ice" ] || die "this machine has no non-loopback IPv4 address, and Janus will not gather on loopback; give one with --ice-address"
fi
case "$ice" in
  lo|lo:*|127.*|::1|localhost)
    die "--ice-address $ice: Janus never gathers on loopback (libnice would fall back to every other address); give this machine's own address" ;;
esac

cat >"$dir/janus.jcfg" <<EOF
# Written by scripts/janus/start.sh: a Janus core set up as a benchmark peer on this machine.
general: {
	configs_folder = "$dir"
	plugins_folder = "$libdir/plugins"
	transports_folder = "$libdir/transports"
	events_folder = "$libdir/events"
	loggers_folder = "$libdir/loggers"
	log_to_stdout = false
	log_to_file = "$log"
	debug_level = $level
	debug_timestamps = true
	debug_colors = false
	server_name = "conclave-bench-janus"
	# A session dies after this many seconds without any request (a keepalive or a long poll).
	session_timeout = 120
	reclaim_session_timeout = 0
	# No api_secret, no token_auth, no admin API: the API only listens on 127.0.0.1.
}
certificates: {
	# No certificate given: Janus makes a self-signed ECDSA P-256 one at start-up for DTLS.
}
media: {
	ipv6 = false
	ipv6_linklocal = false
	rtp_port_range = "$rtp"
	# Janus' own defaults, written out so that a benchmark states what it ran with:
	# keep at least 200 ms of sent packets for retransmission (the queue grows with the RTT),
	# without flushing it on keyframes; TWCC feedback every 200 ms when the peer negotiated it;
	# a 'media' event ("receiving": false) after 1 s without incoming media; no 'slowlink' events.
	min_nack_queue = 200
	nack_optimizations = false
	twcc_period = 200
	no_media_timer = 1
	slowlink_threshold = 0
	dtls_mtu = 1200
}
nat: {
	# No STUN and no TURN: host candidates only, on one address.
	ice_enforce_list = "$ice"
	ice_lite = false
	ice_tcp = false
	full_trickle = false
	ignore_mdns = true
	nice_debug = false
}
plugins: {
	disable = "$(others plugins libjanus_videoroom.so)"
}
transports: {
	disable = "$(others transports libjanus_http.so)"
}
loggers: {
	disable = "$(others loggers none)"
}
events: {
	broadcast = false
	disable = "$(others events none)"
}
EOF

cat >"$dir/janus.transport.http.jcfg" <<EOF
# Written by scripts/janus/start.sh: the Janus API over plain HTTP on 127.0.0.1 only.
general: {
	events = false
	json = "compact"
	base_path = "/janus"
	http = true
	port = $port
	ip = "127.0.0.1"
	https = false
}
admin: {
	admin_http = false
	admin_https = false
}
EOF

cat >"$dir/janus.plugin.videoroom.jcfg" <<EOF
# Written by scripts/janus/start.sh: no rooms at start-up; the benchmark creates its own with a
# "create" request (see API-NOTES.md). Rooms are never saved back to this file.
general: {
	events = false
	string_ids = false
}
EOF

echo "$ice" >"$dir/ice-address"
rm -f "$log"
cmd=(janus -F "$dir" -C "$dir/janus.jcfg")
[ -z "$cpu" ] || cmd=(taskset -c "$cpu" "${cmd[@]}")
# Run from DIR with core dumps off: Janus 1.1.2 can crash in the HTTP transport while it shuts
# down with sessions still open, and a core of several GB must not land in the caller's folder.
# The subshell execs nohup, which execs taskset, which execs janus: $! is Janus' own pid.
( cd "$dir" && ulimit -c 0 && exec nohup "${cmd[@]}" ) >"$dir/janus.out" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

deadline=$((SECONDS + 10))
while [ "$SECONDS" -lt "$deadline" ]; do
  if curl -fsS -m 1 "$info_url" >/dev/null 2>&1; then
    echo "janus running (pid $pid) on http://127.0.0.1:$port/janus, ICE on $ice, RTP ports $rtp${cpu:+, cpu $cpu}, dir $dir"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
  echo "janus/start.sh: janus (pid $pid) did not answer on $info_url within 10 s; stopping it" >&2
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
else
  echo "janus/start.sh: janus exited during start-up" >&2
fi
rm -f "$pidfile"
for f in "$dir/janus.out" "$log"; do
  [ -s "$f" ] && { echo "--- last lines of $f:" >&2; tail -n 30 "$f" >&2; }
done
exit 1
