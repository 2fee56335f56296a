#!/usr/bin/env bash
# GitHub App benchmark (issue 20): the webhook endpoint's answer latency
# and throughput over BENCH_DELIVERIES (default 1000) signed deliveries,
# and webhook → pull-request pod running over BENCH_PRS (default 10) pull
# requests, beside a plain POST /pods of the same repository. Uses the
# tests' fake GitHub and a real git http-backend. Run as root after
# scripts/test.sh has built the test images.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PINACLE_TEST_IMAGES=${PINACLE_TEST_IMAGES:-/var/tmp/pinacle-test/images}
bash scripts/build-supervisor.sh
cargo build --release --workspace
cargo bench -p pinacle --bench github
