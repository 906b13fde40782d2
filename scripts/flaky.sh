#!/usr/bin/env bash
# Runs the end-to-end suite N times (default 5) and reports every test that
# failed at least once, with how often. Exit status 0 when no test ever
# failed, 1 otherwise. Run it before resolving an issue that adds or changes
# end-to-end tests: a test that fails 1 run in 20 fails CI on a fresh clone.
#
# Usage: scripts/flaky.sh [N] [-- extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
shift || true
[ "${1:-}" = "--" ] && shift
case $runs in
  ''|*[!0-9]*) echo "usage: scripts/flaky.sh [N] [-- cargo test args]" >&2; exit 2 ;;
esac

echo "==> building the end-to-end tests"
cargo test -p fruix --test end_to_end --no-run --locked "$@" >/dev/null

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
for i in $(seq 1 "$runs"); do
  echo "==> run $i of $runs"
  if cargo test -p fruix --test end_to_end --locked "$@" >"$logs/run-$i.log" 2>&1; then
    echo "    passed"
  else
    echo "    FAILED: $(grep -c '^test .* FAILED$' "$logs/run-$i.log" || true) test(s); log kept below"
  fi
done

failed=$(cat "$logs"/run-*.log | grep -E '^test .* \.\.\. FAILED$' | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | sort | uniq -c | sort -rn || true)
if [ -z "$failed" ]; then
  echo "==> no test failed in $runs run(s)"
  exit 0
fi
echo "==> tests that failed (times out of $runs):"
echo "$failed"
for f in "$logs"/run-*.log; do
  if grep -q 'FAILED' "$f"; then
    echo "---- $(basename "$f")"
    sed -n '/^failures:/,$p' "$f" | head -80
  fi
done
exit 1
