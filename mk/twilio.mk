# SPDX-License-Identifier: MIT
# Twilio side: the stream stage tests, the vb-sim call simulator (its fuzz
# targets are in mk/fuzz.mk).

THREADED_TESTS += test_ws test_twilio_stream test_sim

# vb-sim: the strict Twilio call simulator (bench/sim/).
SIM_SRCS := $(sort $(wildcard bench/sim/*.c))
SIM_OBJS := $(SIM_SRCS:%.c=$(BUILD)/%.o)
PROGS += $(BUILD)/vb-sim

$(BUILD)/vb-sim: $(SIM_OBJS) $(LIBVB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

# test_sim runs the real binary (found through VB_BUILD_DIR).
$(BUILD)/tests/test_sim: | $(BUILD)/vb-sim
