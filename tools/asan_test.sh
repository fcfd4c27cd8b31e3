#!/usr/bin/env bash
# Sanitizer job: builds the kernels and longcat._C with -fsanitize=address,undefined (CPU only,
# its own build folder), and runs the memory-safety tests plus a fast subset of tests/ops on
# that build, so an out-of-bounds read or write, a use after free or undefined behaviour fails
# the run instead of passing silently.
#
# Usage: bash tools/asan_test.sh [extra pytest args]   (after tools/bootstrap.sh made .venv)
# Settings (environment): LONGCAT_VENV (default .venv: torch, numpy, pytest come from it),
# LONGCAT_ASAN_DIR (default build/asan).
#
# How: the interpreter is not instrumented, so libasan is LD_PRELOADed into it. A bare venv in
# the build folder sees the main venv's packages through a .pth line (which does not run that
# venv's editable-install hook), and the sanitized package (python/longcat + the new _C) comes
# first on PYTHONPATH. Leak checking is off: CPython and torch keep allocations until exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
start=$SECONDS
venv=${LONGCAT_VENV:-$root/.venv}
main_py="$venv/bin/python"
export PATH="$venv/bin:$PATH"  # ninja (and cmake) from the build tools bootstrap installed
dir=${LONGCAT_ASAN_DIR:-$root/build/asan}
[ -x "$main_py" ] || { echo "asan_test: no $main_py (run tools/bootstrap.sh first)" >&2; exit 2; }

flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
cmake -S "$root" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLONGCAT_CUDA=OFF -DLONGCAT_PYTHON=ON \
  -DPython_EXECUTABLE="$main_py" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined" \
  >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
cmake --build "$dir/build" --target _C
echo "== asan_test: built in $((SECONDS - start)) s"

# The sanitized package: the Python sources plus the new _C and its kernel library ($ORIGIN/lib).
pkg="$dir/py/longcat"
rm -rf "$dir/py" && mkdir -p "$pkg/lib"
cp -r "$root/python/longcat/." "$pkg/"
cp "$dir/build"/_C*.so "$pkg/"
cp "$dir/build"/liblongcat_kernels.so* "$pkg/lib/"
[ -x "$dir/venv/bin/python" ] || "$main_py" -m venv --without-pip "$dir/venv"
site=$("$dir/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$main_py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$site/longcat_main_venv.pth"

libasan=$("${CXX:-c++}" -print-file-name=libasan.so)
libubsan=$("${CXX:-c++}" -print-file-name=libubsan.so)
export LD_PRELOAD="$libasan:$libubsan"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:verify_asan_link_order=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$dir/py"
export LONGCAT_NUM_THREADS=2
"$dir/venv/bin/python" -c 'import longcat._C as c, sys; assert "asan" in c.__file__, c.__file__' ||
  { echo "asan_test: the sanitized longcat._C is not the one imported" >&2; exit 1; }
# --capture=sys: a sanitizer report is written to fd 2 by C code; pytest must not swallow it.
# The safety tests, then one fast slice of each area's tests (bad input, edge cases, every ISA).
"$dir/venv/bin/python" -m pytest -q -p no:cacheprovider --capture=sys --rootdir "$root" \
  "$root/tests/ops/test_safety.py" "$root/tests/ops/test_safety_views.py" "$root/tests/ops/test_norm.py" \
  "$root/tests/ops/test_norm_backward.py" \
  "$root/tests/ops/test_kv_cache.py" "$root/tests/ops/test_linear.py" "$root/tests/ops/test_mla_layer.py" \
  "$root/tests/ops/test_moe_route.py" "$root/tests/ops/test_moe_gemm.py" \
  "$root/tests/ops/test_mla_decode.py" "$root/tests/ops/test_mla_prefill.py" "$root/tests/ops/test_kv_cache_copy.py" \
  -k "safety or bad or refused or empty or zero or nan or poison or stride or overlap or alias or isa or in_place" \
  -x "$@"
# The AMX copies' code on emulated tiles, whole (their padded operand tiles are where they could overrun).
"$dir/venv/bin/python" -m pytest -q -p no:cacheprovider --capture=sys --rootdir "$root" \
  "$root/tests/ops/test_moe_gemm_amx.py" "$root/tests/ops/test_mla_amx.py" -x "$@"
echo "== asan_test finished in $((SECONDS - start)) s"
