#!/bin/sh
# `make image`: the injector's image for this machine's architecture, from the Dockerfile,
# without pulling anything, and target/image/dind-injector.tar (an OCI image layout that
# `docker load` and `ctr images import` both take).
#
#   1. the fully static binary: cargo build --release --target <arch>-unknown-linux-musl
#      (musl-gcc compiles ring's C; the musl target is added with rustup when missing);
#   2. the build context target/image/context: linux-<arch>/dind-injector, passwd, group;
#   3. docker build (the classic builder: no frontend image to pull) on $DOCKER_HOST, or on the
#      test engine (scripts/test-engine.sh) when DOCKER_HOST is not set;
#   4. docker save, rewritten as an OCI layout with a docker manifest.json (scripts/oci-archive.py).
#
# Prints the archive, the image reference, its digest and its size.
set -eu
cd "$(dirname "$0")/.."
case "$(uname -m)" in
x86_64) arch=amd64 triple=x86_64-unknown-linux-musl ;;
aarch64 | arm64) arch=arm64 triple=aarch64-unknown-linux-musl ;;
*) echo "image: no musl target for $(uname -m)" >&2; exit 1 ;;
esac
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
ref="ghcr.io/dind-injector/dind-injector:$version"
out=target/image

if ! rustup target list --installed | grep -qx "$triple"; then
	rustup target add "$triple"
fi
command -v musl-gcc >/dev/null 2>&1 || {
	echo "image: musl-gcc is missing (make test-deps installs Debian's musl-tools)" >&2
	exit 1
}
cc_var="CC_$(echo "$triple" | tr - _)"
env "$cc_var=musl-gcc" cargo build --locked --release --target "$triple" --bin dind-injector
binary="target/$triple/release/dind-injector"
# Static: no interpreter, no dynamic section.
if readelf -l "$binary" 2>/dev/null | grep -q 'INTERP'; then
	echo "image: $binary is not static" >&2
	exit 1
fi

rm -rf "$out/context"
mkdir -p "$out/context/linux-$arch"
# Symbols are for debugging a build, not for running it: strip them from the image's copy.
strip -o "$out/context/linux-$arch/dind-injector" "$binary"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$out/context/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$out/context/group"

if [ -z "${DOCKER_HOST:-}" ]; then
	DOCKER_HOST="unix://$(sh scripts/test-engine.sh start)"
	export DOCKER_HOST
fi
DOCKER_BUILDKIT=0 docker build --quiet --build-arg "TARGETARCH=$arch" --build-arg "VERSION=$version" -t "$ref" -f Dockerfile "$out/context" >/dev/null
docker save -o "$out/docker-save.tar" "$ref"
python3 scripts/oci-archive.py "$out/docker-save.tar" "$out/dind-injector.tar" "$ref"
rm -f "$out/docker-save.tar"
size=$(docker image inspect --format '{{.Size}}' "$ref")
echo "image: $out/dind-injector.tar ($ref, $(python3 -c "import sys; print(f'{int(sys.argv[1]) / 1048576:.1f}')" "$size") MiB)"
