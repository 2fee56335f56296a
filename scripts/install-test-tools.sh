#!/usr/bin/env bash
# Installs what the tests drive Pinacle with besides Rust crates, from
# package registries only:
#
#   mcp 2.3.0 (PyPI)   the official MCP Python SDK; cli/tests/memory.rs
#                      uses it as the client of the memory service's MCP
#                      server (Streamable HTTP and stdio). Installed with
#                      `pip --target` into /opt/pinacle-test-tools/python
#                      (outside the system's site-packages, which Debian 12
#                      marks externally managed); tests put it on PYTHONPATH.
#
# Run as root (scripts/setup.sh --test does). Safe to run again.
set -euo pipefail

MCP_VERSION=2.3.0
PY_DIR=${PINACLE_TEST_TOOLS_PY:-/opt/pinacle-test-tools/python}

say() { echo "install-test-tools: $*"; }

if PYTHONPATH="$PY_DIR" python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$MCP_VERSION')" 2>/dev/null; then
  say "mcp $MCP_VERSION already in $PY_DIR"
else
  python3 -m pip --version >/dev/null 2>&1 || { say "python3 with pip is needed (apt-get install python3-pip)" >&2; exit 1; }
  say "installing mcp $MCP_VERSION (PyPI) into $PY_DIR"
  rm -rf "$PY_DIR"
  mkdir -p "$PY_DIR"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$PY_DIR" "mcp==$MCP_VERSION"
fi
