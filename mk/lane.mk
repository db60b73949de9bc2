# Lanes: the DSP stage thread and (later) the lane wiring.
THREADED_TESTS += test_dsp_stage
