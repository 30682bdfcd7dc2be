# syntax=docker/dockerfile:1
# dind-injector: a static binary on distroless, non-root.
#   docker build -t ghcr.io/dind-injector/dind-injector:0.1.0 .

FROM rust:1-bookworm AS build
# musl-gcc compiles ring's C and assembly for the musl target; the result is fully static.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# benches/ is listed in Cargo.toml ([[bench]]), so cargo needs it to read the manifest.
COPY benches ./benches
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && env "CC_$(echo "$target" | tr - _)=musl-gcc" cargo build --release --locked --target "$target" \
 && cp "target/$target/release/dind-injector" /dind-injector \
 && /dind-injector version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /dind-injector /dind-injector
USER 65532:65532
# Webhooks (HTTPS) and /healthz, /readyz, /metrics (plain HTTP).
EXPOSE 8443 8080
ENTRYPOINT ["/dind-injector"]
CMD ["serve"]
