#!/usr/bin/env bash
# Run every CPU benchmark; JSON lands in benchmarks/results/ (figures go into BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
mkdir -p "$out"
python3 benchmarks/throughput.py --json "$out/throughput.json"
python3 benchmarks/scan.py --lengths 512 2048 --json "$out/scan.json"
python3 benchmarks/speedup.py --compile hnet-1stage@cpu-tiny mambabyte@cpu-tiny hnet-1stage@cpu-small \
  --json "$out/speedup.json"
python3 benchmarks/speedup.py --presets --parity-steps 50 \
  --parity-presets hnet-1stage@cpu-tiny hnet-2stage@cpu-tiny mambabyte@cpu-tiny --json "$out/loss_parity.json"
python3 benchmarks/generation.py --json "$out/generation.json"
python3 benchmarks/length_scaling.py --json "$out/length_scaling.json"
python3 benchmarks/memory.py --json "$out/memory.json"
python3 benchmarks/peer.py --json "$out/peer.json" || echo "peer.py skipped (pip install h-net-dynamic-chunking)"
python3 benchmarks/kernels_cpu.py --json "$out/kernels_cpu.json"
