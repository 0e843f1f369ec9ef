#!/usr/bin/env bash
# The CUDA checks, on a GPU machine that has Python PyTorch 2.x (a CUDA wheel: libtorch and its
# CMake package inside) but no Node.js.
#
# Prepare on a machine with Node and this project installed (npm ci):
#   bash scripts/gpu/pack-node.sh   # -> .gpu-kit/: Node, node_modules, dist/, the npm pack tarball (under 60 MiB with the tree)
# carry .gpu-kit (git-ignored) with the working tree, then on the GPU machine:
#   OUT=/tmp/out bash scripts/gpu/gpu-check.sh
# NODE_ARCHIVE: the Node archive (default: node-v20*-linux-x64.tar.xz next to this script, else in
#   .gpu-kit/; an official nodejs.org linux-x64 archive works too).
# NODE_MODULES_ARCHIVE: unpacked when node_modules/ is missing (default .gpu-kit/node_modules.tar.xz).
# PYTHON: the Python with torch (default: the first of python3, python, /usr/bin/python3 that imports it).
# GPU_CHECK_BUDGET_S: the time guard (default 420): no step starts, and none runs on, past it.
# GPU_CHECK_BUILD_S: the most seconds the cmake-js build may take (default 240: 16 cores), then
#   the direct compile is tried; GPU_CHECK_BUILD=direct goes straight to the direct compile.
# GPU_CHECK_STEPS: the steps to run (default all, in this order: the most wanted first, so that
#   the time guard cuts the least wanted):
#   build     the addon against that PyTorch's libtorch (Gloo's headers from .gpu-kit where the
#             machine has none): cmake-js with libtorch set up by hand
#             (TORCH_BERT_MANUAL_TORCH=ON: the addon includes no CUDA header, and PyTorch's CUDA
#             CMake logic would probe the installed toolkit for nothing); when that fails, the
#             compiler directly                                    -> build.log, build-info.json
#   tests     vitest run test/cuda.test.ts test/doctor.test.ts     -> vitest.log
#   nccl      data-parallel on CUDA (test/nccl.test.ts; the build lists 'nccl' where it was built
#             against a CUDA libtorch 2.x with NCCL's headers): a world of one over NCCL, then
#             2 ranks (a GPU each over NCCL where there are 2, one GPU shared over Gloo where
#             there is one: NCCL refuses two ranks on one GPU) against one process with the
#             global batch; doctor's backends and the max weight difference -> nccl.log
#   bench     scripts/gpu/gpu-bench.mjs, the rows in $GPU_BENCH_ROWS   -> gpu-bench.md, gpu-bench.json, gpu-bench.log
#   doctor    torch-bert doctor                                    -> doctor.txt, doctor.json
#   prebuild  npm run prebuild's prebuilt, then .gpu-kit's npm pack tarball installed in a scratch
#             app with it, the build tools hidden, and loaded       -> prebuild.log, $OUT/prebuilt.tar.gz
#   pruning   token pruning on a traced transformers BertModel (scripts/gpu/hf-pruning-check.mjs) -> hf-pruning.txt, .json
#   export    exportHuggingFace's folder loaded by transformers' AutoModel/AutoTokenizer and its LoRA
#             adapter by PEFT's PeftModel, against the classifiers' own features; a classifier with
#             head 'sequence-classification' by AutoModelForSequenceClassification, against its
#             probabilities (scripts/gpu/hf-export-check.mjs)
#                                                                  -> hf-export.txt, .json
#   (machine: GPU, driver, PyTorch, build tools, missing CUDA libraries -> machine.txt, always.)
#
# What comes back: the device tool returns at most 8 files from $OUT (16 MiB each, 2 folders
# deep), so every log is staged elsewhere and $OUT holds only: gpu-check.tar.gz (every log,
# re-packed after each step, so a run killed mid-step keeps the steps before), summary.txt,
# gpu-bench.md (when measured) and prebuilt.tar.gz (when built). check_out fails the run when
# $OUT breaks those limits. The exit code is 0 when every step run passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
OUT=${OUT:-$root/gpu-check-out}
mkdir -p "$OUT"
cd "$root"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
logs=$work/logs
mkdir -p "$logs"
exec > >(tee -a "$logs/gpu-check.log") 2>&1
start=$SECONDS
deadline=$((SECONDS + ${GPU_CHECK_BUDGET_S:-420}))
steps=" ${GPU_CHECK_STEPS:-build tests nccl bench doctor prebuild pruning export} "
status=0
nodedir=
trap 'rm -rf "$work"' EXIT
: > "$logs/summary.txt"

