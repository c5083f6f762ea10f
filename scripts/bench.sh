#!/usr/bin/env bash
# Prints the sandbox runtime benchmark (figures beside a bwrap reference run
# in the same process). Pass --quick for a short run; --egress (egress proxy
# against direct), --ports (port proxy against direct and Caddy) or
# --gateway, --ssh (ssh NAME@HOST true against ironclaw exec), --deploy
# (git-push to serving), --mcp (an MCP tool call against the exec API),
# --e2b (the E2B SDK's commands.run against the exec API), --caching (prompt
# caching: a 10-turn task's prompt tokens and cost, cached against uncached),
# --memory (memory index: indexing, query latency against brute-force
# scans, local embedding throughput) or --channels (chat channels) for the
# other benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh >/dev/null
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked -p ironclaw-guest --target x86_64-unknown-linux-gnu
export IRONCLAW_GUEST_BIN=$PWD/target/x86_64-unknown-linux-gnu/release/ironclaw-guest
if [[ ${1:-} == --ports ]]; then
  # The reference proxy, Caddy's reverse_proxy, from Debian.
  command -v caddy >/dev/null || apt-get install -y -qq --no-install-recommends caddy
  shift
  cargo bench --locked -p ironclaw-net --bench port_proxy -- "$@"
  exec cargo bench --locked -p ironclaw-daemon --bench ports -- "$@"
fi
if [[ ${1:-} == --egress ]]; then
  shift
  exec cargo bench --locked -p ironclaw-daemon --bench egress -- "$@"
fi
if [[ ${1:-} == --ssh ]]; then
  shift
  exec cargo bench --locked -p ironclaw-daemon --bench ssh -- "$@"
fi
if [[ ${1:-} == --deploy ]]; then
  shift
  exec cargo bench --locked -p ironclaw-daemon --bench deploy -- "$@"
fi
if [[ ${1:-} == --mcp ]]; then
  shift
  exec cargo bench --locked -p ironclaw-daemon --bench mcp -- "$@"
fi
if [[ ${1:-} == --caching ]]; then
  shift
  exec cargo bench --locked -p ironclaw-agent --bench caching -- "$@"
fi
if [[ ${1:-} == --memory ]]; then
  shift
  IRONCLAW_MINILM_DIR=${IRONCLAW_MINILM_DIR:-$(scripts/fetch-minilm.sh)}
  export IRONCLAW_MINILM_DIR
  exec cargo bench --locked -p ironclaw-memory --bench memory -- "$@"
fi
if [[ ${1:-} == --e2b ]]; then
  shift
  python3 -m pip install --quiet --disable-pip-version-check 'e2b==2.63.0'
  exec cargo bench --locked -p ironclaw-daemon --bench e2b -- "$@"
fi
if [[ ${1:-} == --channels ]]; then
  shift
  exec cargo bench --locked -p ironclaw-daemon --bench channels -- "$@"
fi
if [[ ${1:-} == --gateway ]]; then
  shift
  exec cargo bench --locked -p ironclaw-daemon --bench gateway -- "$@"
fi
cargo bench --locked -p ironclaw-daemon --bench sandbox -- "$@"
