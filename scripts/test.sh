#!/usr/bin/env bash
# Runs fruix's whole test suite on a Debian machine, as root: installs the
# system packages the tests use (real guile, mtree, nix-hash, sshd, bmake,
# QEMU and the VM tests' guest image, check-jsonschema and Buildbot from
# PyPI),
# then checks formatting and lints, and runs every test.
#
# Tests that need one of these tools fail with a message naming it when it is
# missing; nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(guile-3.0 mtree-netbsd nix-bin openssh-server openssh-client bmake gcc make libxml2-utils tmux groff-base git busybox-static dropbear-bin cpio procps perl-base util-linux acl faketime)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "==> the VM tests' guest image (QEMU, a cloud kernel, busybox, dropbear)"
bash scripts/vm-image.sh target/vm-image

echo "==> Python tools (check-jsonschema, Buildbot) in target/py"
bash scripts/python-tools.sh target/py

# One full build: incremental state would only take disk (gigabytes of it)
# without being reused. Set CARGO_INCREMENTAL=1 to keep it between runs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The build and tests take about 2 GB (measured on a fresh run: target/
# grows to about 1.5 GB, the guest image and the Python tools included, and
# Cargo's downloaded crates take about 0.2 GB; the README says the same);
# say what there is, to explain a "No space left on device" later.
df -h . | awk 'NR==2 { print "==> disk: " $4 " free on " $6 }'

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo doc (every public item documented, every link resolved)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
echo "==> cargo test"
cargo test --workspace --locked --no-fail-fast
