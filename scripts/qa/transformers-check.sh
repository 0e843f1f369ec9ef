#!/usr/bin/env bash
# transformers and PEFT themselves reading what torch-bert writes, on a CPU machine: the export
# and token-pruning checks of the GPU check (scripts/gpu/hf-export-check.mjs,
# hf-pruning-check.mjs) run with a Python that has transformers, PEFT and torch 2.x. No GPU is
# needed for them; only a Python with those packages, which the CI machine's Python lacks.
#
# The venv (TRANSFORMERS_VENV, default /tmp/torch-bert-transformers) is made once with pip from
# the package sources pip is configured with: on this project's machines a local mirror on disk
# (pip config list: find-links /opt/wheels, extra-index-url file:///opt/pypi/simple); nothing is
# downloaded where there is none (pip fails, saying so). Needs `npm run build:ts` done (dist/).
#
# The question-answering checks' lines start 'qa-' (their notes, upstream bugs or a skipped
# pipeline, too).
#
#   bash scripts/qa/transformers-check.sh [OUT_DIR]     -> OUT_DIR/hf-export.json, hf-pruning.json
# Exit code: 0 when every check passed (or was skipped for a missing library, said in its line).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${TRANSFORMERS_VENV:-/tmp/torch-bert-transformers}
out=${1:-${TMPDIR:-/tmp}/torch-bert-transformers-check}
mkdir -p "$out"
if ! "$venv/bin/python" -c 'import torch, transformers, peft' 2>/dev/null; then
  python3 -m venv "$venv"
  # Retries 0: an index that cannot be reached (pypi.org, where pip is set to a local mirror too) fails at once.
  "$venv/bin/pip" install -q --retries 0 --timeout 10 torch transformers peft safetensors
fi
"$venv/bin/python" -c 'import torch, transformers, peft; print(f"transformers-check: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")'
cd "$root"
# Runs a check (the arguments after the pattern), prints its lines that match the pattern, and
# returns the check's own exit status (a pipe into grep would give grep's, or with pipefail and
# `|| true`, none: a failed check read as passed).
check() {
  local pattern=$1 log code=0
  shift
  log=$(mktemp)
  "$@" > "$log" 2>&1 || code=$?
  grep -E "$pattern" "$log" || true
  rm -f "$log"
  return "$code"
}
status=0
check '^(hf-export|adapterhub|qa-|[a-z-]+ .*: (ok|FAILED))' node scripts/gpu/hf-export-check.mjs --python "$venv/bin/python" --out "$out" || status=1
check '^hf-pruning' node scripts/gpu/hf-pruning-check.mjs --python "$venv/bin/python" --out "$out" || status=1
echo "transformers-check: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
