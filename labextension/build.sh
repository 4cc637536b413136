#!/usr/bin/env bash
# Build the side panel into labextension/dist when its sources changed: npm ci, tsc,
# jupyter-builder. The wheel build (hatch_build.py) and scripts/setup both call this.
# Needs node, npm and jupyter-builder (pip install jupyter_builder) on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
for tool in node npm jupyter-builder; do
  command -v "$tool" >/dev/null || {
    echo "building the jupyter-exec side panel needs $tool on PATH (Node 20 with npm: apt-get install nodejs npm; jupyter-builder: pip install jupyter_builder)" >&2
    exit 1
  }
done
sources=$(cat package.json package-lock.json tsconfig.json .npmrc build.sh $(find src style -type f | LC_ALL=C sort) | sha256sum | cut -c1-16)
stamp="lib/.built-$sources"          # lib/ is tsc's output: never shipped, wiped by each build
if [ -f "$stamp" ] && [ -f dist/package.json ]; then
  exit 0
fi
echo "building the jupyter-exec side panel (labextension/)" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
rm -rf lib dist tsconfig.tsbuildinfo
npm run --silent build >&2
touch "$stamp"
