#!/bin/sh
# Runs the coverage-guided fuzz targets in fuzz/ (libFuzzer through libfuzzer-sys) on the stable
# toolchain: the SanitizerCoverage flags cargo-fuzz passes, without a sanitizer, so no nightly
# and no cargo-fuzz install are needed (`cargo fuzz run -s none TARGET` builds the same thing).
#
#   scripts/fuzz.sh SECONDS [TARGET...]     each target for SECONDS (default: all three)
#
# Inputs found are kept in fuzz/corpus/TARGET (not committed), seeded from the review fixtures
# and fuzz/seeds/ (fuzz/make_seeds.py). A crash fails the run with the input in
# fuzz/artifacts/TARGET/: copy it to tests/fuzz_regressions/TARGET/, where
# `cargo test --test fuzz_regressions` replays it.
#
# Not --locked: fuzz/Cargo.lock starts from the injector's and takes in its new dependencies.
set -eu
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-decode_review mutate validate}
cd "$(dirname "$0")/../fuzz"

# libFuzzer itself is C++, built by libfuzzer-sys.
if ! command -v c++ >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		echo "make fuzz needs a C++ compiler: apt-get install g++" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi

# An explicit --target keeps these flags off build scripts and proc macros (as cargo-fuzz does).
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions -Coverflow-checks" \
	cargo build --release --bins --target "$host"

status=0
for target in $targets; do
	mkdir -p "corpus/$target" "artifacts/$target"
	echo "fuzz: $target for ${seconds}s"
	# -rss_limit_mb: a review is bounded by server.maxBodyBytes; memory growth is a finding.
	# FUZZ_SEED fixes libFuzzer's random choices (make fuzz-ci sets it, so CI runs are repeatable).
	if ! "target/$host/release/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 \
		-seed="${FUZZ_SEED:-0}" \
		-dict=json.dict -print_final_stats=1 \
		-artifact_prefix="artifacts/$target/" \
		"corpus/$target" ../tests/fixtures/reviews seeds 2>"artifacts/$target/log.txt"; then
		tail -n 40 "artifacts/$target/log.txt" >&2
		echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/ (copy it to tests/fuzz_regressions/$target/)" >&2
		status=1
	else
		grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "artifacts/$target/log.txt" || tail -n 3 "artifacts/$target/log.txt"
		echo "fuzz: $target ok, corpus $(ls "corpus/$target" | wc -l) inputs"
	fi
done
exit $status