note() { echo "$1: $2 [$((SECONDS - start)) s]" >> "$logs/summary.txt"; echo "== $1: $2"; case "$2" in ok* | skipped*) ;; *) status=1 ;; esac; }

# The device tool's limits on what comes back from $OUT.
check_out() {
  local files bad
  files=$(find "$OUT" -type f | wc -l)
  # Too big, too deep ($OUT/a/b/file comes back, $OUT/a/b/c/file does not), not a plain file, odd name.
  bad=$( (find "$OUT" -mindepth 1 \( -type f -size +16M -o ! -type f ! -type d -o -name '*[!A-Za-z0-9._-]*' \); find "$OUT" -mindepth 4) | head -n 5 | tr '\n' ' ')
  if [ "$files" -gt 8 ] || [ -n "$bad" ] || [ "$(du -sb "$OUT" | cut -f1)" -gt $((64 << 20)) ]; then
    # Once in the summary (publish runs after every step), and into $OUT's copy of it too.
    [ -n "${out_failed:-}" ] || note out "FAILED: \$OUT breaks the device tool's limits (8 files, 16 MiB each, 64 MiB, 2 folders deep, plain names): $files files; $bad"
    out_failed=1 status=1
    cp "$logs/summary.txt" "$OUT/summary.txt"
    return 1
  fi
}

# After every step: the logs into $OUT/gpu-check.tar.gz (written beside, then renamed over the
# old one: a run killed while packing still leaves the previous archive), the summary and table.
publish() {
  tar -C "$logs" -czf "$work/pack.tgz" --warning=no-file-changed . 2>/dev/null
  [ $? -le 1 ] && mv -f "$work/pack.tgz" "$OUT/gpu-check.tar.gz"
  cp "$logs/summary.txt" "$OUT/summary.txt"
  [ -f "$logs/gpu-bench.md" ] && cp "$logs/gpu-bench.md" "$OUT/gpu-bench.md"
  check_out
}

# Seconds left before the time guard.
left() { echo $((deadline - SECONDS)); }
# step NAME MIN_S: whether to run step NAME (selected, and at least MIN_S seconds left).
step() {
  case "$steps" in *" $1 "*) ;; *) return 1 ;; esac
  if [ "$(left)" -lt "$2" ]; then note "$1" "skipped: time guard ($(left) s left of ${GPU_CHECK_BUDGET_S:-420}, the step needs $2)"; publish; return 1; fi
  echo "---- $1 ($((SECONDS - start)) s, $(left) s left) ----"
}
# A step's timeout: at most $1 seconds, never past the time guard.
limit() { local l; l=$(left); [ "$l" -gt "$1" ] && l=$1; echo "$l"; }

# ---- Python with torch ----
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for p in python3 python /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then PY=$(command -v "$p"); break; fi
  done
fi
[ -n "$PY" ] || { note python "FAILED: no Python that imports torch (set PYTHON)"; publish; exit 1; }
# find-libtorch asks `python3` on PATH first: make it this one (a wrapper, not a symlink, so a venv stays a venv).
mkdir -p "$work/pybin" && printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" > "$work/pybin/python3" && chmod +x "$work/pybin/python3"
export PATH="$work/pybin:$PATH"

