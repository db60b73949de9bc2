# SPDX-License-Identifier: MIT
# The load bench (bench/scripts/bench.sh, docs/benchmarks.md): vb-sim load
# against voxbridge and vb-fake-gemini on loopback.
#   make bench        ramp 1..500 calls, speexdsp and libsamplerate (~12 min)
#   make bench-quick  1 and 10 calls, a few seconds each (CI: harness check)
.PHONY: bench bench-quick
bench: $(PROGS)
	bench/scripts/bench.sh $(BUILD) full

bench-quick: $(PROGS)
	bench/scripts/bench.sh $(BUILD) quick

# core/b64 against mbedTLS's base64, 160 B and 1 KiB payloads (MB/s).
.PHONY: bench-b64
bench-b64: $(BUILD)/bench_b64
	$(BUILD)/bench_b64
