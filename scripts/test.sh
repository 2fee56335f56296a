#!/usr/bin/env bash
# The test suite, as CI runs it: installs what the tests need, builds the
# workspace, prepares the cached test images, runs every test with nextest.
# Run as root (pods are real gVisor and libcontainer sandboxes).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
# One clean build: incremental state would only take disk (3.4 GB here)
export CARGO_INCREMENTAL=0
echo "disk before the build: $(df -h --output=avail . | tail -1) free"

# The web app first: the server serves web/dist (embedded in release builds).
bash scripts/build-web.sh
# the optional built-in embedding model too (feature minilm), and the AI
# router's WASM modules and gRPC API, so their tests run; the same features
# for the build and the run (nothing rebuilt)
features=(--features pinacle-memory-service/minilm,pinacle-aion/wasm,pinacle-aion/grpc)
cargo build --workspace --all-targets "${features[@]}"
# The in-pod supervisor, static (musl), which every test pod starts under.
bash scripts/build-supervisor.sh

# Images the sandbox tests start pods from, built once and cached.
export PINACLE_TEST_IMAGES=${PINACLE_TEST_IMAGES:-/var/tmp/pinacle-test/images}
cache_root=$(dirname "$PINACLE_TEST_IMAGES")
target/debug/pinacle image build busybox --data-dir "$cache_root"
target/debug/pinacle image build base --data-dir "$cache_root"
# every template's image (the dev-tools test starts a pod of each; the
# npm-based ones carry their npm cache) and one with the Debian services
# (postgres, redis), so those pods start without the network; each is
# rebuilt only when its recipe, or an image it starts FROM, changes
for image in node vite nextjs python rust vscode; do
  target/debug/pinacle image build "$image" --data-dir "$cache_root"
done
target/debug/pinacle image build services --recipe cli/tests/images/services.Dockerfile --data-dir "$cache_root"
# The images are copies of their FROM image plus their own steps: a file
# at the same path in two images, identical in content and metadata,
# becomes one (hard links across images only), which halves the cache.
python3 scripts/dedup-images.py "$PINACLE_TEST_IMAGES" || echo "test.sh: the image cache was left as it is"
echo "disk before the tests: $(df -h --output=avail . | tail -1) free"

status=0
cargo nextest run --workspace --no-fail-fast "${features[@]}" || status=$?

# The Helm chart: rendered for each values file in infra/helm/pinacle/ci,
# compared with its golden file, validated strictly against Kubernetes'
# schemas (offline) and checked for its invariants.
bash scripts/check-chart.sh || status=$?

# The web app: component tests (Vitest), then end to end in Chromium
# against a real `pinacle up` with real pods (screenshots in
# web/test-results/e2e).
(cd web && npx vitest run) || status=$?
node --test --test-concurrency=1 web/e2e/ || status=$?
exit $status
