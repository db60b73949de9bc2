# SPDX-License-Identifier: MIT
# The load bench (bench/scripts/bench.sh, docs/benchmarks.md): vb-sim load
# against voxbridge and vb-fake-gemini on loopback.
#   make bench        1, 10, 100, 250, 500 calls (then 750, 1000 while the
#                     rig keeps up), speexdsp and libsamplerate (~15 min)
#   make bench-quick  1 and 10 calls, a few seconds each (CI: harness check)
# Both reach the fake Gemini over TLS with a test CA (BENCH_TRANSPORT=ws for
# plain WebSocket); BENCH_LEVELS="1 10 250" picks the levels.
.PHONY: bench bench-quick
bench: $(PROGS)
	bench/scripts/bench.sh $(BUILD) full

bench-quick: $(PROGS)
	bench/scripts/bench.sh $(BUILD) quick

# core/b64 against mbedTLS's base64, 160 B and 1 KiB payloads (MB/s).
.PHONY: bench-b64
bench-b64: $(BUILD)/bench_b64
	$(BUILD)/bench_b64
