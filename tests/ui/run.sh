#!/usr/bin/env bash
# End-to-end test of the web UI in headless Chromium.
#
# Starts a real ironclawd on a temporary data dir and a free port, builds the
# busybox image `base` through the API, adds a user, starts the mock LLM
# with tests/ui/mock-script.json, and drives the UI served at / with
# Playwright (playwright-core + Debian's /usr/bin/chromium; no browser
# download): log in, chat (streamed answer, a `bash` tool call), terminal,
# files. Everything it started is removed on exit.
#
# Environment:
#   IRONCLAW_BIN_DIR    where ironclawd is (default target/debug)
#   IRONCLAW_GUEST_BIN  the static guest (default target/x86_64-unknown-linux-gnu/release/ironclaw-guest)
#   MOCK_LLM_URL        use this already running mock LLM instead of starting
#                       `cargo run -p ironclaw-agent --example mock_llm`
#   CHROMIUM            browser binary (default /usr/bin/chromium)
# Screenshots go to tests/ui/out/.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN_DIR=${IRONCLAW_BIN_DIR:-$ROOT/target/debug}
[[ $BIN_DIR = /* ]] || BIN_DIR=$ROOT/$BIN_DIR
export IRONCLAW_GUEST_BIN=${IRONCLAW_GUEST_BIN:-$ROOT/target/x86_64-unknown-linux-gnu/release/ironclaw-guest}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

log() { printf 'ui-test: %s\n' "$*" >&2; }
die() { log "$*"; echo "0 passed, 1 failed"; exit 1; }

[[ -x $BIN_DIR/ironclawd ]] || die "no $BIN_DIR/ironclawd (build it: cargo build -p ironclaw-daemon)"
[[ -x $IRONCLAW_GUEST_BIN ]] || die "no guest at $IRONCLAW_GUEST_BIN (scripts/test.sh builds it)"
[[ -x $CHROMIUM ]] || die "no $CHROMIUM (scripts/setup-host.sh installs chromium)"
command -v node >/dev/null || die "node not found (scripts/setup-host.sh installs nodejs)"
command -v curl >/dev/null || die "curl not found"

WORK=$(mktemp -d /tmp/ironclaw-ui.XXXXXX)
DATA=$WORK/data
DAEMON_PID=
MOCK_PID=
URL=
ADMIN=

cleanup() {
  local rc=$?
  set +e
  if [[ -n $URL && -n $ADMIN ]]; then
    # Delete every sandbox through the API, so nothing outlives the test.
    local names
    names=$(curl -sf -H "Authorization: Bearer $ADMIN" "$URL/v1/sandboxes" |
      node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{for(const b of JSON.parse(s).sandboxes)console.log(b.name+"?owner="+b.owner)}catch{}})')
    # Names are per owner: the admin names each one with its owner.
    for n in $names; do
      curl -sf -o /dev/null -X DELETE -H "Authorization: Bearer $ADMIN" "$URL/v1/sandboxes/$n" ||
        log "could not delete sandbox $n"
    done
  fi
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID"
    for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null
    wait "$DAEMON_PID" 2>/dev/null
  fi
  if [[ -n $MOCK_PID ]]; then
    kill -TERM "$MOCK_PID" 2>/dev/null
    wait "$MOCK_PID" 2>/dev/null
  fi
  if ((rc != 0)) && [[ -f $WORK/daemon.log ]]; then
    log "last lines of the daemon's log:"
    tail -n 30 "$WORK/daemon.log" >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait until FILE has a line matching REGEX (up to SECS seconds); print it.
wait_line() {
  local file=$1 regex=$2 secs=$3 pid=${4:-} line
  for _ in $(seq $((secs * 10))); do
    if line=$(grep -m1 -E "$regex" "$file" 2>/dev/null); then
      printf '%s\n' "$line"
      return 0
    fi
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# ---- node dependencies (playwright-core, pinned by package-lock.json) ----
log "npm ci"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed"

# ---- the mock LLM ----
if [[ -z ${MOCK_LLM_URL:-} ]]; then
  log "starting the mock LLM (cargo run -p ironclaw-agent --example mock_llm)"
  profile=()
  [[ $(basename "$BIN_DIR") == release ]] && profile=(--release)
  (cd "$ROOT" && cargo build -q --locked "${profile[@]}" -p ironclaw-agent --example mock_llm) ||
    die "could not build the mock LLM example (set MOCK_LLM_URL to use a running one)"
  "$BIN_DIR/examples/mock_llm" "$HERE/mock-script.json" >"$WORK/mock.out" 2>"$WORK/mock.log" &
  MOCK_PID=$!
  MOCK_LLM_URL=$(wait_line "$WORK/mock.out" '^http://' 30 "$MOCK_PID" | grep -oE 'http://[^ ]+') ||
    die "the mock LLM did not print its URL: $(cat "$WORK/mock.log")"
fi
MOCK_LLM_URL=${MOCK_LLM_URL%/}
MOCK_LLM_URL=${MOCK_LLM_URL%/v1}
log "mock LLM at $MOCK_LLM_URL"

# ---- the daemon ----
mkdir -p "$DATA"
IRONCLAW_PROVIDER=openai IRONCLAW_BASE_URL=$MOCK_LLM_URL/v1 IRONCLAW_API_KEY=x IRONCLAW_MODEL=mock-model \
  RUST_LOG=${RUST_LOG:-info} \
  "$BIN_DIR/ironclawd" --data-dir "$DATA" --listen 127.0.0.1:0 >"$WORK/daemon.out" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
line=$(wait_line "$WORK/daemon.out" '^ironclawd listening on http://' 30 "$DAEMON_PID") ||
  die "ironclawd did not start"
URL=${line#ironclawd listening on }
ADMIN=$(<"$DATA/admin.token")
log "ironclawd at $URL (data $DATA)"

# ---- the image and a user ----
log "building the busybox image 'base'"
build=$(curl -sS -N -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"name":"base","from":"busybox"}' "$URL/v1/images") || die "image build request failed"
tail -n1 <<<"$build" | grep -q '"type":"done"' || die "image build failed: $(tail -n1 <<<"$build")"

user_json=$(curl -sS -f -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"name":"alice"}' "$URL/v1/users") || die "could not add the user"
USER_TOKEN=$(node -e 'console.log(JSON.parse(process.argv[1]).token)' "$user_json")

# ---- the browser test ----
mkdir -p "$HERE/out"
log "running the browser test"
set +e
IRONCLAW_URL=$URL IRONCLAW_UI_TOKEN=$USER_TOKEN IRONCLAW_UI_USER=alice IRONCLAW_ADMIN_TOKEN=$ADMIN \
  UI_OUT=$HERE/out node --test --test-concurrency=1 "${UI_TESTS:-$HERE/ui.test.mjs}" 2>&1 | tee "$WORK/node-test.out"
status=${PIPESTATUS[0]}
set -e
pass=$(grep -E '^# pass [0-9]+' "$WORK/node-test.out" | awk '{print $3}' | tail -n1)
fail=$(grep -E '^# fail [0-9]+' "$WORK/node-test.out" | awk '{print $3}' | tail -n1)
pass=${pass:-0}
fail=${fail:-0}
if ((status != 0 && fail == 0)); then fail=1; fi
echo "$pass passed, $fail failed"
exit "$status"
