# SPDX-License-Identifier: MIT
# Gemini module (ai/, net/tls): the fake Gemini Live server, the parser
# fuzz target, threaded test wiring.

# libFuzzer target for the server-message parser, built with clang directly
# against the sources it needs (libvb.a is built by $(CC)).
FUZZ_CC ?= clang
FUZZ_FLAGS ?= -g -O1 -fsanitize=fuzzer,address,undefined
FUZZ_GEMINI_SRCS := tests/fuzz/fuzz_gemini_msg.c ai/gemini_proto.c core/err.c

$(BUILD)/fuzz/fuzz-gemini: $(FUZZ_GEMINI_SRCS) ai/gemini_proto.h
	@mkdir -p $(@D)
	$(FUZZ_CC) -I. -D_GNU_SOURCE -std=c11 $(FUZZ_FLAGS) $(FUZZ_GEMINI_SRCS) \
	  $$(pkg-config --libs libcjson) -lmbedcrypto -lm -o $@

.PHONY: fuzz fuzz-gemini
fuzz: fuzz-gemini
fuzz-gemini: $(BUILD)/fuzz/fuzz-gemini
	@mkdir -p $(BUILD)/fuzz/corpus-gemini
	$< -runs=$${FUZZ_RUNS:-200000} -max_len=65536 \
	  $(BUILD)/fuzz/corpus-gemini tests/fuzz/fuzz_gemini_corpus

# The strict fake Gemini Live server (bench/fake_gemini/), used by the tests.
FAKE_GEMINI_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard bench/fake_gemini/*.c))
PROGS += $(BUILD)/vb-fake-gemini
$(BUILD)/vb-fake-gemini: $(FAKE_GEMINI_OBJS) $(LIBVB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@
$(BUILD)/tests/test_gemini: | $(BUILD)/vb-fake-gemini

# The gemini stage runs its own thread; TLS and the fake run in-process.
THREADED_TESTS += test_gemini
