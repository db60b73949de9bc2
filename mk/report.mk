# SPDX-License-Identifier: MIT
# Post-call reports (ai/report, ai/events) and the example business app.

# vb-example-app (bench/app/): the business side for tests and the demo.
EXAMPLE_APP_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard bench/app/*.c))
PROGS += $(BUILD)/vb-example-app
$(BUILD)/vb-example-app: $(EXAMPLE_APP_OBJS) $(LIBVB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

# The delivery thread is exercised in-process with a real HTTP receiver.
THREADED_TESTS += test_report
# Whole calls with --events-url against vb-example-app, restarts included.
THREADED_TESTS += test_e2e_report

# `make demo-assistant`: a scripted tool call and the post-call report.
.PHONY: demo-assistant
demo-assistant: $(BUILD)/voxbridge $(BUILD)/vb-sim $(BUILD)/vb-fake-gemini \
                $(BUILD)/vb-example-app
	bash bench/demo/demo_assistant.sh $(BUILD)
$(BUILD)/tests/test_report: | $(BUILD)/vb-example-app
$(BUILD)/tests/test_e2e_report: | $(BUILD)/vb-example-app $(BUILD)/voxbridge \
                                  $(BUILD)/vb-sim $(BUILD)/vb-fake-gemini
