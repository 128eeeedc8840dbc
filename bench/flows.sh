#!/usr/bin/env bash
# flows.sh N [SECONDS] [ROUNDS]: the CPU cost of flows (docs/ecmp.md). probed
# probes the same N loopback targets (127.0.0.0/8) at 1 probe/s each — the
# same packet rate — with flows: 1, with flows: 16, and with flows: 16 and
# trace.pps 1 (the flows' member-path traces, which run at start and take
# trace.pps, left out: the per-flow accounting alone). Each run is measured
# over SECONDS after a warm-up; the variants alternate ROUNDS times, each
# round starting with the next one, so a change in the machine's load hits
# all of them alike.
#
# Needs root (raw ICMP sockets; the traces too). Only loopback addresses are
# probed.
set -euo pipefail
n=${1:-1000}
secs=${2:-30}
rounds=${3:-2}
warm=10
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

(cd "$root" && CGO_ENABLED=0 go build -o "$work/probed" ./cmd/probed)
hz=$(getconf CLK_TCK)

# mesh FLOWS PPS: genmesh's mesh with probe.flows and trace.pps set.
mesh() {
  "$here/genmesh.sh" "$n" | awk -v f="$1" -v p="$2" '
    /^probe:/ { print; print "  flows: " f; next }
    /^sites:/ { print "trace:"; print "  pps: " p }
    { print }'
}
mesh 1 100 > "$work/flows1.yaml"
mesh 16 100 > "$work/flows16.yaml"
mesh 16 1 > "$work/flows16-notrace.yaml"

# run NAME: start probed on the mesh NAME.yaml, measure CPU over $secs after
# the warm-up, RSS at the end, and the probes sent (from /metrics).
run() {
  local name=$1 port=$((19500 + RANDOM % 400))
  "$work/probed" --config.file="$work/$name.yaml" --web.listen-address="127.0.0.1:$port" --log.level=warn >"$work/$name.log" 2>&1 &
  pid=$!
  sleep "$warm"
  local t0 t1 s0 s1
  sent() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^probed_probes_sent_total/{s+=$2} END{printf "%d", s}'; }
  s0=$(sent)
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  sleep "$secs"
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  s1=$(sent)
  local rss
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
  awk -v n="$name" -v d=$((t1 - t0)) -v hz="$hz" -v s="$secs" -v r="$rss" -v p=$((s1 - s0)) \
    'BEGIN{printf "%-16s %8.3f %10.1f %10.0f\n", n, d/hz/s, r/1024, p/s}' >> "$work/results"
}

variants=(flows1 flows16 flows16-notrace)
for ((r = 0; r < rounds; r++)); do
  # Each round starts with another variant: no variant always runs first.
  for ((i = 0; i < ${#variants[@]}; i++)); do
    run "${variants[$(((r + i) % ${#variants[@]}))]}"
  done
done
echo "targets: $n at 1 probe/s each; CPU over ${secs}s after ${warm}s warm-up; $rounds rounds, alternating"
printf "%-16s %8s %10s %10s\n" "variant" "cores" "RSS (MiB)" "probes/s"
cat "$work/results"
