#!/usr/bin/env bash
# What a youki pod's user namespace costs at start: `pinacle-youki
# mount-rootfs` (a user namespace, id-mapped clones of the image and the
# pod's disk, the overlay made inside the namespace) beside the plain
# overlay mount gVisor pods get, on the same busybox image; and the
# reference: youki's own create+start+delete, 112 ms in its README.
#
#   bash scripts/bench/userns-rootfs.sh [RUNS]     (as root, after a build)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-50}
youki=${PINACLE_YOUKI:-target/debug/pinacle-youki}
[ -x "$youki" ] || { echo "build first: cargo build -p pinacle-youki" >&2; exit 1; }
image=${PINACLE_TEST_IMAGES:-/var/tmp/pinacle-test/images}/busybox/rootfs
[ -d "$image" ] || { echo "no busybox image at $image: target/debug/pinacle image build busybox --data-dir ${image%/images/*}" >&2; exit 1; }
dir=$(mktemp -d /var/tmp/pinacle-bench-rootfs.XXXXXX)
cleanup() { for m in $(grep -o " $dir[^ ]*" /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
mkdir -p "$dir/disk/upper" "$dir/disk/work" "$dir/rootfs"

stats() { sort -n | awk '{a[NR]=$1} END {printf "p50 %.1f ms  p90 %.1f ms  max %.1f ms  (%d runs)\n", a[int((NR+1)/2)]/1000, a[int(NR*0.9)]/1000, a[NR]/1000, NR}'; }

userns() {
  for _ in $(seq "$runs"); do
    s=$(date +%s%N)
    "$youki" mount-rootfs --layers "$dir/idmap" --source "image=$image" --source "disk=$dir/disk" \
      --lower image --upper disk/upper --work disk/work --target "$dir/rootfs" --host-id 1000000000 --count 65536
    e=$(date +%s%N)
    echo $(((e - s) / 1000))
    umount "$dir/rootfs" "$dir/idmap/image" "$dir/idmap/disk"
  done
}
plain() {
  for _ in $(seq "$runs"); do
    s=$(date +%s%N)
    mount -t overlay overlay -o "lowerdir=$image,upperdir=$dir/disk/upper,workdir=$dir/disk/work,nosuid,nodev" "$dir/rootfs"
    e=$(date +%s%N)
    echo $(((e - s) / 1000))
    umount "$dir/rootfs"
  done
}
echo "root file system of a pod, $(nproc) CPUs, $(uname -r)"
printf '%-46s %s\n' "youki pod (user namespace, id-mapped layers):" "$(userns | stats)"
printf '%-46s %s\n' "gVisor pod (plain overlay, mount(8)):" "$(plain | stats)"
printf '%-46s %s\n' "reference: youki create+start+delete (README):" "112 ms"
