"""Benchmarks (`python -m bench [--quick]`): every `bench/bench_*.py` module's `run(quick)`,
side by side with tshark where relevant; results in `bench/out/results.json`."""
