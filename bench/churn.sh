#!/usr/bin/env bash
# churn.sh [SECONDS] [RELOAD_EVERY]: reload probed every RELOAD_EVERY
# seconds (default 10) for SECONDS (default 180) while scraping it every
# second, and report what the reloads cost: probes lost, open file
# descriptors and goroutines after each reload, RSS over time, and own
# replies miscounted as foreign.
#
# RELOAD_EVERY=0 is the control: the same mesh, sampled every 10 seconds,
# never reloaded, to tell the reloads' cost from the agent's warm-up (the
# RTT histograms' buckets and the per-minute history fill in over time).
#
# The mesh has 1,000 loopback targets that stay, plus three groups of 100
# on other socket keys (a source address, TOS 32, TOS 64). Every other
# reload swaps the source group and the TOS-64 group for a TOS-96 group,
# so sockets are opened and closed by every reload.
#
# Needs root (raw ICMP sockets). Only loopback addresses are probed.
set -euo pipefail
secs=${1:-180}
every=${2:-10}
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

# group NAME FIRST COUNT EXTRA: COUNT targets from 127.2.FIRST.x with EXTRA settings.
group() {
  local i
  for ((i = 0; i < $3; i++)); do
    printf '      - {address: 127.%d.%d.%d%s}\n' "$2" $((i / 250)) $((1 + i % 250)) "$4"
  done
}
mesh() { # mesh A|B
  cat <<HDR
site: bench
probe: {interval: 1s, timeout: 2s}
sites:
  - name: bench
    targets: []
  - name: loopback
    targets:
HDR
  group base 1 1000 ""
  group tos32 3 100 ", tos: 32"
  if [ "$1" = A ]; then
    group src 2 100 ", source: 127.0.0.1"
    group tos64 4 100 ", tos: 64"
  else
    group tos96 5 100 ", tos: 96"
  fi
}
mesh A > "$work/A.yaml"
mesh B > "$work/B.yaml"
cp "$work/A.yaml" "$work/mesh.yaml"
(cd "$root" && CGO_ENABLED=0 go build -o "$work/probed" ./cmd/probed)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
GOMAXPROCS= "$work/probed" --config.file="$work/mesh.yaml" --web.listen-address=127.0.0.1:$port --log.level=warn >"$work/probed.log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port/metrics

scrape() { curl -sf "$url" > "$work/last.txt" || true; }
metric() { # metric NAME [LABEL-FRAGMENT]: sum of the series
  awk -v n="$1" -v f="${2:-}" 'index($0, n) == 1 && (f == "" || index($0, f)) { s += $NF } END { printf "%d", s }' "$work/last.txt"
}
rss() { awk '/^VmRSS/{print $2}' "/proc/$pid/status"; }
fds() { ls "/proc/$pid/fd" | wc -l; }
threads() { awk '/^Threads/{print $2}' "/proc/$pid/status"; }

sleep 3
scrape
echo "t(s)  mesh  fds  threads  goroutines  rss(MiB)  sent  lost(kept targets)  foreign"
start=$(date +%s)
which=A
step=$every
[ "$every" -eq 0 ] && step=10
next=$((start + step))
while :; do
  now=$(date +%s)
  el=$((now - start))
  [ "$el" -ge "$secs" ] && break
  scrape
  if [ "$now" -ge "$next" ]; then
    if [ "$every" -gt 0 ]; then
      if [ "$which" = A ]; then which=B; else which=A; fi
      cp "$work/$which.yaml" "$work/mesh.yaml"
      kill -HUP "$pid"
    fi
    next=$((next + step))
    sleep 1
    scrape
    lost=$(( $(metric 'probed_probes_lost_total{' 'target="127.1.') + $(metric 'probed_probes_lost_total{' 'target="127.3.') ))
    printf '%4d  %-4s  %3d  %7d  %10d  %8.1f  %6d  %18d  %7d\n' "$el" "$which" "$(fds)" "$(threads)" "$(metric go_goroutines)" \
      "$(echo "$(rss) / 1024" | bc -l)" "$(metric probed_probes_sent_total)" "$lost" "$(metric 'probed_icmp_ignored_replies_total' 'foreign')"
    [ "$el" -ge 30 ] && echo "$which $(rss)" >> "$work/rss"
  fi
  sleep 1
done
scrape
lost=$(( $(metric 'probed_probes_lost_total{' 'target="127.1.') + $(metric 'probed_probes_lost_total{' 'target="127.3.') ))
echo
reloads=0
[ "$every" -gt 0 ] && reloads=$((secs / every))
echo "reloads: $reloads, kept targets lost: $lost, foreign: $(metric 'probed_icmp_ignored_replies_total' 'foreign'), reload failures: $(grep -c 'reload failed' "$work/probed.log" || true)"
# RSS growth from 30 s on, comparing samples taken right after reloads to
# the same mesh (the two meshes hold different sockets).
awk '{ if (!($1 in first)) first[$1] = $2; last[$1] = $2 }
  END { for (m in first) printf "RSS after reloads to mesh %s, from 30 s to the end: %.1f -> %.1f MiB (%+.1f %%)\n", m, first[m]/1024, last[m]/1024, (last[m]-first[m])*100/first[m] }' "$work/rss"
