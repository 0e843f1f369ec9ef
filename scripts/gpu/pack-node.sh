#!/usr/bin/env bash
# Packs what scripts/gpu/gpu-check.sh needs on a machine without Node.js into .gpu-kit/:
#   node-<version>-linux-<arch>.tar.xz   this machine's Node (bin/node and the Node-API headers in
#                                        include/node), laid out like nodejs.org's archives. No npm:
#                                        the GPU machine reaches no registry, so npm has nothing to do there
#   node_modules.tar.xz                  the project's node_modules (cmake-js, node-addon-api, vitest, typescript, ...)
#   dist.tar.xz                          dist/ compiled here from lib/ (so the run spends no time on tsc)
#   torch-bert-<version>.tgz             the package as `npm pack` makes it, which gpu-check.sh installs
#                                        there with its prebuilt and the build tools hidden
#   gloo-include.tar.xz                  this machine's Gloo headers (Debian's libgloo-dev), when installed:
#                                        PyTorch's wheels ship none, and without them the addon builds
#                                        without Gloo, so without NCCL (gpu-check.sh's nccl step)
# Fails when the kit and the working tree that travels with it pass 60 MiB (the device tool
# carries 64 MiB in all). Carry `.gpu-kit` with the working tree (it is git-ignored).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
kit=${KIT_DIR:-$root/.gpu-kit}
limit_mib=${GPU_KIT_LIMIT_MIB:-60}
node=$(readlink -f "$(command -v node)")
prefix=$(dirname "$(dirname "$node")")
name="node-$(node -p process.version)-linux-$(node -p process.arch)"
# Staged inside the kit folder, not /tmp: the same disk as the archives (a rename, no copy) and
# nothing left behind in a shared /tmp when this is interrupted (the next run clears it).
stage=$kit/.stage
rm -rf "$stage"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/bin" "$stage/$name/include"
rm -f "$kit"/node-v*-linux-*.tar.xz "$kit"/torch-bert-*.tgz "$kit"/gloo-include.tar.xz
cp "$node" "$stage/$name/bin/node"
# Node-API and V8 headers for cmake-js (not the 50 MB of OpenSSL headers nobody here includes).
if [ -f "$prefix/include/node/node_api.h" ]; then
  tar -C "$prefix/include" --exclude=node/openssl -cf - node | tar -C "$stage/$name/include" -xf -
else
  echo "pack-node: warning: no $prefix/include/node/node_api.h; cmake-js will want to download headers" >&2
fi
export XZ_OPT="-6 -T0"
tar -C "$stage" -cJf "$stage/$name.tar.xz" "$name" && mv "$stage/$name.tar.xz" "$kit/$name.tar.xz"
tar -C "$root" --exclude=node_modules/.cache --exclude=node_modules/.vite -cJf "$stage/node_modules.tar.xz" node_modules \
  && mv "$stage/node_modules.tar.xz" "$kit/node_modules.tar.xz"
(cd "$root" && node node_modules/typescript/bin/tsc -p tsconfig.json)
tar -C "$root" -cJf "$stage/dist.tar.xz" dist && mv "$stage/dist.tar.xz" "$kit/dist.tar.xz"
if [ -f /usr/include/gloo/algorithm.h ]; then
  tar -C /usr/include -cJf "$stage/gloo-include.tar.xz" gloo && mv "$stage/gloo-include.tar.xz" "$kit/gloo-include.tar.xz"
fi
(cd "$root" && npm pack --ignore-scripts --silent --pack-destination "$stage" >/dev/null) && mv "$stage"/torch-bert-*.tgz "$kit/"
rm -rf "$stage"
du -h "$kit"/*
# What the device tool sends: tracked and untracked-not-ignored files, plus the carried kit.
tree=$(cd "$root" && git ls-files -co --exclude-standard -z | du --files0-from=- -cb | tail -n 1 | cut -f1)
carried=$(du -sb "$kit" | cut -f1)
total=$((tree + carried))
echo "pack-node: working tree $((tree >> 20)) MiB + .gpu-kit $((carried >> 20)) MiB = $((total >> 20)) MiB (limit ${limit_mib} MiB)"
if [ "$total" -gt $((limit_mib << 20)) ]; then
  echo "pack-node: FAILED: over ${limit_mib} MiB; the device tool carries 64 MiB at most" >&2
  exit 1
fi
echo "pack-node: carry $kit (run tool carry: [\".gpu-kit\"]), then: bash scripts/gpu/gpu-check.sh"
