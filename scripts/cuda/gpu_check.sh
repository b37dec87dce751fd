#!/usr/bin/env bash
# The one prepared run on a lent GPU machine (see docs/cuda.md): the CUDA test suite, the
# benchmarks (ours and the PyTorch formulations, same card, same run), a short training run of
# configs/nade.toml, CUDA evaluation of the shipped checkpoints and a completion. Builds
# nothing there: run `scripts/build-cuda.sh`, `scripts/build-cuda.sh test --release --features
# cuda --no-run` and `../shared/tools/device-pack.sh suite` (the integration tests are one binary,
# tests/suite; each subject below is a module filter)
# here first, then on the GPU machine, from the repository root:
#   bash scripts/cuda/gpu_check.sh            # logs under $OUT (default ./gpu-out)
# The device tool returns at most 8 files: log.txt, tests.txt, bench.jsonl, torch.jsonl and
# two PNGs.
set -uo pipefail
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
log="$out/log.txt"
source .device/unpack.sh > "$log" 2>&1
nvidia-smi >> "$log" 2>&1
# The test binaries were built in /work/main and find the binary, the checkpoints and
# ../shared/data through that path (compile-time CARGO_MANIFEST_DIR).
root=$PWD
if [[ ! -e /work/main ]]; then mkdir -p /work && ln -s "$root" /work/main; fi
mkdir -p /work/shared/data target/cuda/release
[[ -e /work/shared/data/binarized_mnist ]] || ln -s "$NADE_DATA_DIR" /work/shared/data/binarized_mnist
cp .device/bin/nade target/cuda/release/nade
export CI=1 RUST_BACKTRACE=1
# `bash scripts/cuda/gpu_check.sh bench`: only the benchmarks (ours and PyTorch's, same run).
only=${1:-all}
if [[ $only == bench ]]; then
  for b in 100 1000; do
    nade bench --device cuda --model nade --hidden 500 --batch $b --kernel fused --seconds 3 --json
  done > "$out/bench.jsonl" 2>> "$log"
  for m in fvsbn mlp; do
    nade bench --device cuda --model $m --hidden 4 --batch 100 --phase sample --seconds 2 --json
  done >> "$out/bench.jsonl" 2>> "$log"
  PYTHONUNBUFFERED=1 timeout 120 python3 scripts/bench/bench_torch.py --device cuda --seconds 2 \
    --formulations compiled,loop > "$out/torch.jsonl" 2>> "$log"
  echo "== done" >> "$log"
  exit 0
fi

{
  echo "== first CUDA command on this machine (driver JIT of the PTX), then the second"
  for k in 1 2; do
    s=$(date +%s%N); nade eval checkpoints/nade.safetensors --limit 100 --device cuda --json > /dev/null
    echo "eval run $k: $(( ($(date +%s%N) - s) / 1000000 )) ms"
  done
} >> "$log" 2>&1

for t in nade_cuda models sampling optim made deepnade; do
  echo "===== $t" >> "$out/tests.txt"
  case $t in nade_cuda | optim) limit=60 ;; models) limit=90 ;; *) limit=150 ;; esac
  timeout $limit .device/bin/suite-test --test-threads 4 "$t::" > /tmp/test-$t.txt 2>&1
  rc=$?
  cat /tmp/test-$t.txt >> "$out/tests.txt"
  echo "tests $t: exit $rc $(grep -E '^test result' /tmp/test-$t.txt)" >> "$log"
done

echo "== the CUDA kernels' own throughput test" >> "$log"
timeout 45 .device/bin/suite-test --ignored --nocapture nade_cuda::throughput >> "$log" 2>&1
for m in 1 2 4 8; do
  echo "-- NADE_CUDA_GRAD_IMAGES=$m" >> "$log"
  NADE_CUDA_GRAD_IMAGES=$m timeout 30 .device/bin/suite-test --ignored --nocapture nade_cuda::throughput 2>&1 | grep log_prob_grad >> "$log"
done

{
  for b in 100 1000; do
    nade bench --device cuda --model nade --hidden 500 --batch $b --kernel fused,blocked:28 --seconds 3 --json
  done
  for m in fvsbn mlp; do
    nade bench --device cuda --model $m --hidden 4 --batch 100 --seconds 2 --json
  done
  for k in 1 32; do
    nade bench --device cuda --model made --hidden 500 --masks $k --batch 100 --seconds 2 --json
  done
  nade bench --device cuda --model deepnade --hidden 500,500 --batch 100 --seconds 2 --json
} > "$out/bench.jsonl" 2>> "$log"

{
  for k in fused blocked:28; do
    for m in nade fvsbn mlp; do
      [[ $m != nade && $k != fused ]] && continue
      kk=$k; [[ $m != nade ]] && kk=auto
      nade eval checkpoints/$m.safetensors --device cuda --kernel $kk --json
    done
  done
  nade complete checkpoints/nade.safetensors --device cuda --keep top:14 --count 10 --stride 1000 --out "$out/completions.png"
  nade sample checkpoints/nade.safetensors --device cuda --count 100 --out "$out/samples.png"
  # Validation split: the device check compares numbers, it does not need the test set again.
  nade eval checkpoints/made.safetensors --device cuda --split valid --json
  # Deep NADE's exact evaluation on the GPU (docs/performance.md's CPU times, 1 thread: 2.2 s / 29.6 s).
  for k in 1 16; do
    s=$(date +%s%N)
    timeout 120 nade eval checkpoints/deepnade.safetensors --device cuda --split valid --orders $k --limit 1000 --json
    echo "deepnade eval, 1000 valid images, $k orderings: $(( ($(date +%s%N) - s) / 1000000 )) ms"
  done
  nade complete checkpoints/deepnade.safetensors --device cuda --keep left:14 --count 4 --out /tmp/dn.png
} >> "$log" 2>&1

echo "== nade train configs/nade.toml on CUDA, 3 epochs" >> "$log"
timeout 60 nade train configs/nade.toml --device cuda --epochs 3 --out /tmp/run --no-test >> "$log" 2>&1
cat /tmp/run/metrics.jsonl >> "$log" 2>/dev/null

echo "== PyTorch formulations" >> "$log"
PYTHONUNBUFFERED=1 timeout 100 python3 scripts/bench/bench_torch.py --device cuda --seconds 2 > "$out/torch.jsonl" 2>> "$log"
PYTHONUNBUFFERED=1 timeout 100 python3 scripts/bench/bench_torch_made.py --device cuda --seconds 2 --batches 100 >> "$out/torch.jsonl" 2>> "$log"
echo "== done" >> "$log"
