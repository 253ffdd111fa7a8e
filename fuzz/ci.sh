#!/usr/bin/env bash
# CI smoke run of the fuzz targets: installs the pinned cargo-fuzz if it is missing, builds every
# target (stable Rust, no sanitizer), then runs each one from its seed corpus for a bounded time.
# Fails if any target crashes, panics, hangs or runs out of memory; the reproducer is left in
# fuzz/artifacts/<target>/. New inputs go to fuzz/scratch/<target>/, never to the seed corpora.
#
# FUZZ_SECONDS (default 20) bounds the time per target; FUZZ_RUNS, if set, bounds the number of
# executions instead (the long run: FUZZ_RUNS=10000000). FUZZ_LOG_DIR (default fuzz/scratch)
# receives one <target>.log each. Arguments, if any, name the targets to run (default: all).
# One worker per target, one target at a time: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
FUZZ_LOG_DIR="${FUZZ_LOG_DIR:-fuzz/scratch}"
if [ -n "${FUZZ_RUNS:-}" ]; then
  bound="-runs=$FUZZ_RUNS"
  what="$FUZZ_RUNS runs"
else
  bound="-max_total_time=$FUZZ_SECONDS"
  what="${FUZZ_SECONDS}s"
fi
mkdir -p "$FUZZ_LOG_DIR"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
start=$SECONDS

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

echo "== cargo fuzz build (sanitizer none, release with debug assertions)"
cargo fuzz build --fuzz-dir fuzz -s none
echo "   built in $((SECONDS - start)) s"

# Which dictionary helps which target.
dict_for() {
  case "$1" in
    callback_envelope | callback_message) echo "-dict=fuzz/dict/xml.dict" ;;
    aibot_frame | aibot_session | admin_send) echo "-dict=fuzz/dict/json.dict" ;;
  esac
}

passed=0
failed=0
targets="${*:-$(cargo fuzz list --fuzz-dir fuzz)}"
for target in $targets; do
  echo "== fuzz $target for $what"
  log="$FUZZ_LOG_DIR/$target.log"
  t0=$SECONDS
  # The first corpus directory receives new inputs; the committed seeds are only read.
  mkdir -p "fuzz/scratch/$target"
  # shellcheck disable=SC2046 # the dictionary option is one word or none
  if cargo fuzz run --fuzz-dir fuzz -s none "$target" "fuzz/scratch/$target" "fuzz/corpus/$target" -- \
    "$bound" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    $(dict_for "$target") >"$log" 2>&1; then
    runs=$(grep -a '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "   $runs executions in $((SECONDS - t0)) s, no crash"
    passed=$((passed + 1))
  else
    echo "!! $target failed; its log ($log) ends so, the reproducer is in fuzz/artifacts/$target/"
    tail -60 "$log"
    failed=$((failed + 1))
  fi
done

echo "== fuzz smoke run took $((SECONDS - start)) s"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
