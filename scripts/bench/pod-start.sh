#!/usr/bin/env bash
# Pod start benchmark (request → running, → first exec output) beside raw
# runsc and libcontainer in the same run, plus idle pod memory. Run as root
# after scripts/test.sh has built the test images. BENCH_PODS=N (default 10).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --workspace
cargo bench -p pinacle --bench pod_start
