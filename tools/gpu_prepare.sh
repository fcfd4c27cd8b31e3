#!/usr/bin/env bash
# Prepares, on a CPU machine with nvcc, the ignored folder .gpu/ that bench/gpu_check.sh takes
# to a GPU machine (name it in the device tool's `carry`):
#   .gpu/cutlass/include/{cute,cutlass}   the CUTLASS headers (the GPU machine has no nvidia-cutlass
#                                         and no network), passed to CMake there as CUTLASS_DIR
#   .gpu/cuda-objects/<name>.cu.o         csrc/cuda/*.cu compiled here for sm_90a, so the GPU
#                                         machine compiles only the C++ side (CPU kernels, nanobind
#                                         module: they depend on its Python 3.12 and its torch-free ABI)
#   .gpu/cuda-objects/SOURCES             the hash of the sources they were compiled from; when it no
#                                         longer matches, gpu_check.sh compiles the CUDA files there
# About 27 MB of headers and 3 MB of objects. Rerun after changing csrc/ or CMakeLists.txt.
#
# Usage: bash tools/gpu_prepare.sh                 headers + objects (CUDA compile: minutes on 2 cores)
#        bash tools/gpu_prepare.sh --headers-only  the CUTLASS copy alone
#        bash tools/gpu_prepare.sh --sources-hash  print the hash the objects are checked against
# Settings (environment): PYTHON (whose nvidia-cutlass wheel holds the headers; default .venv/bin/python,
# else python3), CUTLASS_DIR (a CUTLASS checkout or install prefix instead of the wheel),
# LONGCAT_CUDA_ARCHS (default 90a).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# Everything the CUDA objects are compiled from (headers they include, the .cu files, the build flags).
sources_hash() {
  find csrc -type f \( -name '*.cu' -o -name '*.cuh' -o -name '*.h' -o -name '*.h.in' \) -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | cat - <(sha256sum CMakeLists.txt) | sha256sum | cut -d' ' -f1
}
if [ "${1:-}" = --sources-hash ]; then
  sources_hash
  exit 0
fi

dest=.gpu
mkdir -p "$dest"

# ---- CUTLASS headers ---------------------------------------------------------------------------
if [ -n "${CUTLASS_DIR:-}" ]; then
  src_inc=$CUTLASS_DIR/include
else
  py=${PYTHON:-}
  [ -n "$py" ] || { [ -x .venv/bin/python ] && py=.venv/bin/python || py=python3; }
  src_inc=$("$py" -c 'import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include"))' 2>/dev/null) || {
    echo "gpu_prepare: no CUTLASS headers: pip install nvidia-cutlass into $py, or set CUTLASS_DIR" >&2
    exit 1
  }
fi
[ -f "$src_inc/cutlass/version.h" ] || { echo "gpu_prepare: $src_inc/cutlass/version.h not found" >&2; exit 1; }
rm -rf "$dest/cutlass"
mkdir -p "$dest/cutlass/include"
cp -r "$src_inc/cute" "$src_inc/cutlass" "$dest/cutlass/include/"
version=$(grep -E '#define CUTLASS_(MAJOR|MINOR|PATCH) ' "$dest/cutlass/include/cutlass/version.h" | awk '{print $3}' | paste -sd.)
echo "gpu_prepare: CUTLASS $version headers in $dest/cutlass/include ($(du -sh "$dest/cutlass" | cut -f1)) from $src_inc"
[ "${1:-}" = --headers-only ] && exit 0

# ---- CUDA objects ------------------------------------------------------------------------------
command -v nvcc >/dev/null || { echo "gpu_prepare: nvcc is not on PATH" >&2; exit 1; }
build=build/gpu-objects
cmake -S . -B "$build" -G Ninja -DLONGCAT_PYTHON=OFF -DLONGCAT_CUDA=ON -DLONGCAT_REQUIRE_CUTLASS=ON \
  -DCUTLASS_DIR="$root/$dest/cutlass" -DLONGCAT_CUDA_ARCHS="${LONGCAT_CUDA_ARCHS:-90a}" -DLONGCAT_CUDA_OBJECTS= \
  > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
grep 'longcat: CUDA=' "$build.configure.log"
targets=()
for cu in csrc/cuda/*.cu; do targets+=("CMakeFiles/longcat_kernels.dir/$cu.o"); done
t0=$SECONDS
cmake --build "$build" --target "${targets[@]}"
rm -rf "$dest/cuda-objects"
mkdir -p "$dest/cuda-objects"
for cu in csrc/cuda/*.cu; do cp "$build/CMakeFiles/longcat_kernels.dir/$cu.o" "$dest/cuda-objects/$(basename "$cu").o"; done
{
  echo "sources $(sources_hash)"
  echo "archs ${LONGCAT_CUDA_ARCHS:-90a}"
  echo "cutlass $version"
  echo "nvcc $(nvcc --version | grep -o 'release [0-9.]*' | cut -d' ' -f2)"
} > "$dest/cuda-objects/SOURCES"
echo "gpu_prepare: $(ls "$dest"/cuda-objects/*.o | wc -l) CUDA objects ($(du -sh "$dest/cuda-objects" | cut -f1)) in" \
  "$dest/cuda-objects, compiled in $((SECONDS - t0)) s"
echo "gpu_prepare: .gpu holds $(du -sh "$dest" | cut -f1); carry it: run(command='bash bench/gpu_check.sh', carry=['.gpu'])"
