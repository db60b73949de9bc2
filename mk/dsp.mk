# SPDX-License-Identifier: MIT
# DSP module (dsp/): the vb-dsp file tool, the DSP benchmark, test wiring.

PROGS += $(BUILD)/vb-dsp

$(BUILD)/vb-dsp: $(BUILD)/dsp/tool/vb_dsp.o $(LIBVB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

# test_dsp_tool runs the real binary (found through VB_BUILD_DIR).
$(BUILD)/tests/test_dsp_tool: | $(BUILD)/vb-dsp

.PHONY: bench-dsp
bench-dsp: $(BUILD)/bench_dsp
	$(BUILD)/bench_dsp
# The call recorder (tests/test_recorder.c): its own thread, fed by the test.
THREADED_TESTS += test_recorder
