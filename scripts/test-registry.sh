#!/bin/sh
# A Docker registry holding the test images (scripts/test-images.sh), served on loopback inside
# a test's own network namespace, so a nested dockerd there can `docker pull
# 127.0.0.1:PORT/ci/NAME:1` with nothing leaving the machine. Debian's docker-registry
# (distribution 2.8, /usr/bin/docker-registry serve CONFIG), installed on first use.
#
#   sh scripts/test-registry.sh fill
#       Makes (once per set of images and this script) a registry storage directory under the
#       image cache holding ci/dind:1, ci/job:1, ci/busybox:1 and ci/docker-cli:1: pushes them
#       from the test engine (scripts/test-engine.sh) to a registry of its own on the host's
#       127.0.0.1 and a free port, stopped afterwards. Prints REGISTRY_DIR=... and one
#       IMAGE=ci/NAME:1 line per image.
#   sh scripts/test-registry.sh serve NETNS_PID PORT [REGISTRY_DIR]
#       Runs a read-only registry over REGISTRY_DIR (default: what `fill` makes) in the network
#       namespace of process NETNS_PID, listening on 127.0.0.1:PORT there only, in the
#       background; prints its pid once /v2/ answers from inside that namespace (10 s at most).
#       Its storage is bind-mounted read-only in a mount namespace of its own, so any number of
#       them may serve one directory at once.
#   sh scripts/test-registry.sh stop PID
#       Stops a registry `serve` started (SIGTERM, then SIGKILL after 5 s) and removes its
#       config and log.
#
# Every registry listens on 127.0.0.1 only. Needs root. DIND_INJECTOR_IMAGE_CACHE moves the
# cache (default /var/cache/dind-injector/images).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
self="$here/$(basename "$0")"
cache=${DIND_INJECTOR_IMAGE_CACHE:-/var/cache/dind-injector/images}
registry=/usr/bin/docker-registry
say() { echo "test-registry: $*" >&2; }
die() { say "$*"; exit 1; }

need_root() {
	[ "$(id -u)" = 0 ] || die "needs root (apt-get, nsenter, mount)"
}

ensure_registry() {
	command -v docker-registry >/dev/null 2>&1 && return 0
	need_root
	say "installing Debian's docker-registry"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
	# The package's own service (/etc/docker/registry/config.yml) listens on :5000, every
	# interface, and is enabled at boot: it is disabled, and stopped where an init system
	# started it (a container's policy-rc.d usually keeps it from starting at all).
	deb-systemd-helper disable docker-registry.service >/dev/null 2>&1 || :
	update-rc.d docker-registry disable >/dev/null 2>&1 || :
	if [ -d /run/systemd/system ]; then
		systemctl stop docker-registry.service >/dev/null 2>&1 || :
	elif [ -s /var/run/docker-registry.pid ]; then
		/etc/init.d/docker-registry stop >/dev/null 2>&1 || :
	fi
	command -v docker-registry >/dev/null 2>&1 || die "docker-registry did not install"
}

# The registry reads REGISTRY_* variables over its config file: none of the caller's may move
# its address or storage.
clean_env() {
	for v in $(env | sed -n 's/^\(REGISTRY_[A-Za-z0-9_]*\)=.*/\1/p'); do
		unset "$v"
	done
}

# config FILE ROOTDIR ADDR READONLY
config() {
	cat >"$1" <<EOF
version: 0.1
log:
  level: info
  fields:
    service: test-registry
storage:
  filesystem:
    rootdirectory: $2
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: false
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: $4
http:
  addr: $3
  headers:
    X-Content-Type-Options: [nosniff]
EOF
}

# A port nothing on the host's loopback listens on.
free_port() {
	i=0
	while [ "$i" -lt 50 ]; do
		p=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
		[ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] || { echo "$p"; return 0; }
		i=$((i + 1))
	done
	die "no free port found"
}

