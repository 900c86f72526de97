#!/usr/bin/env bash
# Installs the system packages pare's build, tests, benchmarks and demo need,
# and loads the kernel modules. Safe to run again: does nothing when all is there.
set -euo pipefail

PACKAGES=(
  fuse3 libfuse3-dev pkg-config   # fusermount3, FUSE headers
  attr libcap2-bin                # getfattr/setfattr, setcap for fixtures
  fuse-overlayfs                  # benchmark baseline
  containerd runc                 # the runtime pare plugs into
  protobuf-compiler               # containerd API bindings
  debootstrap                     # realistic Debian test images
  hyperfine                       # whole-command timings
  docker-registry                 # local registry of the cold-start bench
  kmod util-linux procps          # modprobe, mount, pgrep, setpriv
  golang-go golang-github-containerd-containerd-dev   # containerd's snapshotter test suite
  systemd                         # systemd-analyze verify of the shipped unit
)

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (installs Debian packages, loads fuse and overlay)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The benches start their own registry; do not leave the package's system
  # service running on port 5000 when this script is what installed it.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

modprobe fuse 2>/dev/null || true
modprobe overlay 2>/dev/null || true
[ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing after modprobe fuse" >&2; exit 1; }
grep -qw overlay /proc/filesystems || { echo "setup: the kernel has no overlay file system" >&2; exit 1; }
# FUSE over io_uring (Linux 6.14+) is offered only while this host-wide switch
# is on: tests and benches run views over both transports, so turn it on
# where the kernel has it. In production it is the operator's choice (README).
if [ -e /sys/module/fuse/parameters/enable_uring ]; then
  echo Y > /sys/module/fuse/parameters/enable_uring
else
  echo "setup: this kernel has no FUSE over io_uring; views serve over /dev/fuse" >&2
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is not installed (pare builds with the machine's Rust toolchain)" >&2
  exit 1
fi
