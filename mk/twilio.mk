# SPDX-License-Identifier: MIT
# Twilio side: the stream stage tests, the vb-sim call simulator, the
# Twilio message parser fuzz target.

THREADED_TESTS += test_ws test_twilio_stream test_sim

# vb-sim: the strict Twilio call simulator (bench/sim/).
SIM_SRCS := $(sort $(wildcard bench/sim/*.c))
SIM_OBJS := $(SIM_SRCS:%.c=$(BUILD)/%.o)
PROGS += $(BUILD)/vb-sim

$(BUILD)/vb-sim: $(SIM_OBJS) $(LIBVB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

# test_sim runs the real binary (found through VB_BUILD_DIR).
$(BUILD)/tests/test_sim: | $(BUILD)/vb-sim

# libFuzzer targets, built with clang directly against the sources they
# need (libvb.a is built by $(CC)): the Twilio message parser and the
# WebSocket endpoint. `make fuzz-twilio fuzz-ws` (FUZZ_TWILIO_RUNS runs each).
FUZZ_CC ?= clang
FUZZ_TWILIO_FLAGS ?= -g -O1 -fsanitize=fuzzer,address,undefined \
                     -fno-sanitize-recover=all
FUZZ_TWILIO_RUNS ?= 200000
FUZZ_TWILIO_SRCS := tests/fuzz/fuzz_twilio_msg.c net/twilio_msg.c core/err.c
FUZZ_WS_SRCS := tests/fuzz/fuzz_ws.c net/ws.c core/err.c core/log.c

$(BUILD)/fuzz/fuzz-twilio: $(FUZZ_TWILIO_SRCS) net/twilio_msg.h | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) -I. -D_GNU_SOURCE -std=c11 $(FUZZ_TWILIO_FLAGS) \
	  $(FUZZ_TWILIO_SRCS) -o $@

$(BUILD)/fuzz/fuzz-ws: $(FUZZ_WS_SRCS) net/ws.h net/transport.h | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) -I. -D_GNU_SOURCE -std=c11 -pthread $(FUZZ_TWILIO_FLAGS) \
	  $(FUZZ_WS_SRCS) $$(pkg-config --libs libuv) -lwslay -lmbedcrypto \
	  -o $@

.PHONY: fuzz fuzz-twilio fuzz-ws
fuzz: fuzz-twilio fuzz-ws
fuzz-twilio: $(BUILD)/fuzz/fuzz-twilio
	@mkdir -p $(BUILD)/fuzz/corpus-twilio
	$< -runs=$(FUZZ_TWILIO_RUNS) -max_len=8192 \
	  $(BUILD)/fuzz/corpus-twilio tests/fuzz/corpus_twilio
fuzz-ws: $(BUILD)/fuzz/fuzz-ws
	@mkdir -p $(BUILD)/fuzz/corpus-ws
	$< -runs=$(FUZZ_TWILIO_RUNS) -max_len=8192 \
	  $(BUILD)/fuzz/corpus-ws tests/fuzz/corpus_ws
