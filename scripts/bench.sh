#!/usr/bin/env bash
# Prints the sandbox runtime benchmark (figures beside a bwrap reference run
# in the same process). Pass --quick for a short run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh >/dev/null
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked -p ironclaw-guest --target x86_64-unknown-linux-gnu
export IRONCLAW_GUEST_BIN=$PWD/target/x86_64-unknown-linux-gnu/release/ironclaw-guest
if [[ ${1:-} == --egress ]]; then
  shift
  exec cargo bench --locked -p ironclaw-daemon --bench egress -- "$@"
fi
if [[ ${1:-} == --gateway ]]; then
  shift
  exec cargo bench --locked -p ironclaw-daemon --bench gateway -- "$@"
fi
cargo bench --locked -p ironclaw-daemon --bench sandbox -- "$@"
