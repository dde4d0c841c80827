#!/usr/bin/env bash
# Builds the test plugins (plugins/, a workspace of its own) for wasm32-wasip1 in release and
# copies each module to $CARGO_TARGET_DIR/plugins/<crate-name>.wasm, then prints that folder.
# Cargo decides what is stale, so a second run with nothing changed only copies.
set -euo pipefail
cd "$(dirname "$0")/../plugins"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshgate-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target=wasm32-wasip1

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target" >&2
fi

cargo build --release --locked --target "$target" --quiet >&2

out="$CARGO_TARGET_DIR/plugins"
mkdir -p "$out"
# Plugins are the crate folders whose crate is a cdylib (a library member, such as the SDK in
# ../sdk, builds no module); the artifact of crate a-b is a_b.wasm.
for manifest in */Cargo.toml; do
  name="$(dirname "$manifest")"
  grep -Eq '^crate-type *= *\[.*"cdylib"' "$manifest" || continue
  artifact="$CARGO_TARGET_DIR/$target/release/${name//-/_}.wasm"
  if [ ! -f "$artifact" ]; then
    echo "build-plugins: $artifact is missing" >&2
    exit 1
  fi
  # cp -p keeps the time stamp so an unchanged module looks unchanged to whoever watches it.
  cmp -s "$artifact" "$out/$name.wasm" || cp -p "$artifact" "$out/$name.wasm"
done
echo "$out"
