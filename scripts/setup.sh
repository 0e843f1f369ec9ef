#!/usr/bin/env bash
# From a fresh Debian 12 / Ubuntu machine to a trained classifier, in one command:
#   1. system packages: Debian's libtorch (CPU), an optimised BLAS, Python PyTorch (it makes the
#      demo's small BERT and is the reference the parity tests compare against);
#   2. npm dependencies, the native addon build (npm's install script) and the TypeScript build;
#   3. the demo: the seed's frozen-BERT job on embedded data, with per-epoch loss and accuracy.
# Set TORCH_BERT_SKIP_DEMO=1 to stop after step 2.
set -euo pipefail
cd "$(dirname "$0")/.."

# Node.js first: the minimum is package.json's engines (the one place it is written), and an older
# Node (Debian 12's own nodejs package is 18) would only fail after the apt installs and the build.
need_node=$(sed -n 's/^ *"node": *">=\([0-9.]*\)".*/\1/p' package.json)
have_node=$(node --version 2>/dev/null | sed 's/^v//' || true)
if [ -z "$have_node" ] || [ "$(printf '%s\n%s\n' "$need_node" "$have_node" | sort -V | head -n 1)" != "$need_node" ]; then
  echo "setup: Node.js $need_node or later is needed, with npm (found ${have_node:-none}); install it (nodejs.org, NodeSource or nvm), then run this again" >&2
  exit 1
fi

# libjemalloc2: the leak test measures RSS with jemalloc (glibc malloc's arenas creep ~8% with no leak).
# clang-format: npm test checks native/'s formatting with it (scripts/qa/format-native.sh).
# libgloo-dev: Gloo's headers, which c10d's ProcessGroupGloo (data-parallel training on CPUs) needs.
packages=(libtorch-dev libopenblas0-pthread python3-torch libjemalloc2 clang-format libgloo-dev)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "setup: no apt-get here; provide libtorch yourself (LIBTORCH=/path/to/libtorch or a Python PyTorch) and run: npm ci" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Debian's reference BLAS makes BERT ~40x slower than OpenBLAS; make sure OpenBLAS is the one in use.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$blas" in
  *openblas*) echo "setup: BLAS is OpenBLAS ($blas)" ;;
  *) echo "setup: warning: the active BLAS is $blas, not OpenBLAS; run: update-alternatives --config libblas.so.3-x86_64-linux-gnu" >&2 ;;
esac

# npm ci installs the dependencies, then runs our install script (builds the addon against the
# libtorch found by scripts/find-libtorch.mjs) and prepare (compiles lib/ to dist/).
npm ci --no-audit --no-fund

if [ "${TORCH_BERT_SKIP_DEMO:-0}" != "1" ]; then
  npm run demo
fi
