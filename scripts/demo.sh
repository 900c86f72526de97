#!/usr/bin/env bash
# pare demo: build a small three-layer image from the host's binaries, serve it
# through `pare mount`, run a workload in it (chroot), and show the profile:
# which of the image's files the workload actually used, in first-access order.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PARE="${PARE:-$ROOT/target/release/pare}"
WORK="$(mktemp -d /tmp/pare-demo.XXXXXX)"
MNT="$WORK/rootfs"
PARE_PID=""

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || umount -l "$MNT"; fi
  if [ -n "$PARE_PID" ]; then wait "$PARE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# copy_bin LAYER BIN...: BIN and its shared libraries (as ldd resolves them) into LAYER.
copy_bin() {
  local layer="$1"; shift
  for bin in "$@"; do
    local path; path="$(command -v "$bin")"
    mkdir -p "$layer/usr/bin"
    cp -aL "$path" "$layer/usr/bin/$bin"
    ldd "$path" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
      mkdir -p "$layer$(dirname "$lib")"
      [ -e "$layer$lib" ] || cp -aL "$lib" "$layer$lib"
    done
  done
}

step "building a three-layer image in $WORK/layers"
L3="$WORK/layers/3-base" L2="$WORK/layers/2-tools" L1="$WORK/layers/1-app"
mkdir -p "$L3" "$L2" "$L1" "$MNT"
copy_bin "$L3" sh ls cat grep sort wc head tar gzip sed find
ln -s usr/bin "$L3/bin"
mkdir -p "$L3/etc" "$L3/tmp" "$L3/usr/share/doc/base"
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n' > "$L3/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' > "$L3/etc/group"
for i in $(seq 1 200); do echo "manual page $i" > "$L3/usr/share/doc/base/page$i.txt"; done
copy_bin "$L2" awk cut tr uniq
mkdir -p "$L2/usr/share/doc/base"
mknod "$L2/usr/share/doc/base/page1.txt" c 0 0          # whiteout: deleted in this layer
mkdir -p "$L1/app/data" "$L1/etc"
for w in alpha beta gamma delta alpha beta alpha; do echo "$w"; done > "$L1/app/data/words.txt"
printf "greeting='hello from pare'\n" > "$L1/etc/app.conf"
cat > "$L1/app/run.sh" <<'APP'
#!/bin/sh
# The workload: read the config, count words, list the data dir.
. /etc/app.conf
echo "$greeting"
sort /app/data/words.txt | uniq -c | sort -rn | head -n 3
ls /app/data
APP
chmod 755 "$L1/app/run.sh"
files=$(find "$L3" "$L2" "$L1" -type f | wc -l)
echo "image: 3 layers, $files files"

step "serving the image through pare mount"
"$PARE" mount --profile "$WORK/app.profile" "$L1:$L2:$L3" "$MNT" 2> "$WORK/pare.log" &
PARE_PID=$!
for _ in $(seq 1 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || { cat "$WORK/pare.log"; echo "pare mount did not come up" >&2; exit 1; }
grep -o 'file reads use [^\x1b]*' "$WORK/pare.log" | head -n 1 || true

step "running the workload: chroot rootfs /app/run.sh"
chroot "$MNT" /app/run.sh

step "unmounting (pare flushes the profile)"
umount "$MNT"
wait "$PARE_PID"; PARE_PID=""

step "the profile: first access to every file, in order"
"$PARE" profile show "$WORK/app.profile"
touched=$("$PARE" profile show --json "$WORK/app.profile" | grep -c '"path"')
echo
echo "the workload touched $touched paths of an image with $files files;"
echo "pare compact (next step of the project) keeps only those."
