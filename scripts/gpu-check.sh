#!/usr/bin/env bash
# The CUDA checks, on a GPU machine that has Python PyTorch 2.x (a CUDA wheel: libtorch and its
# CMake package inside) but no Node.js. Finishes within 8 minutes; everything goes to $OUT.
#
# Prepare on a machine with Node and this project installed (npm ci):
#   bash scripts/pack-node.sh   # -> .gpu-kit/node-v20.*-linux-x64.tar.xz and .gpu-kit/node_modules.tar.xz (~40 MB)
# carry .gpu-kit (git-ignored) with the working tree, then on the GPU machine:
#   OUT=/tmp/out bash scripts/gpu-check.sh
# NODE_ARCHIVE: the Node archive (default: node-v20*-linux-x64.tar.xz next to this script, else in
#   .gpu-kit/; an official nodejs.org linux-x64 archive works too).
# NODE_MODULES_ARCHIVE: unpacked when node_modules/ is missing (default .gpu-kit/node_modules.tar.xz).
# PYTHON: the Python with torch (default: the first of python3, python, /usr/bin/python3 that imports it).
#
#   1. machine: GPU, driver, PyTorch, build tools              -> machine.txt
#   2. build the addon against that PyTorch's libtorch: cmake-js (scripts/build-native.mjs); when CMake
#      is missing or cannot configure (a CUDA wheel's CMake package wants the CUDA toolkit), compile
#      native/*.cc directly with the C++ compiler                -> build.log
#   3. torch-bert doctor                                         -> doctor.txt, doctor.json
#   4. CUDA tests: vitest run test/cuda.test.ts test/doctor.test.ts -> vitest.log
#   5. token pruning on a traced transformers BertModel (scripts/hf-pruning-check.mjs) -> hf-pruning.txt, .json
#   6. benchmark (scripts/gpu-bench.mjs: full / lora / frozen x seq 128, 256 x fp32, bf16)
#                                                                -> gpu-bench.md, gpu-bench.json
# summary.txt lists each step's status; the exit code is 0 when every step passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
OUT=${OUT:-$root/gpu-check-out}
mkdir -p "$OUT"
cd "$root"
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
deadline=$((SECONDS + ${GPU_CHECK_BUDGET_S:-450}))
status=0
note() { echo "$1: $2" >> "$OUT/summary.txt"; echo "== $1: $2"; case "$2" in ok* | skipped*) ;; *) status=1 ;; esac; }
# Seconds for a step: at most $1, leaving $2 for the steps after it.
limit() { local l=$((deadline - SECONDS - $2)); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 10 ] && l=10; echo "$l"; }
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
nodedir=
trap 'rm -rf "$work"' EXIT
: > "$OUT/summary.txt"

# ---- Python with torch ----
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for p in python3 python /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then PY=$(command -v "$p"); break; fi
  done
fi
[ -n "$PY" ] || { note python "FAILED: no Python that imports torch (set PYTHON)"; exit 1; }
# find-libtorch asks `python3` on PATH first: make it this one (a wrapper, not a symlink, so a venv stays a venv).
mkdir -p "$work/pybin" && printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" > "$work/pybin/python3" && chmod +x "$work/pybin/python3"
export PATH="$work/pybin:$PATH"

untar() { # ARCHIVE DEST: tar with xz, else Python's tarfile
  if tar --version >/dev/null 2>&1 && command -v xz >/dev/null; then tar -xJf "$1" -C "$2"
  else "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"; fi
}

# ---- Node ----
archive=${NODE_ARCHIVE:-}
if [ -z "$archive" ]; then
  for f in "$here"/node-v20*-linux-x64.tar.xz "$root"/.gpu-kit/node-v20*-linux-x64.tar.xz; do [ -f "$f" ] && { archive=$f; break; }; done
fi
if [ -n "$archive" ] && [ -f "$archive" ]; then
  untar "$archive" "$work" || { note node "FAILED: cannot unpack $archive"; exit 1; }
  nodedir=$(dirname "$(dirname "$(ls "$work"/node-v*/bin/node | head -1)")")
  export PATH="$nodedir/bin:$PATH"
  [ -f "$nodedir/include/node/node_api.h" ] && export npm_config_nodedir="$nodedir"
elif ! command -v node >/dev/null; then
  note node "FAILED: no Node archive (run scripts/pack-node.sh where Node is and carry .gpu-kit, or set NODE_ARCHIVE)"; exit 1
fi
if [ ! -f node_modules/cmake-js/package.json ]; then
  nm=${NODE_MODULES_ARCHIVE:-$root/.gpu-kit/node_modules.tar.xz}
  [ -f "$nm" ] && untar "$nm" "$root" || { note node_modules "FAILED: no node_modules/ and no $nm"; exit 1; }
fi
note node "ok ($(node --version), $(command -v node))"

# ---- 1. machine ----
for m in cmake ninja; do # the pip packages of the build tools, when those are what is installed
  command -v "$m" >/dev/null || { d=$("$PY" -c "import $m, os; print(getattr($m, 'CMAKE_BIN_DIR', None) or getattr($m, 'BIN_DIR'))" 2>/dev/null) && export PATH="$PATH:$d"; }
