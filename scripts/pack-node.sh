#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a machine without Node.js into .gpu-kit/:
#   node-<version>-linux-<arch>.tar.xz   this machine's Node (bin/node, npm, npx, the Node-API
#                                        headers in include/node), laid out like nodejs.org's archives
#   node_modules.tar.xz                  the project's node_modules (cmake-js, node-addon-api, vitest, typescript, ...)
# About 40 MB in all: carry `.gpu-kit` with the working tree (it is git-ignored).
# An official archive from https://nodejs.org/dist/ works as NODE_ARCHIVE too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kit=${KIT_DIR:-$root/.gpu-kit}
node=$(readlink -f "$(command -v node)")
prefix=$(dirname "$(dirname "$node")")
name="node-$(node -p process.version)-linux-$(node -p process.arch)"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$kit" "$stage/$name/bin" "$stage/$name/include" "$stage/$name/lib/node_modules"
cp "$node" "$stage/$name/bin/node"
# Node-API and V8 headers for cmake-js (not the 50 MB of OpenSSL headers nobody here includes).
if [ -f "$prefix/include/node/node_api.h" ]; then
  tar -C "$prefix/include" --exclude=node/openssl -cf - node | tar -C "$stage/$name/include" -xf -
else
  echo "pack-node: warning: no $prefix/include/node/node_api.h; cmake-js will want to download headers" >&2
fi
if [ -d "$prefix/lib/node_modules/npm" ]; then
  cp -r "$prefix/lib/node_modules/npm" "$stage/$name/lib/node_modules/"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/$name/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/$name/bin/npx"
fi
export XZ_OPT="-6 -T0"
tar -C "$stage" -cJf "$kit/$name.tar.xz.tmp" "$name" && mv "$kit/$name.tar.xz.tmp" "$kit/$name.tar.xz"
tar -C "$root" --exclude=node_modules/.cache --exclude=node_modules/.vite -cJf "$kit/node_modules.tar.xz.tmp" node_modules \
  && mv "$kit/node_modules.tar.xz.tmp" "$kit/node_modules.tar.xz"
du -h "$kit"/*.tar.xz
echo "pack-node: carry $kit (e.g. run tool carry: [\".gpu-kit\"]), then: bash scripts/gpu-check.sh"
