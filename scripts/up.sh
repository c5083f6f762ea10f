#!/usr/bin/env bash
# Sets up this host and runs ironclawd: installs packages, builds, installs
# `ironclaw` on the PATH, starts the daemon, builds the default image on the
# first run, and prints the URL and the admin token.
#
# Usage: sudo scripts/up.sh [--data-dir DIR] [--listen ADDR] [--background]
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir=/var/lib/ironclaw
listen=127.0.0.1:7777
background=0
while (($#)); do
  case $1 in
    --data-dir) data_dir=$2; shift 2 ;;
    --listen) listen=$2; shift 2 ;;
    --background) background=1; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "up.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $(id -u) -ne 0 ]]; then
  echo "up.sh: ironclawd creates namespaces and cgroups: run as root (sudo scripts/up.sh)" >&2
  exit 1
fi

scripts/setup-host.sh
scripts/build.sh
root=$PWD
ln -sf "$root/target/release/ironclaw" /usr/local/bin/ironclaw
ln -sf "$root/target/release/ironclawd" /usr/local/bin/ironclawd

mkdir -p "$data_dir"
# The local embedder's weights, where [memory] weights_dir defaults to.
scripts/fetch-minilm.sh "$data_dir/models/all-minilm-l6-v2" >/dev/null
log=$data_dir/ironclawd.log
IRONCLAW_GUEST_BIN=$root/target/x86_64-unknown-linux-gnu/release/ironclaw-guest \
  nohup ironclawd --data-dir "$data_dir" --listen "$listen" >>"$log" 2>&1 &
pid=$!
url=http://$listen
for _ in $(seq 100); do
  curl -fsS "$url/v1/health" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "ironclawd failed to start; see $log:" >&2; tail -20 "$log" >&2; exit 1; }
  sleep 0.1
done
export IRONCLAW_HOST=$url IRONCLAW_TOKEN_FILE=$data_dir/admin.token

if ! ironclaw image ls --json | grep -q '"name": *"base"'; then
  echo "building the default image 'base' (Debian with python3, git, curl; about a minute)"
  ironclaw image build base --from debian
fi
if ! ironclaw image ls --json | grep -q '"name": *"mini"'; then
  ironclaw image build mini --from busybox
fi

cat <<TXT

ironclawd is running (pid $pid), log: $log
  URL:    $url
  token:  $(cat "$data_dir/admin.token")
  web UI: $url/#token=$(cat "$data_dir/admin.token")

Try:
  ironclaw sandbox create --name dev
  ironclaw exec dev -- python3 -c 'print(6*7)'
  ironclaw console dev
TXT
[[ $data_dir == /var/lib/ironclaw ]] || echo "  (export IRONCLAW_TOKEN_FILE=$data_dir/admin.token IRONCLAW_HOST=$url first)"
if ((background)); then
  echo "stop it with: kill $pid"
  exit 0
fi
echo "Ctrl-C stops ironclawd (sandboxes keep running and are re-adopted on the next start)."
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
wait $pid
