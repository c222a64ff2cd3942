#!/usr/bin/env bash
# Build the React UI into ui/dist (which the runtime embeds), skipping the work when the
# sources have not changed since the last build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/ui"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
stamp=node_modules/.facekey-ui-build-stamp
newest=$(find src public index.html package-lock.json vite.config.ts -newer "$stamp" -print -quit 2>/dev/null || echo rebuild)
if [ ! -f "$stamp" ] || [ ! -f dist/index.html ] || [ -n "$newest" ]; then
  npm run build --silent
  touch "$stamp"
fi
