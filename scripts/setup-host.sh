#!/usr/bin/env bash
# Installs what IronClaw needs on a Debian 12 (bookworm) host.
#
# Idempotent: packages already installed are skipped and `apt-get update`
# only runs when something is missing, so re-runs take about a second.
# Run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  build-essential pkg-config    # compiling the workspace (C deps such as bundled SQLite)
  busybox-static                # the busybox image and initramfs
  mmdebstrap                    # the Debian image
  bubblewrap                    # namespace helpers and tests
  iproute2 procps util-linux    # ip, ps, unshare/nsenter/mount on the host
  ca-certificates curl          # downloads (Firecracker, rustup)
  e2fsprogs                     # mkfs.ext4/resize2fs/e2fsck: VM root disks
  nftables                      # nft: sandbox NAT and egress filtering (the daemon drives it as JSON)
  pebble                        # a local ACME CA for the ACME test (crates/daemon/tests/acme.rs); bookworm ships 2.4.0
  openssh-client                # ssh/scp/sftp/ssh-keygen: `ironclaw ssh` and the SSH endpoint tests
  rsync                         # rsync over the SSH endpoint (crates/daemon/tests/ssh_deploy.rs)
)

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "setup-host.sh: run as root (or install sudo)" >&2
    exit 1
  fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-host.sh: apt-get not found; this script supports Debian 12 (bookworm)" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  # dpkg -s succeeds for removed-but-configured packages too; check the state.
  if ! dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  # --no-remove: never trade an existing package (say, a newer qemu-utils
  # from backports) for one of ours; fail and let the operator decide.
  if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}"; then
    echo "setup-host.sh: apt-get could not install ${missing[*]} without removing other packages;" >&2
    echo "  resolve the conflict shown above (e.g. install matching versions from the same suite) and re-run" >&2
    exit 1
  fi
else
  echo "all ${#PACKAGES[@]} packages already installed"
fi

# QEMU for the qemu backend (and the KVM probe). These machines ship
# qemu-utils from bookworm-backports; bookworm's own qemu-system-x86 (7.2)
# conflicts with it, so take qemu-system-x86 from the same suite.
install_qemu() {
  export DEBIAN_FRONTEND=noninteractive
  local utils_version
  utils_version=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [[ $utils_version == *bpo* ]]; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "adding the bookworm-backports apt source (qemu-utils $utils_version comes from there)"
      "${SUDO[@]}" tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends --no-remove \
      -t bookworm-backports qemu-system-x86
  else
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends --no-remove qemu-system-x86
  fi
}
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  echo "installing qemu-system-x86"
  if ! install_qemu; then
    echo "setup-host.sh: could not install qemu-system-x86; the qemu backend will be unavailable" >&2
    exit 1
  fi
fi

# The busybox image copies the host's busybox into guests that have no
# libc, so it must be the static build (the plain `busybox` package is not).
if ! file_type=$(LC_ALL=C readelf -l /bin/busybox 2>/dev/null) || grep -q 'Requesting program interpreter' <<<"$file_type"; then
  echo "warning: /bin/busybox is missing or dynamically linked; the busybox image will download busybox-static" >&2
fi

if command -v cargo >/dev/null 2>&1 || [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
  echo "cargo: $(command -v cargo || echo "${HOME:-/root}/.cargo/bin/cargo")"
else
  cat >&2 <<'MSG'
cargo not found. Install Rust with rustup:
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
  . "$HOME/.cargo/env"
MSG
  exit 1
fi

# The web UI's browser test (tests/ui/run.sh): Debian's Chromium, driven by
# playwright-core from npm (never a downloaded browser), and Node.js to run
# it. A Node.js that is already installed (say, from another apt source)
# is kept.
ui_missing=()
if ! dpkg-query -W -f='${db:Status-Status}' chromium 2>/dev/null | grep -qx installed; then
  ui_missing+=(chromium fonts-dejavu-core)
fi
if ! command -v node >/dev/null 2>&1; then
  ui_missing+=(nodejs)
fi
if ! command -v npm >/dev/null 2>&1; then
  ui_missing+=(npm)
fi
if ((${#ui_missing[@]} > 0)); then
  echo "installing for the web UI test: ${ui_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends --no-remove "${ui_missing[@]}"; then
    echo "setup-host.sh: could not install ${ui_missing[*]} (needed by tests/ui/run.sh)" >&2
    exit 1
  fi
fi

echo "host ready"
