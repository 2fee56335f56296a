#!/usr/bin/env python3
"""Merges the test images' copies of their FROM image: a regular file at
the same path in two images, with the same content, size, mode, owner,
modification time and extended attributes, becomes one hard-linked file.

An image (IMAGES/NAME/rootfs) starts as a copy of the image it is built
FROM, so about half the cache is such copies. Only files at the same path
in *different* images are linked, never two files of one image: a later
build that copies an image (cp -a keeps the links inside what it copies)
and changes one of its files in place cannot change another of its files.
Pods only read an image (it is their overlay's lower layer), so nothing
is run while anything is mounted from the images.

Usage: dedup-images.py IMAGES_DIR
"""

import filecmp
import os
import stat
import sys


def xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return None
    return sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names)


def in_use(root):
    """Whether a mount (a pod's overlay, say) uses something under root."""
    real = os.path.realpath(root)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return any(real in line for line in f)


def main(root):
    if not os.path.isdir(root):
        print(f"dedup-images: no {root}")
        return 0
    if in_use(root):
        print(f"dedup-images: something is mounted from {root} (a pod?); left as it is")
        return 0
    images = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "rootfs")))
    first = {}
    linked = saved = failed = 0
    for image in images:
        base = os.path.join(root, image, "rootfs")
        for dirpath, _dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            for name in files:
                path = os.path.join(dirpath, name)
                if name.endswith(".pinacle-dedup"):
                    # left by a run that was killed: the original is beside it
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                    continue
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                    continue
                key = (os.path.join(rel, name), st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
                seen = first.get(key)
                if seen is None:
                    first[key] = path
                    continue
                tmp = path + ".pinacle-dedup"
                try:
                    other = os.lstat(seen)
                    if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino) or other.st_dev != st.st_dev:
                        continue
                    if xattrs(seen) != xattrs(path) or not filecmp.cmp(seen, path, shallow=False):
                        continue
                    if os.path.lexists(tmp):
                        os.unlink(tmp)
                    os.link(seen, tmp)
                    os.replace(tmp, path)
                    linked += 1
                    saved += st.st_size
                except OSError as e:
                    # this file stays as it is; the cache is still whole
                    failed += 1
                    if failed <= 5:
                        print(f"dedup-images: {path}: {e}", file=sys.stderr)
                    if os.path.lexists(tmp):
                        os.unlink(tmp)
    print(f"dedup-images: {linked} files linked ({saved / 2**30:.2f} GiB of copies), {failed} left as they were, {len(images)} images")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
