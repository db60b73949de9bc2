# SPDX-License-Identifier: MIT
# Ingress: the server binary, threaded tests (HTTP fuzzing: mk/fuzz.mk).

PROGS += $(BUILD)/voxbridge

$(BUILD)/voxbridge: $(BUILD)/core/main.o $(LIBVB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

THREADED_TESTS += test_http test_ingress test_nginx