# Whether process $1 runs (a child that died stays a zombie, which kill -0 still finds).
alive() {
	[ -e "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Fetches a registry URL (loopback only, never through a proxy).
fetch() {
	curl -fsS --noproxy '*' --max-time 2 "$@"
}

fill() {
	need_root
	ensure_registry
	images=$(sh "$here/test-images.sh")
	sock=$(sh "$here/test-engine.sh" start)
	export DOCKER_HOST="unix://$sock"
	ids=""
	for line in $images; do
		name=${line%%=*}
		ids="$ids $name=$(docker image inspect -f '{{.Id}}' "${line#*=}")"
	done
	key=$( (echo "$ids"; cat "$self") | sha256sum | cut -c1-16)
	dir="$cache/registry-$key"
	if [ ! -s "$dir/images.txt" ]; then
		build "$dir"
	fi
	echo "REGISTRY_DIR=$dir"
	sed 's/^/IMAGE=/' "$dir/images.txt"
}

build() {
	dir=$1
	started=$(date +%s)
	mkdir -p "$cache"
	work="$dir.tmp.$$"
	port=$(free_port)
	pid=""
	pushed=""
	cleanup() {
		[ -z "$pid" ] || { kill -TERM "$pid" 2>/dev/null || :; wait "$pid" 2>/dev/null || :; }
		for t in $pushed; do docker rmi "$t" >/dev/null 2>&1 || :; done
		rm -rf "$work" "$work.run"
	}
	trap cleanup EXIT INT TERM
	mkdir -p "$work/storage" "$work.run"
	config "$work.run/config.yml" "$work/storage" "127.0.0.1:$port" false
	clean_env
	log="$work.run/registry.log"
	"$registry" serve "$work.run/config.yml" </dev/null >"$log" 2>&1 &
	pid=$!
	i=0
	until ss -Hltnp "sport = :$port" | grep -q "pid=$pid," && fetch -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; do
		i=$((i + 1))
		if ! alive "$pid" || [ "$i" -ge 100 ]; then
			say "the registry on 127.0.0.1:$port did not answer; its log:"
			tail -n 30 "$log" >&2
			exit 1
		fi
		sleep 0.1
	done
	say "pushing the test images to 127.0.0.1:$port (storage $dir)"
	: >"$work/images.txt"
	for line in $images; do
		name=${line%%=*}
		tag="127.0.0.1:$port/ci/$name:1"
		docker tag "${line#*=}" "$tag"
		pushed="$pushed $tag"
		docker push -q "$tag" >/dev/null 2>"$work.run/push.err" || {
			say "docker push $tag failed:"
			cat "$work.run/push.err" >&2
			tail -n 30 "$log" >&2
			exit 1
		}
		fetch -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
			"http://127.0.0.1:$port/v2/ci/$name/manifests/1" || die "ci/$name:1 is not in the registry after the push"
		echo "ci/$name:1" >>"$work/images.txt"
	done
	kill -TERM "$pid" 2>/dev/null || :
	wait "$pid" 2>/dev/null || :
	pid=""
	# Finished uploads leave empty _uploads directories behind; a read-only server needs none.
	find "$work/storage" -depth -type d -name _uploads -exec rm -rf {} + 2>/dev/null || :
	if [ -s "$dir/images.txt" ]; then
		: # another fill made it meanwhile
	else
		rm -rf "$dir"
		mv "$work" "$dir"
	fi
	# Earlier image sets' storage is not needed any more, unless a registry still serves it.
	if ! pgrep -x docker-registry >/dev/null 2>&1; then
		for old in "$cache"/registry-*; do
			[ "$old" = "$dir" ] || [ ! -d "$old" ] || rm -rf "$old"
		done
	fi
	say "registry storage ready in $(($(date +%s) - started))s ($(du -sh "$dir" | cut -f1))"
}

serve() {
	[ $# -ge 2 ] || usage
	nspid=$1 port=$2
	case "$nspid$port" in *[!0-9]* | "") usage ;; esac
	need_root
	ensure_registry
	[ -e "/proc/$nspid/ns/net" ] || die "no process $nspid"
	# Another listener there would answer the readiness check in this registry's place.
	if [ -n "$(nsenter -t "$nspid" -n ss -Hltn "sport = :$port")" ]; then
		die "something already listens on port $port in the network namespace of $nspid"
	fi
	if [ $# -ge 3 ]; then
		dir=$3
	else
		dir=$(fill | sed -n 's/^REGISTRY_DIR=//p')
	fi
	[ -d "$dir/storage/docker/registry/v2" ] || die "$dir is no registry storage of fill"
	run=$(mktemp -d "${TMPDIR:-/tmp}/test-registry.XXXXXX")
	config "$run/config.yml" "$dir/storage" "127.0.0.1:$port" true
	log="$run/registry.log"
	clean_env
	# setsid: a session of its own, so it outlives the caller; nsenter, unshare, sh and the
	# registry exec one another, so $! is the registry's pid. Its mount namespace of its own
	# holds the storage read-only.
	# shellcheck disable=SC2016 # expanded by the inner sh, from its arguments
	setsid nsenter -t "$nspid" -n unshare -m --propagation private sh -c '
		mount --bind -o ro "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && exec "$2" serve "$3"' \
		sh "$dir/storage" "$registry" "$run/config.yml" </dev/null >"$log" 2>&1 &
	pid=$!
	i=0
	until nsenter -t "$nspid" -n ss -Hltnp "sport = :$port" | grep -q "pid=$pid," &&
		nsenter -t "$nspid" -n curl -fsS --noproxy '*' --max-time 1 -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; do
		i=$((i + 1))
		if ! alive "$pid" || [ "$i" -ge 100 ]; then
			kill -KILL "$pid" 2>/dev/null || :
			say "the registry did not answer on 127.0.0.1:$port in the network namespace of $nspid within 10s" \
				"(a namespace whose lo is down has no 127.0.0.1); its log:"
			tail -n 30 "$log" >&2
			rm -rf "$run"
			exit 1
		fi
		sleep 0.1
	done
	[ "$(readlink "/proc/$pid/exe")" = "$registry" ] || die "pid $pid is not the registry (log: $log)"
	say "serving $dir on 127.0.0.1:$port in the network namespace of $nspid (log: $log)"
	echo "$pid"
}

stop() {
	[ $# -ge 1 ] || usage
	pid=$1
	case "$pid" in *[!0-9]* | "") usage ;; esac
	[ -e "/proc/$pid" ] || return 0
	[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$registry" ] || die "pid $pid is not a docker-registry"
	cfg=$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n '3p')
	kill -TERM "$pid" 2>/dev/null || :
	i=0
	while alive "$pid" && [ "$i" -lt 50 ]; do
		i=$((i + 1))
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || :
	case "$cfg" in "${TMPDIR:-/tmp}"/test-registry.*/config.yml) rm -rf "$(dirname "$cfg")" ;; esac
}

usage() {
	echo "usage: $0 fill | serve NETNS_PID PORT [REGISTRY_DIR] | stop PID" >&2
	exit 2
}

case "${1:-}" in
fill) fill ;;
serve) shift; serve "$@" ;;
stop) shift; stop "$@" ;;
*) usage ;;
esac
