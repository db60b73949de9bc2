# SPDX-License-Identifier: MIT
# Gemini module (ai/, net/tls): the fake Gemini Live server, threaded test
# wiring. Its fuzz target is in mk/fuzz.mk.

# The strict fake Gemini Live server (bench/fake_gemini/), used by the tests.
FAKE_GEMINI_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard bench/fake_gemini/*.c))
PROGS += $(BUILD)/vb-fake-gemini
$(BUILD)/vb-fake-gemini: $(FAKE_GEMINI_OBJS) $(LIBVB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@
$(BUILD)/tests/test_gemini: | $(BUILD)/vb-fake-gemini

# The gemini stage runs its own thread; TLS and the fake run in-process.
THREADED_TESTS += test_gemini
