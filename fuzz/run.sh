#!/bin/sh
# fuzz/run.sh - build the libFuzzer target on the C core and run it.
#
#   fuzz/run.sh [RUNS]          RUNS executions (default 100000; env RUNS works too)
#   make fuzz RUNS=1000000      the same through the Makefile
#
# Installs clang and its fuzzer/sanitizer runtimes when missing (Debian/Ubuntu,
# needs root), builds fuzz/build/fuzz_reader with
# -fsanitize=fuzzer,address,undefined against the system libjpeg-turbo (only
# csrc/ is instrumented), writes the seed corpus from tests/jpeg_factory into
# fuzz/corpus once, runs on one core and prints executions, crashes and time.
# New corpus units go to fuzz/corpus, crash inputs to fuzz/artifacts/.
# Environment: PY (python with numpy and Pillow, default .venv/bin/python),
# FUZZ_ARGS (extra libFuzzer flags), CLANG (compiler, default clang).
set -eu
cd "$(dirname "$0")/.."
RUNS=${1:-${RUNS:-100000}}
PY=${PY:-.venv/bin/python}
CLANG=${CLANG:-clang}
FUZZ_ARGS=${FUZZ_ARGS:-}

# ---- toolchain ---------------------------------------------------------------
mkdir -p fuzz/build fuzz/artifacts fuzz/corpus
have_fuzzer_rt() {
    printf '%s\n' 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n)' \
        '{ (void)d; (void)n; return 0; }' > fuzz/build/probe.c
    "$CLANG" -fsanitize=fuzzer,address,undefined fuzz/build/probe.c -o fuzz/build/probe \
        >/dev/null 2>&1
}
if ! command -v "$CLANG" >/dev/null 2>&1 || ! have_fuzzer_rt; then
    echo "fuzz: installing clang and libclang-rt-14-dev (libFuzzer, ASan, UBSan runtimes)"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
    else
        echo "fuzz: please install clang with its libFuzzer runtime" \
             "(Debian 12: apt-get install clang libclang-rt-14-dev; needs root)" >&2
        exit 1
    fi
    have_fuzzer_rt || { echo "fuzz: $CLANG cannot link -fsanitize=fuzzer" >&2; exit 1; }
fi
[ -f /usr/include/jpeglib.h ] || [ -n "$(pkg-config --cflags libjpeg 2>/dev/null || true)" ] || {
    echo "fuzz: libjpeg headers missing: run 'make sysdeps' (libjpeg62-turbo-dev)" >&2; exit 1; }

# ---- build -------------------------------------------------------------------
BIN=fuzz/build/fuzz_reader
JPEG_CFLAGS=$(pkg-config --cflags libjpeg 2>/dev/null || true)
JPEG_LIBS=$(pkg-config --libs libjpeg 2>/dev/null || echo -ljpeg)
# shellcheck disable=SC2086
"$CLANG" -g -O1 -fno-omit-frame-pointer -Wno-psabi \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Icsrc $JPEG_CFLAGS fuzz/fuzz_reader.c csrc/jf_read.c csrc/jf_resample.c csrc/jf_cube.c csrc/jf_photo.c \
    $JPEG_LIBS -lm -pthread -o "$BIN"
echo "fuzz: built $BIN"

# ---- seed corpus -------------------------------------------------------------
if [ ! -f fuzz/corpus/seed-baseline-420+eval-exif.jpg ]; then
    "$PY" fuzz/make_corpus.py fuzz/corpus
fi

# ---- run ---------------------------------------------------------------------
LOG=fuzz/build/last-run.log
echo "fuzz: $BIN -runs=$RUNS (log: $LOG)"
start=$(date +%s)
set +e
# one worker, one core; 1 megapixel max in the target itself; a unit slower
# than 30 s or a process over 2 GB counts as a failure
# shellcheck disable=SC2086
ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:allocator_may_return_null=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$BIN" -runs="$RUNS" -timeout=30 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix=fuzz/artifacts/ $FUZZ_ARGS fuzz/corpus > "$LOG" 2>&1
rc=$?
set -e
secs=$(( $(date +%s) - start ))
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOG" | tail -1)
[ -n "$execs" ] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$LOG" | tail -1)
[ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$LOG" | tail -1)   # stopped early
# libFuzzer stops at the first failure and writes it to fuzz/artifacts/
crashes=$(grep -c "Test unit written to" "$LOG" || true)
if [ "$rc" -ne 0 ]; then
    grep -E "ERROR: (Address|Leak)Sanitizer|ERROR: libFuzzer|runtime error:|SUMMARY:" "$LOG" \
        | head -20 || true
    grep -E "Test unit written|interrupted" "$LOG" || true
fi
echo "fuzz: ${execs:-?} executions, $crashes crashes, ${secs} s (exit $rc)"
exit "$rc"
