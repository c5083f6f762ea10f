#!/usr/bin/env bash
# Builds every IronClaw binary: ironclawd and ironclaw (release), and the
# static ironclaw-guest that goes into sandbox images.
# Usage: scripts/build.sh [--debug]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
flag=(--release)
if [[ ${1:-} == --debug ]]; then profile=debug; flag=(); fi

if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
  export PATH=$HOME/.cargo/bin:$PATH
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "build.sh: cargo not found; install Rust with: curl https://sh.rustup.rs -sSf | sh" >&2
  exit 1
fi

# The guest runs in images without a libc: link it statically. --target keeps
# the flag off build scripts and proc macros (which cannot be static).
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build "${flag[@]}" --locked -p ironclaw-guest --target x86_64-unknown-linux-gnu
cargo build "${flag[@]}" --locked -p ironclaw-daemon -p ironclaw-cli
echo "built: target/$profile/ironclawd target/$profile/ironclaw target/x86_64-unknown-linux-gnu/$profile/ironclaw-guest"
