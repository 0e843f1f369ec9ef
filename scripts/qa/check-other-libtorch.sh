#!/usr/bin/env bash
# Builds the addon against another libtorch and runs the native and technique tests on it, in a
# throwaway clone (the working tree's build is left alone). Used to check the libtorch 2.x
# shims on a CPU machine:
#   bash scripts/qa/check-other-libtorch.sh /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
#   bash scripts/qa/check-other-libtorch.sh /path/to/libtorch        # an unpacked libtorch folder
# A wheel is unpacked to a temporary folder first (only its torch/lib, include and share).
# Expected differences: the test comparing versions with the system Python's torch fails when
# that Python has another version.
set -euo pipefail
src=${1:?usage: check-other-libtorch.sh WHEEL.whl|LIBTORCH_DIR}
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ "$src" == *.whl ]]; then
  echo "unpacking $src"
  unzip -q "$src" 'torch/lib/*' 'torch/include/*' 'torch/share/*' -d "$work/wheel"
  libtorch="$work/wheel/torch"
else
  libtorch=$(cd "$src" && pwd)
fi
git clone -q "$repo" "$work/repo"
ln -s "$repo/node_modules" "$work/repo/node_modules"
cd "$work/repo"
LIBTORCH="$libtorch" node scripts/build-native.mjs
npx tsc -p tsconfig.json
LIBTORCH="$libtorch" npx vitest run test/native.test.ts test/native-techniques.test.ts test/techniques.test.ts
