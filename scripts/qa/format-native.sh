#!/usr/bin/env bash
# Formats native/ with clang-format (.clang-format), or with --check fails on any difference.
# The major version is pinned: another clang-format formats the same code differently, and
# a formatting check must not depend on which one a machine has. scripts/setup.sh installs
# Debian 12's (clang-format 14).
set -euo pipefail
cd "$(dirname "$0")/../.."
want=14
bin=${CLANG_FORMAT:-}
if [ -z "$bin" ]; then
  for b in clang-format-$want clang-format; do command -v "$b" >/dev/null && { bin=$b; break; }; done
fi
[ -n "$bin" ] || { echo "format-native: no clang-format; install Debian's clang-format (version $want): apt-get install clang-format" >&2; exit 1; }
major=$("$bin" --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p')
[ "$major" = "$want" ] || { echo "format-native: $bin is version $major; version $want is required (set CLANG_FORMAT)" >&2; exit 1; }
mapfile -t files < <(find native -name '*.cc' -o -name '*.h' | sort)
if [ "${1:-}" = "--check" ]; then
  "$bin" --dry-run --Werror "${files[@]}"
else
  "$bin" -i "${files[@]}"
fi
