#!/usr/bin/env bash
# Installs the Python tools the tests use into a virtual environment, DIR
# (default target/py), at the versions pinned in
# scripts/python-constraints.txt, and reuses it when it is already there:
#   DIR/bin/check-jsonschema   validates the GitHub Actions and GitLab CI
#                              pipelines `fruix matrix export` writes
#   DIR/bin/buildbot, DIR/bin/buildbot-worker
#                              a real Buildbot master and workers run the
#                              exported Buildbot configuration
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-target/py}
constraints=scripts/python-constraints.txt
stamp="$dir/.complete"
# The stamp holds the constraints it was made from: a change reinstalls.
[ -f "$stamp" ] && cmp -s "$stamp" "$constraints" && exit 0
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
rm -rf "$dir"
python3 -m venv "$dir"
"$dir/bin/pip" install -q --disable-pip-version-check -c "$constraints" \
  check-jsonschema buildbot buildbot-worker buildbot-www
cp "$constraints" "$stamp"
echo "python tools: $dir"
