# SPDX-License-Identifier: MIT
# libFuzzer targets (DEVELOPERS.md, "Fuzzing"). Each tests/fuzz/fuzz_<name>.c
# becomes $(BUILD)/fuzz/fuzz_<name>, seeded from tests/fuzz/corpus_<name>/.
#
#   make fuzz                    every target for FUZZ_SECONDS (10) each
#   make -j2 fuzz FUZZ_SECONDS=60  two at a time (CI)
#   make fuzz-<name>             one target, e.g. make fuzz-tls
#   make fuzz-build              build them all, run nothing
#
# The library is compiled a second time with clang, coverage-instrumented
# (-fsanitize=fuzzer-no-link) and under ASan+UBSan, into
# $(BUILD)/fuzz/libvb-fuzz.a; every target links against it. What a run
# finds (new inputs, crash/leak/timeout artifacts, its log) stays in
# $(BUILD)/fuzz/: the committed seed corpora are only read. A crash, a leak,
# a sanitizer report or an input running longer than FUZZ_TIMEOUT seconds
# fails the target, and `make fuzz` with it.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 10
FUZZ_TIMEOUT ?= 10
FUZZ_NAMES   := $(sort $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_DIR     := build/fuzz
FUZZ_BINS    := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_LIB     := $(FUZZ_DIR)/libvb-fuzz.a
# One set of flags for everything built here, the library objects and the
# targets alike: the project's includes, defines and C standard (the same
# BASE_CPPFLAGS and STD_CFLAGS as the main build), -O1 -g, ASan+UBSan, and
# the project's warnings (llhttp's objects alone silence them). Neither
# CFLAGS nor SANITIZER reaches them: a fuzz build is always this one, in
# build/fuzz/ whatever SANITIZER says.
FUZZ_CFLAGS  := $(STD_CFLAGS) -g -O1 -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CPPFLAGS := $(BASE_CPPFLAGS) \
                 -DVB_FUZZ_TLS_DIR='"$(CURDIR)/tests/fuzz/tls"'

# Longest input each target is given (-max_len); the default fits them all.
FUZZ_MAX_LEN              := 8192
FUZZ_MAX_LEN_gemini_msg   := 65536
FUZZ_MAX_LEN_tls          := 16384
FUZZ_MAX_LEN_twilio_stream := 16384

FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(FUZZ_DIR)/obj/%.o) \
                 $(FUZZ_DIR)/obj/llhttp/api.o $(FUZZ_DIR)/obj/llhttp/http.o \
                 $(FUZZ_DIR)/obj/llhttp/llhttp.o

$(FUZZ_DIR)/obj/%.o: %.c | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) $(WARN) \
	  -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) -I$(LLHTTP_INC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -w \
	  -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB) | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) -MF $@.d $(FUZZ_CFLAGS) $(WARN) -fsanitize=fuzzer \
	  $< $(FUZZ_LIB) $(LIBS) -o $@

# Not a fuzz target: writes the TLS seed transcripts (tests/fuzz/fuzz_tls.c).
$(FUZZ_DIR)/tls_record: tests/fuzz/fuzz_tls.c $(FUZZ_LIB) | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) -MF $@.d $(FUZZ_CFLAGS) $(WARN) -DVB_FUZZ_TLS_RECORD \
	  -fsanitize=fuzzer-no-link $< $(FUZZ_LIB) $(LIBS) -o $@

.PHONY: fuzz fuzz-build fuzz-tls-corpus fuzz-tls-replay $(FUZZ_NAMES:%=fuzz-%)
fuzz: $(FUZZ_NAMES:%=fuzz-%) fuzz-tls-replay
fuzz-build: $(FUZZ_BINS) $(FUZZ_DIR)/tls_record

# One target: a fresh working corpus in the build dir (the seeds are read
# from the source tree), artifacts named after the target, output in a log
# whose tail is shown when the run fails.
define FUZZ_RUN
fuzz-$(1): $(FUZZ_DIR)/fuzz_$(1)
	@rm -rf $(FUZZ_DIR)/work_$(1) && mkdir -p $(FUZZ_DIR)/work_$(1) $(FUZZ_DIR)/artifacts
	@echo "fuzz $(1): $(FUZZ_SECONDS) s, log $(FUZZ_DIR)/fuzz_$(1).log"
	@if $(FUZZ_DIR)/fuzz_$(1) -max_total_time=$(FUZZ_SECONDS) \
	      -timeout=$(FUZZ_TIMEOUT) -max_len=$(or $(FUZZ_MAX_LEN_$(1)),$(FUZZ_MAX_LEN)) \
	      -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$(1)- \
	      $(FUZZ_DIR)/work_$(1) tests/fuzz/corpus_$(1) \
	      >$(FUZZ_DIR)/fuzz_$(1).log 2>&1; then \
	  sed -n 's/^stat::number_of_executed_units: */fuzz $(1): passed, runs /p' \
	    $(FUZZ_DIR)/fuzz_$(1).log; \
	else \
	  tail -n 60 $(FUZZ_DIR)/fuzz_$(1).log; \
	  echo "fuzz $(1): FAILED (artifacts in $(FUZZ_DIR)/artifacts/)"; exit 1; \
	fi
endef
$(foreach n,$(FUZZ_NAMES),$(eval $(call FUZZ_RUN,$(n))))

# Rewrites tests/fuzz/corpus_tls/ from a recorded in-memory handshake.
fuzz-tls-corpus: $(FUZZ_DIR)/tls_record
	$< tests/fuzz/corpus_tls

# Records into the build dir and checks that every recorded seed replays to
# a completed handshake with data: the TLS target's runs are repeatable.
fuzz-tls-replay: $(FUZZ_DIR)/tls_record
	@$< $(FUZZ_DIR)/tls_replay >/dev/null && echo "fuzz tls: recorded handshakes replay"
