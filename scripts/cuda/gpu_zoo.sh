#!/usr/bin/env bash
# The prepared run of issue 31 (MADE and deep NADE on CUDA, NADE's small-batch evaluation) on
# a lent GPU machine, ordered so that what matters most comes first if time runs out: the CUDA
# test suites, our benchmarks and the PyTorch peers on the same card in the same run, the
# shipped MADE and deep NADE checkpoints evaluated on CUDA against their CPU records, deep
# NADE's 128-ordering test evaluation (wall clock), one epoch of configs/deepnade.toml,
# configs/made.toml and configs/made-k32.toml. Builds nothing there. Here first:
#   scripts/build-cuda.sh && scripts/build-cuda.sh test --release --features cuda --no-run
#   ../shared/tools/device-pack.sh suite
# then on the GPU machine, from the repository root (device tool: timeout_s 600):
#   bash scripts/cuda/gpu_zoo.sh            # logs under $OUT (default ./gpu-out)
# Files: log.txt (everything, with timings), tests.txt, bench.jsonl (nade bench), torch.jsonl
# (the peers), evals.jsonl (nade eval --json on CUDA), deepnade-completions.png.
set -uo pipefail
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
log="$out/log.txt"
source .device/unpack.sh > "$log" 2>&1
nvidia-smi >> "$log" 2>&1
# The test binary was built in /work/main and finds the binary, the checkpoints and
# ../shared/data through that path (compile-time CARGO_MANIFEST_DIR).
root=$PWD
if [[ ! -e /work/main ]]; then mkdir -p /work && ln -s "$root" /work/main; fi
mkdir -p /work/shared/data target/cuda/release
[[ -e /work/shared/data/binarized_mnist ]] || ln -s "$NADE_DATA_DIR" /work/shared/data/binarized_mnist
cp .device/bin/nade target/cuda/release/nade
export CI=1 RUST_BACKTRACE=1
step() { echo "== $(date +%T) $*" >> "$log"; }
# ms since the epoch, for wall clocks.
now() { date +%s%3N; }

step "first CUDA command on this machine (the driver's JIT of the PTX), then the second"
for k in 1 2; do
  s=$(now); nade eval checkpoints/nade.safetensors --limit 100 --device cuda --json > /dev/null 2>> "$log"
  echo "eval run $k: $(($(now) - s)) ms" >> "$log"
done

step "CUDA tests (the device-generic suites loop over the CPU and CUDA)"
for t in deepnade made nade_cuda keep models sampling optim; do
  echo "===== $t" >> "$out/tests.txt"
  timeout 120 .device/bin/suite-test --test-threads 4 "$t::" > /tmp/test-$t.txt 2>&1
  rc=$?
  cat /tmp/test-$t.txt >> "$out/tests.txt"
  echo "tests $t: exit $rc $(grep -E '^test result' /tmp/test-$t.txt)" >> "$log"
done

step "nade bench (bench.jsonl)"
{
  for b in 100 1000; do
    nade bench --device cuda --model nade --hidden 500 --batch $b --phase eval,train --kernel fused --seconds 3 --json
  done
  # NADE's evaluation kernel splits a small batch along the pixels: the chunk, tuned here.
  for c in 64 128 256 800; do
    echo "{\"NADE_CUDA_LOGITS_CHUNK\": $c}"
    NADE_CUDA_LOGITS_CHUNK=$c nade bench --device cuda --model nade --hidden 500 --batch 100 --phase eval --kernel fused --seconds 2 --json
  done
  nade bench --device cuda --model made --hidden 1000,1000 --masks 32 --batch 100 --phase eval,train --seconds 3 --json
  nade bench --device cuda --model made --hidden 500 --masks 1 --batch 100 --seconds 2 --json
  nade bench --device cuda --model deepnade --hidden 500,500 --batch 100 --seconds 3 --json
  nade bench --device cuda --model deepnade --hidden 500,500 --batch 1000 --phase eval,train --seconds 3 --json
} > "$out/bench.jsonl" 2>> "$log"

step "PyTorch peers, same card (torch.jsonl)"
export PYTHONUNBUFFERED=1
{
  timeout 90 python3 scripts/bench/bench_torch.py --device cuda --seconds 2 --formulations compiled
  timeout 120 python3 scripts/bench/bench_torch_made.py --device cuda --seconds 2 --batches 100 \
    --hidden 1000,1000 --masks 32 --phases eval,train
  timeout 120 python3 scripts/bench/bench_torch_deepnade.py --device cuda --seconds 2 --batches 100,1000 \
    --phases eval,train,sample
} > "$out/torch.jsonl" 2>> "$log"

step "shipped checkpoints on CUDA against their CPU records (evals.jsonl)"
for c in made made-k32 deepnade; do
  s=$(now)
  timeout 120 nade eval checkpoints/$c.safetensors --device cuda --json >> "$out/evals.jsonl" 2>> "$log"
  echo "eval $c: $(($(now) - s)) ms" >> "$log"
done
python3 - "$out/evals.jsonl" >> "$log" 2>&1 <<'PY'
import json, sys
for line in open(sys.argv[1]):
    got = json.loads(line)
    name = got["checkpoint"].split("/")[-1].removesuffix(".safetensors")
    want = json.load(open(f"docs/records/{name}-test.json"))
    rel = abs(got["nll_nats"] - want["nll_nats"]) / want["nll_nats"]
    print(f"{name}: cuda {got['nll_nats']:.6f} cpu {want['nll_nats']:.6f} rel {rel:.2e} "
          f"{'ok' if rel <= 1e-5 else 'FAIL'} ({got['images_per_s']:.0f} images/s)")
PY

step "deep NADE, 128 orderings, 10,000 test images (goal: 60 s and 85.0096 +- 1e-4 relative)"
s=$(now)
timeout 200 nade eval checkpoints/deepnade.safetensors --device cuda --orders 128 --json >> "$out/evals.jsonl" 2>> "$log"
rc=$?
echo "deepnade --orders 128: $(($(now) - s)) ms, exit $rc" >> "$log"
tail -1 "$out/evals.jsonl" >> "$log"

step "one epoch of each config on CUDA (the epoch line has its time)"
for c in deepnade made made-k32; do
  timeout 100 nade train configs/$c.toml --device cuda --epochs 1 --out /tmp/run-$c --no-test >> "$log" 2>&1
  echo "train $c: exit $?" >> "$log"
  cat /tmp/run-$c/metrics.jsonl >> "$log" 2>/dev/null
done

step "a deep NADE completion on CUDA"
nade complete checkpoints/deepnade.safetensors --device cuda --keep left:14 --count 8 \
  --out "$out/deepnade-completions.png" >> "$log" 2>&1
step "done"
