#!/usr/bin/env bash
# compare.sh N [SECONDS]: probe the same N loopback targets (127.0.0.0/8) at
# 1 probe/s each with probed, prometheus-smokeping-prober and fping (Debian
# packages), one tool at a time, and print cores used, CPU per probe and RSS
# side by side, with probed's ratio to each.
#
# Needs root (raw ICMP sockets for all three tools). Only loopback addresses
# are probed. fping cannot pace more than ~5,000 targets at 1 s from one
# process, so above that it runs as several shards whose figures are summed.
set -euo pipefail
n=${1:?usage: compare.sh N [SECONDS]}
secs=${2:-30}
warm=5
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

for tool in prometheus-smokeping-prober fping; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool not installed (apt-get install $tool)" >&2; exit 1; }
done

"$here/genmesh.sh" "$n" > "$work/mesh.yaml"
grep -o '127\.[0-9.]*' "$work/mesh.yaml" > "$work/targets.txt"
(cd "$root" && CGO_ENABLED=0 go build -o "$work/probed" ./cmd/probed)
hz=$(getconf CLK_TCK)

# cpu_ticks PID...: user+system ticks of the processes and their children.
cpu_ticks() {
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '{print $14+$15+$16+$17}' "/proc/$p/stat")))
  done
  echo "$t"
}
rss_kib() {
  local r=0 p
  for p in "$@"; do r=$((r + $(awk '/^VmRSS/{print $2}' "/proc/$p/status"))); done
  echo "$r"
}

# measure NAME PID...: wait for warm-up, then CPU over $secs and RSS at the end.
measure() {
  local name=$1
  shift
  sleep "$warm"
  local t0 t1
  t0=$(cpu_ticks "$@")
  sleep "$secs"
  t1=$(cpu_ticks "$@")
  local rss
  rss=$(rss_kib "$@")
  local cores
  cores=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$secs" 'BEGIN{printf "%.3f", d/hz/s}')
  echo "$name $cores $rss" >> "$work/results"
  kill "$@" 2>/dev/null || true
  wait "$@" 2>/dev/null || true
}

# probed
"$work/probed" --config.file="$work/mesh.yaml" --web.listen-address=127.0.0.1:0 --log.level=warn >"$work/probed.log" 2>&1 &
ppid=$!
pids+=("$ppid")
measure probed "$ppid"

# smokeping_prober: one pinger (and socket) per host.
prometheus-smokeping-prober --web.listen-address=127.0.0.1:0 --privileged --ping.interval=1s \
  $(cat "$work/targets.txt") >"$work/smokeping.log" 2>&1 &
spid=$!
pids+=("$spid")
measure smokeping_prober "$spid"

# fping: loop mode, 1 s period per target, shards of at most 5,000 targets
# (-i is the gap between any two packets of one process).
shard=5000
split -l "$shard" "$work/targets.txt" "$work/shard."
fp=()
for f in "$work"/shard.*; do
  cnt=$(wc -l < "$f")
  gap=$(awk -v c="$cnt" 'BEGIN{g=1000/c; if (g>10) g=10; printf "%.3f", g}')
  fping -l -q -p 1000 -t 1000 -i "$gap" -f "$f" >"$f.log" 2>&1 &
  fp+=($!)
  pids+=($!)
done
measure "fping(x${#fp[@]})" "${fp[@]}"

# The report: CPU per probe = cores / probes per second.
echo
echo "targets: $n at 1 probe/s each, measured over ${secs}s after ${warm}s warm-up"
awk -v n="$n" '
  { name[NR]=$1; cores[NR]=$2; rss[NR]=$3 }
  END {
    printf "%-18s %8s %16s %10s %14s %12s\n", "tool", "cores", "CPU/probe (us)", "RSS (MiB)", "probed CPU x", "probed RSS x"
    for (i = 1; i <= NR; i++) {
      printf "%-18s %8.3f %16.1f %10.1f %14.2f %12.2f\n", name[i], cores[i], cores[i]/n*1e6, rss[i]/1024,
        (cores[i] > 0 ? cores[1]/cores[i] : 0), (rss[i] > 0 ? rss[1]/rss[i] : 0)
    }
  }' "$work/results"
