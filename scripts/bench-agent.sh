#!/usr/bin/env bash
# Host <-> guest protocol figures (crates/sandbox/benches/agent_rpc.rs) for
# this tree and a reference commit (default: the merge base with main),
# interleaved in one run so before and after see the same machine.
#   scripts/bench-agent.sh [REF] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:-$(git merge-base HEAD main)}
runs=${2:-3}
# BENCH_BASE_DIR keeps the reference build between runs.
if [[ -n ${BENCH_BASE_DIR:-} ]]; then
  base=$BENCH_BASE_DIR
  mkdir -p "$base"
else
  base=$(mktemp -d /tmp/ironclaw-bench-base.XXXXXX)
  trap 'rm -rf "$base"' EXIT
fi
git archive "$ref" | tar -x -C "$base"
# The bench uses only AgentClient's public API, which both sides share.
mkdir -p "$base/crates/sandbox/benches"
cp crates/sandbox/benches/agent_rpc.rs "$base/crates/sandbox/benches/"
grep -q 'name = "agent_rpc"' "$base/crates/sandbox/Cargo.toml" ||
  printf '\n[[bench]]\nname = "agent_rpc"\nharness = false\n' >>"$base/crates/sandbox/Cargo.toml"
build() { # dir -> path of the bench binary, relative to dir
  (cd "$1" &&
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q -p ironclaw-guest --target x86_64-unknown-linux-gnu &&
    cargo bench --locked -p ironclaw-sandbox --bench agent_rpc --no-run 2>&1 | grep -o 'target/release/deps/agent_rpc-[0-9a-f]*' | head -1)
}
new_bench=$PWD/$(build .)
# Start the reference from this tree's build products: only what differs rebuilds.
[[ -d $base/target ]] || cp -a target "$base/target"
old_bench=$base/$(build "$base")
for i in $(seq "$runs"); do
  BENCH_LABEL="before ${ref:0:8}" IRONCLAW_GUEST_BIN=$base/target/x86_64-unknown-linux-gnu/release/ironclaw-guest "$old_bench" --runs "${BENCH_RUNS:-3}"
  BENCH_LABEL="after  $(git rev-parse --short HEAD)" IRONCLAW_GUEST_BIN=$PWD/target/x86_64-unknown-linux-gnu/release/ironclaw-guest "$new_bench" --runs "${BENCH_RUNS:-3}"
done
