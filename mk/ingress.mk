# SPDX-License-Identifier: MIT
# Ingress (issue 4): the server binary, HTTP fuzzing, threaded tests.

PROGS += $(BUILD)/voxbridge

$(BUILD)/voxbridge: $(BUILD)/core/main.o $(LIBVB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

THREADED_TESTS += test_http test_ingress test_nginx

# libFuzzer target for the request handler: the HTTP session fed by the
# ingress routes. Built with clang straight from the sources it needs.
FUZZ_CC      ?= clang
FUZZ_FLAGS   := -g -O1 -std=c11 -D_GNU_SOURCE -I. -I$(LLHTTP_INC) \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_RUNS    ?= 200000
FUZZ_SECONDS ?= 20
FUZZ_HTTP_SRCS := tests/fuzz/fuzz_http.c \
                  net/http.c net/form.c net/twiml.c net/twilio_sig.c \
                  net/ingress.c core/config.c core/err.c core/hist.c \
                  core/log.c core/metrics.c core/msg.c core/ring.c \
                  $(LLHTTP_DIR)/api.c $(LLHTTP_DIR)/http.c \
                  $(LLHTTP_DIR)/llhttp.c

$(BUILD)/fuzz/fuzz_http: $(FUZZ_HTTP_SRCS) | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) $^ -luv -lcjson -lmbedtls -lmbedx509 \
	  -lmbedcrypto -lpthread -lm -o $@

.PHONY: fuzz fuzz-http
fuzz: fuzz-http
fuzz-http: $(BUILD)/fuzz/fuzz_http
	@rm -rf $(BUILD)/fuzz/corpus_http && mkdir -p $(BUILD)/fuzz/corpus_http
	@cp tests/fuzz/corpus_http/* $(BUILD)/fuzz/corpus_http/
	$(BUILD)/fuzz/fuzz_http -runs=$(FUZZ_RUNS) \
	  -max_total_time=$(FUZZ_SECONDS) -max_len=8192 \
	  $(BUILD)/fuzz/corpus_http
