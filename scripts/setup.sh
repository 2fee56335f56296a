#!/usr/bin/env bash
# Prepares a Debian 12 machine for Pinacle and builds it.
#
#   scripts/setup.sh           runtime packages, release build, binaries in
#                              /usr/local/bin, images busybox and base
#   scripts/setup.sh --test    what the test suite needs (debug build happens
#                              in scripts/test.sh)
#
# Run as root. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-run}
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (sandboxes, mounts and cgroups need it)" >&2
  exit 1
fi

packages=(runsc runc busybox-static debootstrap nftables iproute2 e2fsprogs util-linux mount ca-certificates curl git build-essential pkg-config libseccomp-dev libelf-dev zlib1g-dev)
# The tests also run Let's Encrypt's test CA (pebble) on loopback, drive
# the web app in Debian's Chromium, and use OpenSSH's client (and its sshd
# as the SSH benchmark's reference).
packages+=(openssh-client)
if [ "${1:-run}" = "--test" ]; then
  packages+=(pebble chromium openssh-server)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Install, never start, packaged daemons (openssh-server's sshd on port
  # 22 above all): the benchmark starts its own sshd on loopback.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$made_policy" ]; then
    rm -f "$policy"
    trap - EXIT
  fi
fi

# Node builds the web app (Vite 7 needs Node 20.19+; Debian 12 has 18):
# NodeSource's Node 22 packages when the machine has no recent enough Node.
node_ok() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
    node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'
}
if ! node_ok; then
  echo "setup: installing Node 22 (NodeSource) for the web app's build"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq ca-certificates curl gnupg >/dev/null
  curl -fsSL https://deb.nodesource.com/setup_22.x | bash - >/dev/null
  apt-get install -y -qq nodejs >/dev/null
  node_ok || { echo "setup: Node 20.19 or later is needed to build the web app" >&2; exit 1; }
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain (rustup, minimal profile)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

if [ "$mode" = "--test" ]; then
  if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
  exit 0
fi

echo "setup: building the web app"
bash scripts/build-web.sh
echo "setup: building Pinacle (release)"
cargo build --release --workspace
bash scripts/build-supervisor.sh
install -m 0755 target/release/pinacle target/release/pinacle-youki /usr/local/bin/
install -m 0755 target/x86_64-unknown-linux-musl/release/pinacle-supervisor /usr/local/bin/
data_dir=${PINACLE_DATA_DIR:-/var/lib/pinacle}
pinacle image build busybox --data-dir "$data_dir"
pinacle image build base --data-dir "$data_dir"
echo "setup: done; start Pinacle with: pinacle up"
