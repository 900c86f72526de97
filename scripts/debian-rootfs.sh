#!/usr/bin/env bash
# Builds (once) and caches a Debian rootfs made by debootstrap; prints its path.
#
#   scripts/debian-rootfs.sh [SUITE [VARIANT [INCLUDE]]]
#       SUITE    default bookworm
#       VARIANT  default minbase
#       INCLUDE  comma-separated extra packages, default python3 ("" for none)
#   env: MIRROR (default http://deb.debian.org/debian),
#        PARE_TEST_CACHE (default /var/cache/pare-tests)
#
# The cache key is a short hash of the recipe (suite, variant, include list,
# mirror): $PARE_TEST_CACHE/debian-SUITE-VARIANT-HASH/rootfs. The rootfs is
# built in a temporary directory beside it and renamed into place only when
# debootstrap succeeds, so an interrupted build never leaves a half cache.
# Concurrent callers wait on a lock and then reuse the one result.
set -euo pipefail

SUITE=${1:-bookworm}
VARIANT=${2:-minbase}
INCLUDE=${3-python3}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${PARE_TEST_CACHE:-/var/cache/pare-tests}

# A debootstrap of the default recipe that a machine's set-up may have started.
WARM_DIR=/var/cache/pare-tests/warm-bookworm-python3
WARM_LOG=/tmp/debootstrap.log

if [ "$(id -u)" != 0 ]; then
  echo "debian-rootfs: run as root (debootstrap needs it)" >&2
  exit 1
fi

recipe="suite=$SUITE variant=$VARIANT include=$INCLUDE mirror=$MIRROR"
hash=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
dir="$CACHE/debian-$SUITE-$VARIANT-$hash"
rootfs="$dir/rootfs"

if [ -d "$rootfs" ]; then
  echo "$rootfs"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.debian-$SUITE-$VARIANT-$hash.lock"
flock 9
if [ -d "$rootfs" ]; then # built by the caller we waited for
  echo "$rootfs"
  exit 0
fi

tmp=$(mktemp -d "$CACHE/.tmp-debian-$hash-XXXXXX")
trap 'rm -rf --one-file-system "$tmp"' EXIT

warm_is_complete() {
  [ "$SUITE/$VARIANT/$INCLUDE/$MIRROR" = "bookworm/minbase/python3/http://deb.debian.org/debian" ] &&
    [ -x "$WARM_DIR/usr/bin/python3" ] &&
    [ -f "$WARM_LOG" ] && [ "$(tail -n 1 "$WARM_LOG")" = "rc 0" ]
}

if warm_is_complete; then
  # Copy rather than move: whoever started the warm build may still use it.
  echo "debian-rootfs: adopting the finished debootstrap in $WARM_DIR" >&2
  cp -a "$WARM_DIR" "$tmp/rootfs"
else
  echo "debian-rootfs: debootstrap $recipe (a few minutes)" >&2
  args=(--variant="$VARIANT")
  [ -n "$INCLUDE" ] && args+=(--include="$INCLUDE")
  debootstrap "${args[@]}" "$SUITE" "$tmp/rootfs" "$MIRROR" >"$tmp/debootstrap.log" 2>&1 || {
    echo "debian-rootfs: debootstrap failed; last lines of its log:" >&2
    tail -n 20 "$tmp/debootstrap.log" >&2
    exit 1
  }
fi

printf '%s\n' "$recipe" >"$tmp/recipe"
mkdir -p "$dir"
mv "$tmp/recipe" "$dir/recipe"
sync -f "$tmp/rootfs"
mv -T "$tmp/rootfs" "$rootfs" # rename(2): the cache appears whole or not at all
echo "$rootfs"
