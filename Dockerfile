# The peerlab node image: one static binary and nothing else.
#
# Build offline, with no registry, right after a release build:
#   cargo build --release && docker build -t peerlab:0.1.0 .
# `peerlab image build` builds the same image from a running peerlab executable.
# No `# syntax=` line on purpose: it makes BuildKit pull a frontend image.
FROM scratch

# Where the source lives; pass --build-arg SOURCE_URL=... (peerlab image build passes
# the crate's `repository`), since the image itself cannot know.
ARG SOURCE_URL=""

LABEL org.opencontainers.image.title="peerlab" \
      org.opencontainers.image.description="peerlab p2p node: peer protocol on 7070, status socket (HTTP JSON) on 7071" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

COPY target/x86_64-unknown-linux-gnu/release/peerlab /peerlab

# 7070: peer protocol. 7071: status socket (GET /health, /ready, /status).
EXPOSE 7070 7071

# A scratch image has no shell, so the binary answers its own probe (exec form).
# Healthy means joined (GET /ready), which is what dependants wait for.
HEALTHCHECK --interval=1s --timeout=2s --start-period=10s --retries=3 \
    CMD ["/peerlab", "health"]

ENTRYPOINT ["/peerlab", "node"]