untar() { # ARCHIVE DEST: tar with xz, else Python's tarfile
  if tar --version >/dev/null 2>&1 && command -v xz >/dev/null; then tar -xJf "$1" -C "$2"
  else "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"; fi
}

# ---- Node, node_modules, dist/ ----
archive=${NODE_ARCHIVE:-}
if [ -z "$archive" ]; then
  for f in "$here"/node-v20*-linux-x64.tar.xz "$root"/.gpu-kit/node-v20*-linux-x64.tar.xz; do [ -f "$f" ] && { archive=$f; break; }; done
fi
if [ -n "$archive" ] && [ -f "$archive" ]; then
  untar "$archive" "$work" || { note node "FAILED: cannot unpack $archive"; publish; exit 1; }
  nodedir=$(dirname "$(dirname "$(ls "$work"/node-v*/bin/node | head -1)")")
  export PATH="$nodedir/bin:$PATH"
  [ -f "$nodedir/include/node/node_api.h" ] && export npm_config_nodedir="$nodedir"
elif ! command -v node >/dev/null; then
  note node "FAILED: no Node archive (run scripts/gpu/pack-node.sh where Node is and carry .gpu-kit, or set NODE_ARCHIVE)"; publish; exit 1
fi
if [ ! -f node_modules/cmake-js/package.json ]; then
  nm=${NODE_MODULES_ARCHIVE:-$root/.gpu-kit/node_modules.tar.xz}
  [ -f "$nm" ] && untar "$nm" "$root" || { note node_modules "FAILED: no node_modules/ and no $nm"; publish; exit 1; }
fi
# dist/ (git-ignored, so not sent) as compiled where Node is (pack-node.sh); tsc only when the kit has none.
if [ ! -f dist/cli.js ] && [ -f .gpu-kit/dist.tar.xz ]; then
  untar .gpu-kit/dist.tar.xz "$root"
elif [ ! -f dist/cli.js ]; then
  timeout "$(limit 90)" node node_modules/typescript/bin/tsc -p tsconfig.json > "$logs/tsc.log" 2>&1 || echo "tsc reported errors (see tsc.log)"
fi
note node "ok ($(node --version), $(command -v node); dist/ $([ -f dist/cli.js ] && echo present || echo MISSING))"

# ---- machine, and the CUDA libraries Python finds for itself ----
for m in cmake ninja; do # the pip packages of the build tools, when those are what is installed
  command -v "$m" >/dev/null || { d=$("$PY" -c "import $m, os; print(getattr($m, 'CMAKE_BIN_DIR', None) or getattr($m, 'BIN_DIR'))" 2>/dev/null) && export PATH="$PATH:$d"; }
done
# One Python start (torch's import takes seconds): the torch version line, its lib folder, and
# the folders of the CUDA libraries of the nvidia-* wheels (site-packages/nvidia/*/lib,
# nvidia/cu13/lib), which Python PyTorch preloads before libtorch_cuda. Node has no such
# fallback, so those folders go on the library path of every process started from here.
pyinfo=$("$PY" - <<'PYEOF' 2>"$logs/python-info.err"
import glob, os, sys
import torch
print("info: python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())
print("lib:", os.path.join(os.path.dirname(torch.__file__), "lib"))
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
print("nvidia:", ":".join(sorted({os.path.dirname(f) for r in roots for f in glob.glob(os.path.join(r, "**", "lib", "*.so*"), recursive=True)})))
PYEOF
)
[ -s "$logs/python-info.err" ] || rm -f "$logs/python-info.err"
# Prefixed lines: a library may print to stdout on import too.
torch_lib=$(sed -n 's/^lib: //p' <<< "$pyinfo")
nvlibs=$(sed -n 's/^nvidia: //p' <<< "$pyinfo")
[ -n "$nvlibs" ] && export LD_LIBRARY_PATH="$nvlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cores: $(nproc)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
  sed -n 's/^info: //p' <<< "$pyinfo"
  for t in c++ g++ clang++ cmake make ninja nvcc; do printf '%-8s %s\n' "$t" "$(command -v $t || echo -)"; done
  echo "nvidia library folders put on LD_LIBRARY_PATH: ${nvlibs:-none}"
  if [ -f "$torch_lib/libtorch_cuda.so" ]; then
    echo "ldd libtorch_cuda.so, not found without those folders: $(env -u LD_LIBRARY_PATH ldd "$torch_lib/libtorch_cuda.so" | grep -c 'not found')"
    env -u LD_LIBRARY_PATH ldd "$torch_lib/libtorch_cuda.so" | grep 'not found'
    echo "ldd libtorch_cuda.so, not found with them: $(ldd "$torch_lib/libtorch_cuda.so" | grep -c 'not found')"
    ldd "$torch_lib/libtorch_cuda.so" | grep 'not found'
  else
    echo "no libtorch_cuda.so in ${torch_lib:-(no torch)}"
  fi
  node scripts/find-libtorch.mjs
} > "$logs/machine.txt" 2>&1
cat "$logs/machine.txt"
publish

