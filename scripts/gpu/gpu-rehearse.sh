#!/usr/bin/env bash
# Rehearses scripts/gpu/gpu-check.sh on a CPU machine the way the device tool runs it on the GPU
# machine, so that the GPU is the only unknown left: in DIR/repo, a copy of what the tool sends
# (tracked and untracked-not-ignored files, and the carried .gpu-kit from scripts/gpu/pack-node.sh);
# a PATH with no Node (the system's tools without node, npm, npx, corepack) and a venv's python3
# first (the GPU machine's is /opt/torch/.venv/bin/python3); an empty environment otherwise; the
# run under `timeout 560` (REHEARSE_TIMEOUT_S: more, for a build on a slow machine); then the
# tool's limits on what comes back from $OUT checked.
#
#   bash scripts/gpu/gpu-rehearse.sh DIR [VAR=VALUE ...]   e.g. GPU_CHECK_STEPS="tests bench" GPU_CHECK_BUDGET_S=60
# GPU_BENCH_ARGS="--device cpu --shape tiny ..." runs the benchmark's CPU smoke mode. With
# REHEARSE_CARRY_BUILD=1, build/Release of this checkout is copied along (for steps after the
# build without compiling again). Exit code: gpu-check.sh's, or 1 when $OUT breaks the limits.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:?usage: gpu-rehearse.sh DIR [VAR=VALUE ...]}
shift
# REHEARSE_* settings are this script's; the other VAR=VALUE go to gpu-check.sh.
vars=()
for a in "$@"; do case "$a" in REHEARSE_*=*) export "${a?}" ;; *) vars+=("$a") ;; esac; done
mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
case "$dir/" in "$root"/*) echo "gpu-rehearse: DIR must be outside the checkout" >&2; exit 2 ;; esac
[ -d "$root/.gpu-kit" ] || { echo "gpu-rehearse: no .gpu-kit: run scripts/gpu/pack-node.sh first" >&2; exit 2; }
rm -rf "$dir/repo" "$dir/out" "$dir/tmp" "$dir/bin"
mkdir -p "$dir/repo" "$dir/out" "$dir/tmp" "$dir/bin"
(cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -C "$dir/repo" -xf -
cp -r "$root/.gpu-kit" "$dir/repo/"
if [ "${REHEARSE_CARRY_BUILD:-}" = 1 ]; then mkdir -p "$dir/repo/build" && cp -r "$root/build/Release" "$dir/repo/build/"; fi
[ -x "$dir/venv/bin/python3" ] || /usr/bin/python3 -m venv --system-site-packages "$dir/venv"
for f in /usr/bin/*; do case ${f##*/} in node | nodejs | npm | npx | corepack) ;; *) ln -s "$f" "$dir/bin/" ;; esac; done
echo "gpu-rehearse: $(du -sh "$dir/repo" | cut -f1) sent; PATH=$dir/venv/bin:$dir/bin; ${vars[*]}"
start=$SECONDS
(cd "$dir/repo" && env -i HOME="$dir/tmp" TMPDIR="$dir/tmp" PATH="$dir/venv/bin:$dir/bin" OUT="$dir/out" "${vars[@]}" timeout "${REHEARSE_TIMEOUT_S:-560}" bash scripts/gpu/gpu-check.sh)
rc=$?
echo "gpu-rehearse: gpu-check.sh exited $rc after $((SECONDS - start)) s; \$OUT:"
(cd "$dir/out" && find . -type f -printf '%s\t%p\n')
files=$(find "$dir/out" -type f | wc -l)
if [ "$files" -gt 8 ] || [ -n "$(find "$dir/out" -mindepth 4; find "$dir/out" -type f -size +16M)" ]; then
  echo "gpu-rehearse: FAILED: \$OUT breaks the device tool's limits ($files files)"; exit 1
fi
exit $rc
