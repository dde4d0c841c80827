#!/usr/bin/env bash
# Instructions per request of the meshgate release build, counted by valgrind's callgrind: a
# number that does not move with the machine's load, for comparing two builds of the data path
# (the RPS runs of bench/run.py need a quiet machine; this does not).
#
#   bash bench/instructions.sh [h2|h1] [plain|plugin|raw-plugin] [REQUESTS]
#
# Starts an nginx upstream and meshgate (one worker) under callgrind on loopback, warms up with
# 400 requests, then counts the user-space instructions of REQUESTS more (default 4000; h2:
# h2load 16 connections x 16 streams, h1: 16 keep-alive connections), and prints them per
# request. `plugin` adds the add-headers WasmPlugin, `raw-plugin` its twin without an SDK
# (add-headers-raw; both built by scripts/build-plugins.sh).
# Needs valgrind, nginx, h2load and curl; kernel time is not counted. Set CALLGRIND_OUT=FILE to
# keep the profile for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."

proto="${1:-h2}"
case_="${2:-plain}"
n="${3:-4000}"
target="${CARGO_TARGET_DIR:-$HOME/.cache/meshgate-target}"
bin="$target/release/meshgate"
[ -x "$bin" ] || { echo "build it first: cargo build --release -p meshgate" >&2; exit 2; }

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up="$(port)"; gw="$(port)"

cat > "$tmp/up.conf" <<EOF
worker_processes 1; daemon off; pid $tmp/up.pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$up; keepalive_requests 1000000;
  location / { return 200 "hello from upstream\n"; } } }
EOF
nginx -c "$tmp/up.conf" -p "$tmp" &
pids+=($!)

cat > "$tmp/gw.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: $gw, name: http, protocol: HTTP}
    hosts: ["*/*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: upstream, namespace: bench}
spec:
  hosts: [upstream.bench.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $up}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: upstream.bench.svc.cluster.local}}]
EOF
case "$case_" in
  plain) module= ;;
  plugin) module=add-headers ;;
  raw-plugin) module=add-headers-raw ;;
  *) echo "unknown case $case_: plain, plugin or raw-plugin" >&2; exit 2 ;;
esac
if [ -n "$module" ]; then
  cat >> "$tmp/gw.yaml" <<EOF
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: add-headers, namespace: istio-system}
spec:
  url: file://$target/plugins/$module.wasm
EOF
fi

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/callgrind.out" \
  "$bin" run --config "$tmp/gw.yaml" --concurrency 1 --bind 127.0.0.1 \
  --admin-addr "127.0.0.1:$(port)" --readiness-addr "127.0.0.1:$(port)" \
  --stats-addr "127.0.0.1:$(port)" --wasm-cache "$tmp/wasm" >/dev/null 2>&1 &
vg=$!
pids+=($vg)
for _ in $(seq 300); do curl -s -o /dev/null "127.0.0.1:$gw/" && break; sleep 0.2; done

load() {
  if [ "$proto" = h2 ]; then
    h2load -n "$1" -c 16 -m 16 "http://127.0.0.1:$gw/"
  else
    h2load --h1 -n "$1" -c 16 "http://127.0.0.1:$gw/"
  fi | grep -E "status codes"
}
load 400 >/dev/null
callgrind_control -i on "$vg" >/dev/null
codes="$(load "$n")"
callgrind_control -i off "$vg" >/dev/null
kill -INT "$vg"
wait "$vg" 2>/dev/null || true
total="$(callgrind_annotate "$tmp/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}')"
[ -n "${CALLGRIND_OUT:-}" ] && cp "$tmp/callgrind.out" "$CALLGRIND_OUT"
echo "$proto $case_: $n requests ($codes): $total instructions, $((total / n)) per request"
