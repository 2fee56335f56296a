#!/usr/bin/env bash
# Builds the in-pod supervisor as a static executable (musl), so that it runs
# in any pod image; the host agent finds it in
# target/x86_64-unknown-linux-musl/release/ (or set PINACLE_SUPERVISOR).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
target=x86_64-unknown-linux-musl
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$target"; then
  echo "build-supervisor: adding the Rust target $target"
  rustup target add "$target"
fi
cargo build --release -p pinacle-supervisor --bin pinacle-supervisor --target "$target"
echo "target/$target/release/pinacle-supervisor"
