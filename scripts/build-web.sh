#!/usr/bin/env bash
# Builds the web app (web/) into web/dist, which the pinacle binary embeds
# (release builds carry it; debug builds read web/dist at run time).
# Needs Node 20.19 or later (Vite 7); scripts/setup.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/../web"
# (re)install when the lock file is newer than what is installed. The
# versions are the lock file's; `npm install --no-save` rather than
# `npm ci`, which npm 11 refuses when the lock lists only this platform's
# optional native packages (rollup's), as npm 11 itself writes it.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm install --no-save --no-audit --no-fund --loglevel=error
fi
npm run build --silent
