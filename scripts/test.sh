#!/usr/bin/env bash
# Runs the whole IronClaw test suite on a fresh Debian 12 machine (as root):
# installs what the tests need, builds the static guest, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-host.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
  export PATH=$HOME/.cargo/bin:$PATH
fi

RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked -p ironclaw-guest --target x86_64-unknown-linux-gnu
export IRONCLAW_GUEST_BIN=$PWD/target/x86_64-unknown-linux-gnu/release/ironclaw-guest

# Tests start real daemons and sandboxes; two at a time fit two cores.
cargo test --workspace --locked -- --test-threads=2