cuda_seen() { [ "$(node -e "import('./dist/addon/loader.js').then(m => console.log(m.loadBinding().cudaIsAvailable()))" 2>/dev/null)" = true ]; }

# ---- build ----
if step build 60; then
  rm -rf build
  # Gloo's headers, which PyTorch's wheels lack (without them no Gloo, hence no NCCL): the kit's
  # (pack-node.sh: Debian's libgloo-dev, not the Gloo commit libtorch was built with) where the
  # machine has none; CMake's find_path reads CMAKE_INCLUDE_PATH.
  if [ ! -f /usr/include/gloo/algorithm.h ] && [ ! -f "$(dirname "$torch_lib")/include/gloo/algorithm.h" ] && [ -f .gpu-kit/gloo-include.tar.xz ]; then
    mkdir -p "$work/gloo-include" && untar .gpu-kit/gloo-include.tar.xz "$work/gloo-include" \
      && export CMAKE_INCLUDE_PATH="$work/gloo-include${CMAKE_INCLUDE_PATH:+:$CMAKE_INCLUDE_PATH}" \
      && echo "Gloo headers: .gpu-kit/gloo-include.tar.xz (Debian's libgloo-dev)" | tee -a "$logs/build.log"
  fi
  if [ "${GPU_CHECK_BUILD:-cmake}" = cmake ] && timeout "$(limit "${GPU_CHECK_BUILD_S:-240}")" node scripts/build-native.mjs --CDTORCH_BERT_MANUAL_TORCH=ON > "$logs/build.log" 2>&1; then
    note build "ok (cmake-js, libtorch set up by hand)"
  else
    echo "cmake-js build failed or not asked for (GPU_CHECK_BUILD=${GPU_CHECK_BUILD:-cmake}); compiling directly" | tee -a "$logs/build.log"
    tail -n 15 "$logs/build.log"
    CXX_BIN=${CXX:-$(command -v c++ || command -v g++ || command -v clang++)}
    torch_dir=$(dirname "$torch_lib")
    abi=$("$PY" -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))')
    napi=$(node -p "require('path').resolve(require('node-addon-api').include_dir)")
    # The compile definitions of CMakeLists.txt's target_compile_definitions block (NAPI_VERSION=...,
    # NODE_ADDON_API_...), and the ones it sets as a property for buildInfo() (diagnostics.cc).
    defs=$(sed -n '/target_compile_definitions/,/)/p' CMakeLists.txt | grep -oE '^[[:space:]]+[A-Z][A-Z0-9_]*(=[^[:space:])]+)?' | sed 's/^[[:space:]]*/-D/' | tr '\n' ' ')
    # libtorch set up by hand (no TorchConfig), as buildInfo's torchFrom 'manual' says.
    defs="$defs -DTORCH_BERT_TORCH_FROM=\"manual\""
    torch_libs="-ltorch -ltorch_cpu -lc10"
    if [ -f "$torch_lib/libtorch_cuda.so" ]; then
      torch_libs="-ltorch_cuda -lc10_cuda $torch_libs"
      defs="$defs -DTORCH_BERT_TORCH_CUDA_LINKED=1 -DTORCH_BERT_CUDA_VERSION=\"$("$PY" -c 'import torch; print(torch.version.cuda)')\""
    else
      defs="$defs -DTORCH_BERT_TORCH_CUDA_LINKED=0"
    fi
    export CXX_BIN FLAGS="-O2 -std=c++17 -fPIC -fvisibility=hidden -D_GLIBCXX_USE_CXX11_ABI=$abi $defs -DBUILDING_NODE_EXTENSION \
      -Inative -I${npm_config_nodedir:-$nodedir}/include/node -I$napi -isystem $torch_dir/include -isystem $torch_dir/include/torch/csrc/api/include"
    mkdir -p build/direct build/Release
    # fused_adamw.cc: CMakeLists.txt's -O3 -fno-math-errno, so that the benchmark compares the same code.
    # Every libtorch library --no-as-needed: the addon references none of libtorch.so's or
    # libtorch_cuda.so's symbols, and an --as-needed linker (Ubuntu's default) would drop them.
    if [ -z "$CXX_BIN" ]; then
      note build "FAILED: no C++ compiler (c++, g++ or clang++) on this machine"
    elif (echo "flags: $FLAGS"; find native -name '*.cc' | sort | timeout "$(limit 240)" xargs -P "$(nproc)" -I{} sh -c 'case {} in *fused_adamw.cc) x="-O3 -fno-math-errno" ;; *) x= ;; esac; $CXX_BIN $FLAGS $x -c {} -o build/direct/$(echo {} | sed "s|^native/||; s|/|_|g; s|\\.cc$||").o && echo "compiled {}"' \
          && "$CXX_BIN" -shared -o build/Release/torch_bert.node build/direct/*.o -L"$torch_lib" -Wl,-rpath,"$torch_lib" -Wl,--no-as-needed $torch_libs -Wl,--as-needed \
          && node scripts/build-native.mjs --record-only) >> "$logs/build.log" 2>&1; then
      note build "ok (direct compile; see build.log)"
    else
      tail -n 30 "$logs/build.log"; note build "FAILED (see build.log)"
    fi
  fi
  [ -f build/Release/build-info.json ] && cp build/Release/build-info.json "$logs/"
  publish
fi

# ---- tests ----
if step tests 40; then
  if timeout "$(limit 150)" node node_modules/vitest/vitest.mjs run test/cuda.test.ts test/doctor.test.ts > "$logs/vitest.log" 2>&1; then
    note tests "ok ($(grep -E '^ +Tests ' "$logs/vitest.log" | tr -s ' '))"
  else
    note tests "FAILED (see vitest.log)"
  fi
  tail -n 25 "$logs/vitest.log"
  publish
fi

# ---- nccl: data-parallel training on CUDA ----
if step nccl 60; then
  backends=$(timeout "$(limit 45)" node dist/cli.js doctor --json 2>/dev/null | node -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      try { console.log((JSON.parse(s).distributedBackends ?? []).join(",") || "none"); } catch { console.log("unknown (doctor failed)"); }
    });')
  echo "doctor's distributed backends: $backends" > "$logs/nccl.log"
  case ",$backends," in
    *,nccl,*)
      if timeout "$(limit 180)" node node_modules/vitest/vitest.mjs run test/nccl.test.ts >> "$logs/nccl.log" 2>&1; then
        note nccl "ok (backends $backends; $(grep -E '^ +Tests ' "$logs/nccl.log" | tr -s ' '); $(grep -o 'nccl-check: .*' "$logs/nccl.log" | head -n 1))"
      else
        note nccl "FAILED (backends $backends; see nccl.log)"
      fi
      tail -n 25 "$logs/nccl.log" ;;
    *) note nccl "skipped: this build has no NCCL backend (backends: $backends; see build.log's 'torch-bert: ... NCCL' line)" ;;
  esac
  publish
fi

# ---- bench ----
# The rows, most wanted first: the target (bf16 full fine-tuning at 256), then the other bf16
# rows, then fp32 at 256.
GPU_BENCH_ROWS=${GPU_BENCH_ROWS:-full/256/bf16,full/128/bf16,lora/256/bf16,frozen/256/bf16,lora/128/bf16,frozen/128/bf16,full/256/fp32,lora/256/fp32,frozen/256/fp32}
if step bench 60; then
  if cuda_seen || [ -n "${GPU_BENCH_ARGS:-}" ]; then
    t=$(limit 200)
    # --budget-s below the timeout: the script ends by itself, its table complete up to the rows
    # it had time for; the timeout only catches a hang.
    # shellcheck disable=SC2086 # GPU_BENCH_ARGS: extra words (the rehearsal's CPU smoke mode)
    timeout "$t" node scripts/gpu/gpu-bench.mjs --python "$PY" --out "$logs" --rows "$GPU_BENCH_ROWS" --budget-s $((t - 15)) ${GPU_BENCH_ARGS:-} \
      > "$logs/gpu-bench.jsonl" 2> "$logs/gpu-bench.log"
    case $? in
      0) note bench "ok ($(grep -c '^{' "$logs/gpu-bench.jsonl") rows)" ;;
      3) note bench "ok, partly: $(node -p "require('$logs/gpu-bench.json').rows.filter((r) => r.skipped).length") row(s) skipped by the time budget" ;;
      *) tail -n 20 "$logs/gpu-bench.log"; note bench "FAILED (see gpu-bench.log)" ;;
    esac
    [ -f "$logs/gpu-bench.md" ] && cat "$logs/gpu-bench.md"
  else
    note bench "skipped: libtorch sees no CUDA device"
  fi
  publish
fi

# ---- doctor ----
if step doctor 20; then
  timeout "$(limit 45)" node dist/cli.js doctor --json > "$logs/doctor.json" 2>> "$logs/doctor.txt"
  if timeout "$(limit 45)" node dist/cli.js doctor >> "$logs/doctor.txt" 2>&1; then note doctor ok; else note doctor "FAILED (see doctor.txt)"; fi
  cat "$logs/doctor.txt"
  publish
fi

# ---- prebuild: the prebuilt, then the npm pack tarball installed with it, build tools hidden ----
if step prebuild 40; then
  if timeout "$(limit 120)" node scripts/prebuild.mjs --reuse > "$logs/prebuild.log" 2>&1; then
    # prebuild.mjs's last line: 'torch-bert prebuild: <root>/prebuilds/<platform>-<arch>/torch-<version>-<flavor>/torch_bert.node'
    name=$(sed -n "s|^torch-bert prebuild: $root/prebuilds/\(.*\)/torch_bert.node\$|\1|p" "$logs/prebuild.log" | tail -n 1)
    tar -czf "$work/prebuilt.tgz" "prebuilds/$name" && mv -f "$work/prebuilt.tgz" "$OUT/prebuilt.tar.gz"
    ls -l "prebuilds/$name" >> "$logs/prebuild.log"
    # The install as npm runs it (npm itself is not carried: no registry there): the tarball's
    # files in node_modules/torch-bert of an app, with the prebuilt added, its dependencies from
    # the carried node_modules, then its install script and the CLI with only node and python3
    # on PATH (no cmake, compiler or make).
    app=$work/app
    pkg=$app/node_modules/torch-bert
    tarball=$(ls .gpu-kit/torch-bert-*.tgz 2>/dev/null | head -n 1)
    mkdir -p "$pkg" "$work/hidden-bin"
    ln -sf "$(command -v node)" "$work/hidden-bin/node"
    ln -sf "$work/pybin/python3" "$work/hidden-bin/python3"
    ln -sf /bin/sh "$work/hidden-bin/sh"
    for d in node_modules/* node_modules/.bin; do [ "$(basename "$d")" = torch-bert ] || ln -s "$root/$d" "$app/node_modules/"; done
    if [ -z "$tarball" ]; then
      note prebuild "FAILED: built prebuilds/$name, but .gpu-kit has no torch-bert-*.tgz to install (scripts/gpu/pack-node.sh makes it)"
    elif tar -xzf "$tarball" -C "$pkg" --strip-components=1 && mkdir -p "$pkg/prebuilds" && cp -r prebuilds/. "$pkg/prebuilds/" \
        && (cd "$pkg" && env -i HOME="$work" PATH="$work/hidden-bin" LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" \
              /bin/sh -c 'for t in cmake c++ g++ gcc clang++ make ninja; do command -v $t >/dev/null && exit 9; done; exec node scripts/install.mjs' \
              >> "$logs/prebuild.log" 2>&1) \
        && grep -q "using the prebuilt binary $pkg/prebuilds/$name/torch_bert.node" "$logs/prebuild.log" \
        && (cd "$app" && env -i HOME="$work" PATH="$work/hidden-bin" LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" \
              node node_modules/torch-bert/dist/cli.js doctor --json > "$logs/prebuild-doctor.json" 2>> "$logs/prebuild.log") \
        && node -e '
          const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
          const ok = r.binary.kind === "prebuilt" && r.binary.path.startsWith(process.argv[2]) && (r.cuda.available || process.argv[3] === "cpu");
          console.log(`installed package: ${r.binary.kind} ${r.binary.path}, cuda ${r.cuda.available}, devices ${r.devices.join(" ")}`);
          process.exit(ok ? 0 : 1);' "$logs/prebuild-doctor.json" "$pkg/prebuilds/" "${name##*-}" >> "$logs/prebuild.log" 2>&1; then
      note prebuild "ok (prebuilds/$name in \$OUT/prebuilt.tar.gz; installed from $(basename "$tarball") with the build tools hidden, loaded)"
    else
      tail -n 20 "$logs/prebuild.log"; note prebuild "FAILED (see prebuild.log; exit 9 from the install: a build tool was still on PATH)"
    fi
  else
    tail -n 20 "$logs/prebuild.log"; note prebuild "FAILED: npm run prebuild (see prebuild.log)"
  fi
  publish
fi

# ---- token pruning on a traced Hugging Face BertModel (transformers is on these machines) ----
if step pruning 30; then
  if timeout "$(limit 120)" node scripts/gpu/hf-pruning-check.mjs --python "$PY" --out "$logs" > "$logs/hf-pruning.txt" 2>&1; then
    if grep -q skipped "$logs/hf-pruning.txt"; then note pruning "skipped: no transformers"
    else note pruning "ok ($(grep -c ': ok' "$logs/hf-pruning.txt") attention variant(s) equal pruned and unpruned)"; fi
  else
    note pruning "FAILED (see hf-pruning.txt)"
  fi
  cat "$logs/hf-pruning.txt"
  publish
fi

# ---- the Hugging Face export read by transformers and PEFT (both are on these machines) ----
if step export 40; then
  if timeout "$(limit 180)" node scripts/gpu/hf-export-check.mjs --python "$PY" --out "$logs" > "$logs/hf-export.txt" 2>&1; then
    if grep -q '^hf-export: skipped' "$logs/hf-export.txt"; then note export "skipped: no transformers/peft"
    else note export "ok ($(grep -c ': ok' "$logs/hf-export.txt") checks: AutoModel, AutoTokenizer, head, PeftModel, merge_and_unload, AutoModelForSequenceClassification, AutoModelForMaskedLM, AutoModelForTokenClassification, token-classification pipeline)"; fi
  else
    note export "FAILED (see hf-export.txt)"
  fi
  cat "$logs/hf-export.txt"
  publish
fi

echo "---- summary ($((SECONDS - start)) s) ----"
cat "$logs/summary.txt"
publish
exit $status
