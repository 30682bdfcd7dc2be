#!/bin/sh
# Builds the images the pod-shaped job tests (tests/jobs.rs) run, offline from Debian's packages
# (debootstrap; nothing comes from Docker Hub), into the test engine (scripts/test-engine.sh):
#
#   dind        the sidecar's image: Debian + docker.io and docker-cli + iptables + openssl + ca-certificates
#               + e2fsprogs (docker:dind has it too; the Kata sidecar's loop disk needs mkfs.ext4),
#               with scripts/test-images/dockerd-entrypoint.sh and dind on PATH
#   job         a CI job's image: Debian + docker-cli + docker-compose (v2, also a CLI plugin) + curl +
#               busybox-static + redis and xz (inside the nested daemon it is also `ci-db`, the
#               memory test's database and build base)
#   busybox     FROM scratch with a static busybox: what job scripts run inside the nested daemon
#   docker-cli  busybox + the docker CLI and the libraries it links: the "scanner" image that
#               talks to the daemon through a bind-mounted /var/run/docker.sock
#
# Each is tagged dind-injector-test/NAME:KEY, KEY a hash of this recipe (this script and
# scripts/test-images/*), and built only when the engine does not have that tag yet; the root
# file systems are also kept as tarballs under the cache directory, so an emptied engine is
# refilled without debootstrap. Prints NAME=IMAGE lines. Needs root, debootstrap and the engine.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${DIND_INJECTOR_IMAGE_CACHE:-/var/cache/dind-injector/images}
# trixie: its docker.io (26.1) is a dockerd as recent as the docker:dind images the injector is
# used with; bookworm's 20.10 still writes /etc/docker/key.json and cannot start with the
# read-only daemon.json ConfigMap mounted there.
suite=${DIND_INJECTOR_TEST_SUITE:-trixie}
mirror=${DIND_INJECTOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
sock=$(sh "$here/test-engine.sh" start)
export DOCKER_HOST="unix://$sock"

key=$( (echo "$suite"; cat "$0" "$here"/test-images/*) | sha256sum | cut -c1-16)
repo=dind-injector-test
have() { docker image inspect "$1" >/dev/null 2>&1; }

all_present=1
for name in dind job busybox docker-cli; do
	have "$repo/$name:$key" || all_present=0
done
if [ "$all_present" = 1 ]; then
	for name in dind job busybox docker-cli; do echo "$name=$repo/$name:$key"; done
	exit 0
fi

mkdir -p "$cache"
work="$cache/build-$key.$$"
cleanup() {
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

started=$(date +%s)
log="$cache/build-$key.log"
: >"$log"
say() { echo "test-images: $*" >&2; }

# The Debian root file systems, built once per recipe.
if [ ! -s "$cache/dind-$key.tar" ] || [ ! -s "$cache/job-$key.tar" ]; then
	command -v debootstrap >/dev/null 2>&1 || { say "debootstrap is not installed (make test-deps installs it)"; exit 1; }
	mkdir -p "$work"
	say "debootstrap $suite for the dind image (a few minutes, once; log: $log)"
	debootstrap --variant=minbase \
		--include=docker.io,docker-cli,iptables,openssl,ca-certificates,procps,xz-utils,pigz,e2fsprogs \
		"$suite" "$work/dind" "$mirror" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
	install -m 0755 "$here/test-images/dockerd-entrypoint.sh" "$work/dind/usr/local/bin/dockerd-entrypoint.sh"
	install -m 0755 "$here/test-images/dind" "$work/dind/usr/local/bin/dind"
	# The legacy iptables backend as a PATH farm the entrypoint can put first.
	mkdir -p "$work/dind/usr/local/lib/iptables-legacy"
	for f in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
		ln -s "/usr/sbin/$(echo "$f" | sed 's/tables/tables-legacy/')" "$work/dind/usr/local/lib/iptables-legacy/$f"
	done
	rm -rf "$work/dind/var/cache/apt/archives/"*.deb "$work/dind/var/lib/apt/lists/"*

	say "the job image: the same base plus docker-compose, curl, busybox-static, and redis and xz for the memory test's database and build"
	debootstrap --variant=minbase \
		--include=docker-cli,docker-compose,curl,ca-certificates,busybox-static,procps,redis-server,redis-tools,xz-utils \
		"$suite" "$work/job" "$mirror" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
	rm -rf "$work/job/var/cache/apt/archives/"*.deb "$work/job/var/lib/apt/lists/"*

	tar -C "$work/dind" --numeric-owner -cf "$cache/dind-$key.tar.$$" . && mv "$cache/dind-$key.tar.$$" "$cache/dind-$key.tar"
	tar -C "$work/job" --numeric-owner -cf "$cache/job-$key.tar.$$" . && mv "$cache/job-$key.tar.$$" "$cache/job-$key.tar"
fi

# The two small images for the nested daemon, cut from the job root file system.
if [ ! -s "$cache/busybox-$key.tar" ] || [ ! -s "$cache/docker-cli-$key.tar" ]; then
	rm -rf "$work/small" && mkdir -p "$work/small/job"
	for f in ./usr/bin/busybox ./bin/busybox ./usr/bin/docker ./bin/docker; do
		tar -C "$work/small/job" -xf "$cache/job-$key.tar" "$f" 2>/dev/null || :
	done
	bb=$(ls "$work/small/job/bin/busybox" "$work/small/job/usr/bin/busybox" 2>/dev/null | head -n 1)
	[ -n "$bb" ] || { say "no busybox in the job image"; exit 1; }
	b="$work/small/busybox"
	mkdir -p "$b/bin" "$b/etc" "$b/tmp" "$b/www" "$b/root"
	cp "$bb" "$b/bin/busybox"
	for applet in $("$b/bin/busybox" --list); do
		[ "$applet" = busybox ] || ln -sf busybox "$b/bin/$applet"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$b/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$b/etc/group"
	chmod 1777 "$b/tmp"
	tar -C "$b" --numeric-owner -cf "$cache/busybox-$key.tar.$$" . && mv "$cache/busybox-$key.tar.$$" "$cache/busybox-$key.tar"

	c="$work/small/docker-cli"
	cp -a "$b" "$c"
	mkdir -p "$c/usr/bin"
	cp "$work/small/job/usr/bin/docker" "$c/usr/bin/docker"
	# The libraries it links, resolved inside the job root file system (not the host's).
	jobfs="$work/job"
	if [ ! -d "$jobfs/usr/bin" ]; then
		jobfs="$work/small/jobfs"
		mkdir -p "$jobfs"
		tar -C "$jobfs" -xf "$cache/job-$key.tar"
	fi
	for lib in $(chroot "$jobfs" ldd /usr/bin/docker | sed -n 's/.*=> *\(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) .*/\1/p'); do
		real=$(chroot "$jobfs" readlink -f "$lib")
		mkdir -p "$c$(dirname "$lib")"
		cp "$jobfs$real" "$c$lib"
	done
	tar -C "$c" --numeric-owner -cf "$cache/docker-cli-$key.tar.$$" . && mv "$cache/docker-cli-$key.tar.$$" "$cache/docker-cli-$key.tar"
fi

docker import --change 'ENTRYPOINT ["dockerd-entrypoint.sh"]' --change 'CMD []' \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	"$cache/dind-$key.tar" "$repo/dind:$key" >/dev/null
docker import --change 'CMD ["/bin/sh"]' \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	"$cache/job-$key.tar" "$repo/job:$key" >/dev/null
docker import --change 'CMD ["sh"]' --change 'ENV PATH=/bin' "$cache/busybox-$key.tar" "$repo/busybox:$key" >/dev/null
docker import --change 'CMD ["docker", "version"]' --change 'ENV PATH=/usr/bin:/bin' "$cache/docker-cli-$key.tar" "$repo/docker-cli:$key" >/dev/null
# Earlier recipes' images and root file systems are not needed any more.
docker images --format '{{.Repository}}:{{.Tag}}' | grep "^$repo/" | grep -v ":$key\$" | xargs -r docker rmi >/dev/null 2>&1 || :
docker image prune -f >/dev/null 2>&1 || :
for old in "$cache"/build-*.log; do
	case "$old" in *"-$key.log") ;; *) rm -f "$old" ;; esac
done
for old in "$cache"/*.tar; do
	case "$old" in *"-$key.tar") ;; *) rm -f "$old" ;; esac
done
say "images ready in $(($(date +%s) - started))s"
for name in dind job busybox docker-cli; do echo "$name=$repo/$name:$key"; done
