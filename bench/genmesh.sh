#!/usr/bin/env bash
# genmesh.sh N [interval]: a mesh of N loopback ICMP targets (127.0.0.0/8)
# on one peer site, for load tests. Prints YAML on stdout.
set -euo pipefail
n=${1:?usage: genmesh.sh N [interval]}
interval=${2:-1s}
cat <<HDR
site: bench
probe:
  interval: $interval
  timeout: 2s
sites:
  - name: bench
    targets: []
  - name: loopback
    targets:
HDR
for ((i = 0; i < n; i++)); do
  printf '      - address: 127.%d.%d.%d\n' $(( 1 + i / 62500 )) $(( i / 250 % 250 )) $(( 1 + i % 250 ))
done
