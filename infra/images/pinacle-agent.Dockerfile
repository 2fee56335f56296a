# The host agent image: `pinacle agent`, which runs pods as gVisor (runsc) or
# libcontainer (pinacle-youki) sandboxes on its node. It runs as root in a
# privileged container on the host network (see the chart's DaemonSet).
#
# Build from the repository root after `cargo build --release` and
# `bash scripts/build-supervisor.sh` on Debian 12:
#
#   docker build -f infra/images/pinacle-agent.Dockerfile -t pinacle-agent .
#
# pinacle-agent.Dockerfile.dockerignore keeps the context to the binaries.
FROM debian:12-slim

# What the agent runs on the node:
#   busybox-static   the busybox image and in-pod tools
#   debootstrap      the Debian-based images (base and the templates')
#   iproute2         per-pod network namespaces, bridges and veths
#   nftables         pods' NAT and isolation rules
#   buildah          Dockerfile builds (RUN steps in gVisor via pinacle-runsc-build)
#   git              repositories cloned into pods
#   e2fsprogs        mkfs.ext4 for pods' disk images
#   util-linux mount losetup, mount
#   kmod             loading overlay, loop and nf_tables modules when missing
#   libseccomp2      pinacle-youki links against it
#   ca-certificates  HTTPS to registries, the control plane, Debian mirrors
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      busybox-static debootstrap iproute2 nftables buildah git e2fsprogs \
      util-linux mount kmod libseccomp2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# gVisor: Debian 13's runsc (release 20240729), pinned, exactly as
# scripts/setup.sh installs it. Debian 12's (20221219) lacks statx, so GNU
# ls/stat/find fail in every pod. The .deb comes from Debian's archive
# through a sources list used for this one download only (apt checks the
# archive's signature, we check the hash); runsc is a static binary, so the
# image's libc is untouched.
ARG RUNSC_VERSION=0.0~20240729.0-4+b7
ARG RUNSC_SHA256=3c25a5130dfac2f71237d5baad56ac86a255de87a0400f11b36a555156dc325a
RUN set -eu; \
    apt_dir=$(mktemp -d); \
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"; \
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$apt_dir/sources.list"; \
    apt_opts="-o Dir::Etc::sourcelist=$apt_dir/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::Lists=$apt_dir/lists -o Dir::Cache::Archives=$apt_dir/archives -o APT::Sandbox::User=root"; \
    apt-get $apt_opts update -qq; \
    (cd "$apt_dir" && apt-get $apt_opts download -qq "runsc=$RUNSC_VERSION"); \
    deb=$(ls "$apt_dir"/runsc_*.deb); \
    echo "$RUNSC_SHA256  $deb" | sha256sum -c --quiet; \
    dpkg -i "$deb"; \
    apt-mark hold runsc; \
    rm -rf "$apt_dir"; \
    runsc --version | grep -q '^runsc version 0.0~20240729'

# The agent finds its helpers beside itself: pinacle-youki (libcontainer),
# pinacle-runsc-build (buildah's runtime) and the static (musl)
# pinacle-supervisor that every pod starts under.
COPY target/release/pinacle target/release/pinacle-youki target/release/pinacle-runsc-build /usr/local/bin/
COPY target/x86_64-unknown-linux-musl/release/pinacle-supervisor /usr/local/bin/

ENV PINACLE_DATA_DIR=/var/lib/pinacle
ENTRYPOINT ["/usr/local/bin/pinacle"]
CMD ["agent"]
