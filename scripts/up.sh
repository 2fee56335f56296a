#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs Pinacle in one process:
#   sudo bash scripts/up.sh [pinacle up options, e.g. --listen 0.0.0.0:7070]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec /usr/local/bin/pinacle up "$@"
