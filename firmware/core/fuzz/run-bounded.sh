#!/usr/bin/env bash
# Runs fuzz targets for a bounded time each, two at a time (CI has 2 cores), and fails
# if any target crashes, hangs, leaks or runs out of memory. Used by `make fuzz`.
#
#   run-bounded.sh BIN_DIR WORK_DIR SECONDS CRATE_DIR:TARGET...
#
# FUZZ_SEED (default 1) fixes libFuzzer's random seed, so a clean checkout explores the
# same inputs first on every run and a CI failure reproduces; 0 picks a fresh seed.
#
# Each target starts from CRATE_DIR/seeds/TARGET (kept in git) and WORK_DIR/corpus/TARGET
# (what earlier runs found; git-ignored); its log goes to WORK_DIR/logs/TARGET.log and a
# crashing input to WORK_DIR/artifacts/TARGET/. The last line of the summary table is
# libFuzzer's final `cov:` (edges) and `ft:` (features) for each target.
set -uo pipefail

bin_dir=$1 work=$2 seconds=$3
shift 3
mkdir -p "$work/logs"

run_one() {
    local crate=${1%%:*} target=${1##*:}
    local corpus=$work/corpus/$target artifacts=$work/artifacts/$target/
    mkdir -p "$corpus" "$artifacts"
    # -timeout: an input running over 10 s is a hang; -rss_limit_mb: a leak or blow-up.
    "$bin_dir/$target" "$corpus" "$crate/seeds/$target" \
        -max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts" -print_final_stats=1 \
        >"$work/logs/$target.log" 2>&1
    echo $? >"$work/logs/$target.rc"
}

running=0
for spec in "$@"; do
    run_one "$spec" &
    running=$((running + 1))
    if [ "$running" -ge 2 ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

failed=0
printf '%-18s %8s %8s %8s %12s %s\n' target cov ft corpus runs result
for spec in "$@"; do
    target=${spec##*:}
    log=$work/logs/$target.log
    rc=$(cat "$work/logs/$target.rc")
    # The last status line: "#N  DONE   cov: C ft: F corp: K/S ..." (or the last pulse).
    stats=$(grep -E '^#[0-9]+' "$log" | tail -1)
    runs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$stats")
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$stats")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$stats")
    corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$stats")
    result=ok
    if [ "$rc" != 0 ]; then
        result="FAILED (exit $rc): see $log"
        failed=1
    fi
    printf '%-18s %8s %8s %8s %12s %s\n' "$target" "${cov:--}" "${ft:--}" "${corp:--}" "${runs:--}" "$result"
done
if [ "$failed" != 0 ]; then
    echo
    for spec in "$@"; do
        target=${spec##*:}
        if [ "$(cat "$work/logs/$target.rc")" != 0 ]; then
            echo "---- $target: the failure (input saved under $work/artifacts/$target/)"
            grep -E -A25 'panicked|ERROR: libFuzzer|ERROR: AddressSanitizer|==ERROR' "$work/logs/$target.log" | head -40
        fi
    done
    exit 1
fi