done
{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cores: $(nproc)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1 || echo "nvidia-smi: none"
  "$PY" -c 'import torch; print("python", __import__("sys").version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())'
  for t in c++ g++ clang++ cmake make ninja nvcc; do printf '%-8s %s\n' "$t" "$(command -v $t || echo -)"; done
  node scripts/find-libtorch.mjs
} 2>&1 | tee "$OUT/machine.txt"

# ---- 2. build ----
rm -rf build
if timeout "$(limit 240 200)" node scripts/build-native.mjs > "$OUT/build.log" 2>&1; then
  note build "ok (cmake-js)"
else
  echo "cmake-js build failed (tail of build.log below); compiling directly" | tee -a "$OUT/build.log"
  tail -n 15 "$OUT/build.log"
  CXX_BIN=${CXX:-$(command -v c++ || command -v g++ || command -v clang++)}
  torch_dir=$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
  abi=$("$PY" -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))')
  napi=$(node -p "require('path').resolve(require('node-addon-api').include_dir)")
  # The compile definitions of CMakeLists.txt (NAPI_VERSION=..., NODE_ADDON_API_...).
  defs=$(sed -n '/target_compile_definitions/,/)/p' CMakeLists.txt | grep -oE '^[[:space:]]+[A-Z][A-Z0-9_]*(=[^[:space:])]+)?' | sed 's/^[[:space:]]*/-D/' | tr '\n' ' ')
  cuda_libs=""
  ls "$torch_dir"/lib/libtorch_cuda.so >/dev/null 2>&1 && cuda_libs="-Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed"
  export CXX_BIN FLAGS="-O2 -std=c++17 -fPIC -fvisibility=hidden -D_GLIBCXX_USE_CXX11_ABI=$abi $defs -DBUILDING_NODE_EXTENSION \
    -I${npm_config_nodedir:-$nodedir}/include/node -I$napi -isystem $torch_dir/include -isystem $torch_dir/include/torch/csrc/api/include"
  mkdir -p build/direct build/Release
  if [ -z "$CXX_BIN" ]; then
    note build "FAILED: no C++ compiler (c++, g++ or clang++) on this machine"
  elif (echo "flags: $FLAGS"; ls native/*.cc | timeout "$(limit 240 150)" xargs -P "$(nproc)" -I{} sh -c '$CXX_BIN $FLAGS -c {} -o build/direct/$(basename {} .cc).o && echo "compiled {}"' \
        && "$CXX_BIN" -shared -o build/Release/torch_bert.node build/direct/*.o -L"$torch_dir/lib" -Wl,-rpath,"$torch_dir/lib" $cuda_libs -ltorch -ltorch_cpu -lc10 \
        && node scripts/build-native.mjs --record-only) >> "$OUT/build.log" 2>&1; then
    note build "ok (direct compile; cmake-js failed, see build.log)"
  else
    tail -n 30 "$OUT/build.log"; note build "FAILED (see build.log)"
  fi
fi
[ -f build/Release/build-info.json ] && cp build/Release/build-info.json "$OUT/"
timeout "$(limit 90 180)" node node_modules/typescript/bin/tsc -p tsconfig.json > "$OUT/tsc.log" 2>&1 || echo "tsc reported errors (see tsc.log); dist/ is emitted anyway"

# ---- 3. doctor ----
timeout "$(limit 45 150)" node dist/cli.js doctor --json > "$OUT/doctor.json" 2>> "$OUT/doctor.txt"
if timeout "$(limit 45 150)" node dist/cli.js doctor 2>&1 | tee -a "$OUT/doctor.txt"; then note doctor ok; else note doctor "FAILED (see doctor.txt)"; fi

# ---- 4. CUDA tests ----
if timeout "$(limit 150 130)" node node_modules/vitest/vitest.mjs run test/cuda.test.ts test/doctor.test.ts > "$OUT/vitest.log" 2>&1; then
  note tests "ok ($(grep -E '^ +Tests ' "$OUT/vitest.log" | tr -s ' '))"
else
  note tests "FAILED (see vitest.log)"
fi
tail -n 25 "$OUT/vitest.log"

# ---- 5. token pruning on a traced Hugging Face BertModel (transformers is on these machines) ----
if timeout "$(limit 60 200)" node scripts/hf-pruning-check.mjs --python "$PY" --out "$OUT" > "$OUT/hf-pruning.txt" 2>&1; then
  if grep -q skipped "$OUT/hf-pruning.txt"; then note hf-pruning "skipped: no transformers"
  else note hf-pruning "ok ($(grep -c ': ok' "$OUT/hf-pruning.txt") attention variant(s) equal pruned and unpruned)"; fi
else
  note hf-pruning "FAILED (see hf-pruning.txt)"
fi
cat "$OUT/hf-pruning.txt"

# ---- 6. benchmark ----
if [ "$(node -e "import('./dist/loader.js').then(m => console.log(m.loadBinding().cudaIsAvailable()))" 2>/dev/null)" = true ]; then
  if timeout "$(limit 200 5)" node scripts/gpu-bench.mjs --python "$PY" --out "$OUT" 2> "$OUT/gpu-bench.log"; then note bench ok; else tail -n 20 "$OUT/gpu-bench.log"; note bench "FAILED (see gpu-bench.log)"; fi
else
  note bench "skipped: libtorch sees no CUDA device"
fi
echo "---- summary ($SECONDS s) ----"
cat "$OUT/summary.txt"
exit $status
