# syntax=docker/dockerfile:1
# The flotilla spoke agent (charts/flotilla-spoke runs it).
#
#   docker build -f deploy/docker/spoke.Dockerfile -t flotilla-spoke:0.1.0 .     (from the repo root)
#
# Static: built for the musl target, so the binary needs no libc in the image and
# resolves DNS with musl's own resolver (/etc/resolv.conf). A static glibc build
# (-C target-feature=+crt-static on gnu) would still go through NSS for getaddrinfo,
# which a distroless image does not have. ring's C parts build with musl-gcc.
# Final stage: distroless static, non-root (UID 65532), no shell, no package manager;
# it carries the CA certificates that https fetches verify against.
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# x86_64 by default; on an arm64 build host, --build-arg TARGET=aarch64-unknown-linux-musl.
ARG TARGET=x86_64-unknown-linux-musl
RUN rustup target add ${TARGET}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target ${TARGET} -p flotilla-spoke --bin flotilla-spoke \
 && mkdir /out && for b in flotilla-spoke; do cp target/${TARGET}/release/$b /out/; done

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/flotilla-spoke"]
