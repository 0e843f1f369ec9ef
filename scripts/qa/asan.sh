#!/usr/bin/env bash
# AddressSanitizer run of the native addon's tests.
#
#   bash scripts/qa/asan.sh [vitest test files...]
#
# 1. Builds an ASan variant of the addon in build/asan/ (cmake-js, the libtorch that
#    scripts/find-libtorch.mjs finds, -fsanitize=address -fno-omit-frame-pointer, -O1 -g), next to
#    and independent of the normal build/Release/torch_bert.node.
# 2. Runs the native tests against it (TORCH_BERT_BINARY selects the binary; see lib/addon/loader.ts)
#    with libasan preloaded into node (an ASan-instrumented shared object needs the runtime loaded
#    first). Default tests: test/native.test.ts test/reliability/native-args.test.ts (whose
#    child-process tests pass objects of one class as another: every one must be refused by the
#    type-tag check before any memory of the wrong class is read).
# 3. Collects every ASan report (ASAN_OPTIONS log_path, one file per process) under
#    build/asan/reports/, prints a summary, and exits non-zero when there is any report or when
#    the tests fail.
#
# ASAN_OPTIONS: detect_leaks=0 (V8 and libtorch keep allocations until exit by design);
# detect_container_overflow=0 (libtorch and libstdc++ are not instrumented: container annotations
# would be half-applied and give false reports). Override with ASAN_EXTRA_OPTIONS=...
# Other knobs: ASAN_BUILD_DIR (default build/asan), ASAN_SKIP_BUILD=1, ASAN_BUILD_ONLY=1, JOBS.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${ASAN_BUILD_DIR:-$ROOT/build/asan}
REPORTS=$BUILD/reports
JOBS=${JOBS:-$(nproc)}
TESTS=("$@")
if [ ${#TESTS[@]} -eq 0 ]; then
  TESTS=(test/native.test.ts test/reliability/native-args.test.ts)
fi

LIBASAN=$(${CXX:-c++} -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ] || [ "$LIBASAN" = libasan.so ]; then
  echo "asan.sh: the compiler has no libasan.so (Debian/Ubuntu: apt-get install libasan8, or the gcc that matches c++)" >&2
  exit 2
fi
LIBASAN=$(readlink -f "$LIBASAN")
# Preloaded too: child processes inherit LD_PRELOAD, and in a program that does not link
# libstdc++ (the tests' Python, which makes the encoders) ASan could not find the real
# __cxa_throw at start-up ("CHECK failed: real___cxa_throw != 0") unless it is loaded first.
LIBSTDCXX=$(readlink -f "$(${CXX:-c++} -print-file-name=libstdc++.so.6)")
PRELOAD="$LIBASAN $LIBSTDCXX"

if [ "${ASAN_SKIP_BUILD:-0}" != 1 ]; then
  # The libtorch the normal build uses, as scripts/build-native.mjs finds it.
  LIBTORCH_JSON=$(node --input-type=module -e "
    import { findLibtorch } from './scripts/find-libtorch.mjs';
    const l = findLibtorch();
    console.log(JSON.stringify({ prefix: l.cmakePrefixPath, lib: l.libDir, version: l.version ?? '' }));")
  field() { node -e "process.stdout.write(String(JSON.parse(process.argv[1])[process.argv[2]]))" "$LIBTORCH_JSON" "$1"; }
  PREFIX=$(field prefix)
  LIBDIR=$(field lib)
  VERSION=$(field version)
  CMAKE_JS=$(node -p "require('path').join(require('path').dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js')")
  # Node's own headers when installed (as build-native.mjs does), so cmake-js downloads nothing.
  if [ -z "${npm_config_nodedir:-}" ]; then
    NODE_PREFIX=$(dirname "$(dirname "$(command -v node)")")
    if [ -e "$NODE_PREFIX/include/node/node_api.h" ]; then export npm_config_nodedir=$NODE_PREFIX; fi
  fi
  # cmake-js passes its own CMAKE_CXX_FLAGS after ours, so the sanitizer goes into the flags of
  # the build type (RelWithDebInfo), which it leaves alone.
  SAN="-O1 -g -fsanitize=address -fno-omit-frame-pointer"
  echo "asan.sh: building $BUILD/Release/torch_bert.node against libtorch $VERSION ($PREFIX)"
  # configure every time (a `compile` in an existing folder would keep the cached flags), then build.
  node "$CMAKE_JS" configure --directory "$ROOT" --out "$BUILD" \
    "--CDCMAKE_PREFIX_PATH=$PREFIX" \
    "--CDCMAKE_LIBRARY_PATH=$LIBDIR" \
    "--CDTORCH_BERT_EXPECTED_LIB_DIR=$LIBDIR" \
    "--CDTORCH_BERT_LIBTORCH_VERSION=$VERSION" \
    "--CDCMAKE_BUILD_TYPE=RelWithDebInfo" \
    "--CDCMAKE_CXX_FLAGS_RELWITHDEBINFO=$SAN" \
    "--CDCMAKE_SHARED_LINKER_FLAGS=-fsanitize=address"
  node "$CMAKE_JS" build --directory "$ROOT" --out "$BUILD" --parallel "$JOBS"
fi
BINARY=$BUILD/Release/torch_bert.node
if ! nm -D "$BINARY" 2>/dev/null | grep __asan_ > /dev/null; then
  echo "asan.sh: $BINARY is not instrumented (no __asan_ symbols)" >&2
  exit 2
fi

if [ "${ASAN_BUILD_ONLY:-0}" = 1 ]; then
  echo "asan.sh: built $BINARY"
  exit 0
fi

rm -rf "$REPORTS"
mkdir -p "$REPORTS"
export TORCH_BERT_BINARY=$BINARY
export ASAN_OPTIONS="detect_leaks=0:detect_container_overflow=0:halt_on_error=1:abort_on_error=0:print_summary=1:log_path=$REPORTS/asan${ASAN_EXTRA_OPTIONS:+:$ASAN_EXTRA_OPTIONS}"
echo "asan.sh: running ${TESTS[*]} with LD_PRELOAD=$PRELOAD"
echo "asan.sh: ASAN_OPTIONS=$ASAN_OPTIONS"
set +e
# tsc (npm test's pretest) is not needed: vitest runs the TypeScript sources.
LD_PRELOAD=$PRELOAD node node_modules/vitest/vitest.mjs run "${TESTS[@]}"
STATUS=$?
set -e

shopt -s nullglob
LOGS=("$REPORTS"/asan*)
if [ ${#LOGS[@]} -eq 0 ]; then
  echo "asan.sh: no AddressSanitizer report; tests exited with status $STATUS"
  exit $STATUS
fi
echo "asan.sh: ${#LOGS[@]} AddressSanitizer report(s) in $REPORTS:"
for log in "${LOGS[@]}"; do
  echo "---- $log"
  grep -E "^==[0-9]+==ERROR|^SUMMARY" "$log" || true
  # The first frames of each stack, for a quick look.
  grep -E "^    #[0-9]+ " "$log" | head -15 || true
done
exit 1
