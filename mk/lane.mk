# Lanes: the DSP stage thread and (later) the lane wiring.
THREADED_TESTS += test_dsp_stage test_chan

# `make demo`: one whole call against the fake Gemini, no credentials.
.PHONY: demo
demo: $(BUILD)/voxbridge $(BUILD)/vb-sim $(BUILD)/vb-fake-gemini
	bash bench/demo/demo.sh $(BUILD)
