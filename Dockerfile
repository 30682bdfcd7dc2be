# syntax=docker/dockerfile:1
# dind-injector: one fully static binary (musl) in an empty image, run as 65532. Nothing is
# pulled: there is no base image, so the image builds offline and holds exactly what the
# server uses (the binary, and /etc/passwd and /etc/group naming its user).
#
# The binary is built before, outside the image (reproducible, cached, cross-compiled in CI):
#   make image                                   # this machine's architecture, writes target/image/dind-injector.tar
#   docker buildx build --platform linux/amd64,linux/arm64 -f Dockerfile target/image/context   # what CI does
# The build context holds linux-<arch>/dind-injector for each platform (scripts/image.sh
# stages it; .github/workflows/release.yml does the same for both architectures).

FROM scratch
ARG TARGETARCH
ARG VERSION=dev
LABEL org.opencontainers.image.title="dind-injector" \
      org.opencontainers.image.description="Kubernetes admission webhook injecting a secure Docker-in-Docker sidecar into CI pods" \
      org.opencontainers.image.source="https://github.com/dind-injector/dind-injector" \
      org.opencontainers.image.version="${VERSION}"
COPY passwd group /etc/
COPY linux-${TARGETARCH}/dind-injector /dind-injector
USER 65532:65532
# Webhooks (HTTPS) and /healthz, /readyz, /metrics (plain HTTP).
EXPOSE 8443 8080
ENTRYPOINT ["/dind-injector"]
CMD ["serve"]
