# The API server image: `pinacle server` (REST API, web app, pod proxy, SSH
# gateway). It needs no privileges and no sandbox runtime.
#
# Build from the repository root after `cargo build --release` on Debian 12
# (the binary links against the build machine's glibc):
#
#   docker build -f infra/images/pinacle-server.Dockerfile -t pinacle-server .
#
# pinacle-server.Dockerfile.dockerignore keeps the context to the binary.
FROM debian:12-slim

# ca-certificates: HTTPS to GitHub (OAuth), ACME directories, registries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# An unprivileged user with a fixed id (the chart's runAsUser).
RUN groupadd --gid 10001 pinacle \
 && useradd --uid 10001 --gid pinacle --home-dir /var/lib/pinacle \
      --no-create-home --shell /usr/sbin/nologin pinacle \
 && install -d -o pinacle -g pinacle -m 0700 /var/lib/pinacle

COPY target/release/pinacle /usr/local/bin/pinacle

USER 10001:10001
ENV PINACLE_DATA_DIR=/var/lib/pinacle \
    PINACLE_LISTEN=0.0.0.0:7070 \
    PINACLE_PROXY_LISTEN=0.0.0.0:8080 \
    PINACLE_SSH_LISTEN=0.0.0.0:2222
# API and web app, pod proxy (plain HTTP), SSH gateway.
EXPOSE 7070 8080 2222
ENTRYPOINT ["/usr/local/bin/pinacle"]
CMD ["server"]
