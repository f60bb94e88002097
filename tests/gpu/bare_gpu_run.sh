#!/bin/bash
# The GPU tests on a GPU machine that has CUDA (nvcc), Python 3.12 with numpy,
# pytest and setuptools, but no package index (this project's lent GPU machines):
#
#   tests/gpu/bare_gpu_run.sh prepare   # here, with PyPI: .whl/ holds cp312 wheels of
#                                       # inferd's runtime deps and pycuda's sdist (~16 MB)
#   tests/gpu/bare_gpu_run.sh run       # there, from the repository root, with .whl/ copied
#                                       # along: installs them under /tmp/site, builds pycuda
#                                       # (-j 16), runs the gpu tests; logs to $OUT (or /tmp)
#
# TensorRT and onnxruntime-gpu are too large to carry this way (over 1 GB and
# ~300 MB): their tests skip with the reason.
set -u
WHL=.whl
OUT=${OUT:-/tmp}
PYCUDA=pycuda==2026.1  # CUDA 13 support (cuCtxCreate's new signature)
DEPS="protobuf==7.36.2 grpcio==1.85.3 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
 opentelemetry-semantic-conventions==0.66b2 opentelemetry-exporter-otlp-proto-grpc==1.45.2
 opentelemetry-exporter-otlp-proto-common==1.45.2 opentelemetry-exporter-otlp-common==0.66b2
 googleapis-common-protos PyJWT cryptography cffi pycparser pytest-asyncio
 pytools platformdirs mako siphash24"

case "${1:-}" in
prepare)
  mkdir -p "$WHL/src"
  for p in $DEPS; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$WHL" "$p" || exit 1
  done
  python3 -m pip download -q --no-deps --no-binary=pycuda -d "$WHL/src" "$PYCUDA" || exit 1
  du -sh "$WHL"
  ;;
run)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHL"/*.whl || exit 3
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  nvcc=$(command -v nvcc || ls /usr/local/cuda*/bin/nvcc 2>/dev/null | head -1)
  root=$(dirname "$(dirname "$nvcc")")
  repo=$PWD
  t0=$(date +%s)
  mkdir -p /tmp/pycuda-build && tar xzf "$WHL"/src/pycuda-*.tar.gz -C /tmp/pycuda-build || exit 4
  cd /tmp/pycuda-build/pycuda-* || exit 4
  {
    python3 configure.py --cuda-root="$root" --no-cuda-enable-curand \
      --cudadrv-lib-dir="$root/lib64,$root/lib64/stubs,/usr/local/nvidia/lib64" \
      --cudart-lib-dir="$root/lib64" &&
      python3 setup.py build_ext -j 16 && python3 setup.py build
  } > "$OUT/pycuda_build.log" 2>&1 || { echo "pycuda build failed:"; tail -30 "$OUT/pycuda_build.log"; exit 5; }
  cp -r build/lib.*/pycuda /tmp/site/ && cd "$repo" || exit 5
  echo "pycuda built in $(( $(date +%s) - t0 )) s"
  python3 -m pytest -p no:cacheprovider -o filterwarnings=default -rs -s -v \
    tests/gpu tests/server/test_gpu.py tests/engines/test_tensorrt_engine.py \
    2>&1 | tee "$OUT/pytest_gpu.log" | grep -E "PASS|FAIL|SKIP|Error|MiB|GiB|passed|failed"
  ;;
*)
  sed -n '2,12p' "$0"; exit 2 ;;
esac
