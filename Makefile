# SPDX-License-Identifier: MIT
#
# voxbridge build. `make` builds into build/, `make test` runs the suite.
# SANITIZER=address,undefined or SANITIZER=thread builds into build/asan or
# build/tsan so instrumented and plain objects never mix.

CC       ?= cc
SANITIZER ?=
CI       ?=

ifeq ($(SANITIZER),)
  BUILD := build
else ifeq ($(SANITIZER),thread)
  BUILD := build/tsan
else
  BUILD := build/asan
endif

# Debian packages the project needs to build, test, bench and demo.
DEB_PKGS := build-essential pkg-config clang clang-format libclang-rt-14-dev \
            libuv1-dev libwslay-dev libmbedtls-dev libcjson-dev \
            libsamplerate0-dev libspeexdsp-dev libopus-dev libogg-dev \
            libopusenc-dev libopusfile-dev opus-tools node-llhttp \
            prometheus nginx-light python3-yaml sox espeak-ng gnuplot-nox \
            ca-certificates openssl procps valgrind

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes \
        -Wmissing-prototypes -Wformat=2 -Wpointer-arith -Wcast-qual \
        -Wwrite-strings -Wvla -Wundef -Wold-style-definition
ifeq ($(CI),true)
  WARN += -Werror
endif

LLHTTP_DIR  := /usr/share/llhttp
LLHTTP_INC  := /usr/share/include/llhttp

# What every compile needs, whatever CFLAGS says; mk/fuzz.mk builds from
# the same two. CFLAGS (default -O2 -g) is the user's optimisation and
# debug choice: given on the command line (make CFLAGS=-O0) it replaces
# only that, since `override` appends the project's flags to it, never
# drops them.
# libopusenc's and opusfile's headers include <opus.h> from the directory
# `pkg-config --cflags opus` names (Debian: /usr/include/opus).
OPUS_INC      := /usr/include/opus
BASE_CPPFLAGS := -I. -I$(LLHTTP_INC) -I$(OPUS_INC) -D_GNU_SOURCE -MMD -MP
STD_CFLAGS    := -std=c11 -pthread

override CPPFLAGS += $(BASE_CPPFLAGS)
CFLAGS            ?= -O2 -g
override CFLAGS   += $(STD_CFLAGS) $(WARN)
override LDFLAGS  += -pthread
ifneq ($(SANITIZER),)
  override CFLAGS  += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer
  override LDFLAGS += -fsanitize=$(SANITIZER)
  ifeq ($(SANITIZER),thread)
    override CPPFLAGS += -DVB_SANITIZE_THREAD=1
  else
    override CFLAGS   += -fno-sanitize-recover=all
  endif
endif

# Evaluated lazily, inside recipes, after `deps` has installed pkg-config data.
PKGS = libuv libcjson samplerate speexdsp opus libopusenc opusfile ogg
LIBS = $(shell pkg-config --libs $(PKGS)) -lwslay -lmbedtls -lmbedx509 -lmbedcrypto -lm

LIB_SRCS  := $(sort $(wildcard core/*.c net/*.c dsp/*.c ai/*.c))
MAIN_SRCS := $(filter %/main.c,$(LIB_SRCS))
LIB_SRCS  := $(filter-out $(MAIN_SRCS),$(LIB_SRCS))
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
LLHTTP_OBJS := $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o $(BUILD)/llhttp/llhttp.o
LIBVB     := $(BUILD)/libvb.a

TEST_SRCS := $(sort $(wildcard tests/test_*.c))
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TEST_MAIN := $(BUILD)/tests/harness.o
# Tests that start threads; CI runs these again under ThreadSanitizer.
THREADED_TESTS := test_ring test_metrics test_log

BENCH_TOOLS := $(BUILD)/bench_ring
# Programs: each tool/<name>.c under bench/ or a */main.c becomes a binary.
PROGS :=

# Each module may add programs, tests and targets in mk/<module>.mk.
-include $(sort $(wildcard mk/*.mk))

.DEFAULT_GOAL := all
.SECONDARY:
.PHONY: all deps test test-threaded stress bench-ring format format-check check-deps clean
all: $(LIBVB) $(TEST_BINS) $(PROGS)

deps:
	@missing=$$(dpkg-query -W -f='$${db:Status-Abbrev} $${Package}\n' $(DEB_PKGS) 2>/dev/null \
	            | awk '$$1 == "ii" { print $$2 }' | sort > /tmp/.vb-have.$$$$; \
	            for p in $(DEB_PKGS); do grep -qx "$$p" /tmp/.vb-have.$$$$ || echo $$p; done; \
	            rm -f /tmp/.vb-have.$$$$); \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing $$missing"; \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BUILD)/%.o: %.c | deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# `voxbridge --version` and vb_build_info: the version and the commit, in a
# header rewritten only when they change (so main.o is rebuilt then, and
# only then). VERSION may be set on the command line.
VERSION ?= 0.4.0
VB_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
VERSION_H := $(BUILD)/gen/vb_version.h
.PHONY: FORCE
$(VERSION_H): FORCE
	@mkdir -p $(@D)
	@printf '#define VB_VERSION "%s"\n#define VB_COMMIT "%s"\n' '$(VERSION)' '$(VB_COMMIT)' > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv -f $@.tmp $@
$(BUILD)/core/main.o: $(VERSION_H)
$(BUILD)/core/main.o: override CPPFLAGS += -I$(BUILD)/gen

# llhttp ships as generated C in node-llhttp; it is not ours, so no strict warnings.
# Its sources exist only once `deps` has installed the package, so they are
# targets made by `deps` (a parallel build on a clean machine waits for it).
$(LLHTTP_DIR)/%.c: | deps
	@test -f $@ || { echo "$@ missing: is node-llhttp installed?"; exit 1; }

$(BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c | deps
	@mkdir -p $(@D)
	$(CC) -I$(LLHTTP_INC) $(filter-out -Werror,$(CFLAGS)) -w -c $< -o $@

$(LIBVB): $(LIB_OBJS) $(LLHTTP_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(TEST_MAIN): tests/harness.c | deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_MAIN) $(LIBVB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

$(BUILD)/bench_%: $(BUILD)/bench/bench_%.o $(LIBVB)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

# T=name runs a single test binary (e.g. make test T=test_ring).
test: $(TEST_BINS) $(PROGS)
	@tests/run.sh $(BUILD) $(if $(T),$(T),$(notdir $(TEST_BINS)))

test-threaded: $(THREADED_TESTS:%=$(BUILD)/tests/%) $(PROGS)
	@tests/run.sh $(BUILD) $(THREADED_TESTS)

# Long stress runs, kept out of `make test` (which runs a short version):
# the ring's two-thread stress with STRESS_ITEMS items, per-item sequence
# checks; SANITIZER=thread runs it under ThreadSanitizer. The time limit
# grows with the count (VB_TEST_SLOW scales the case's 120 s).
STRESS_ITEMS ?= $(if $(filter thread,$(SANITIZER)),5000000,50000000)
stress: $(BUILD)/tests/test_ring
	VB_BUILD_DIR=$(BUILD) VB_STRESS_ITEMS=$(STRESS_ITEMS) \
	  VB_TEST_SLOW=$$(( $(STRESS_ITEMS) / 10000000 + 1 )) \
	  $(BUILD)/tests/test_ring ring_two_thread_stress

bench-ring: $(BUILD)/bench_ring
	$(BUILD)/bench_ring

FORMAT_SRCS = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null || find core net dsp ai tests bench -name '*.[ch]')
format:
	clang-format -i $(FORMAT_SRCS)
format-check: | deps
	clang-format --dry-run --Werror $(FORMAT_SRCS)

# Include direction (ARCHITECTURE.md §6): core <- dsp, net <- ai. core/main.c is
# the composition root that wires every stage, so it alone may include all.
check-deps:
	@bad=$$(grep -nE '#include *"(net|dsp|ai)/' $$(ls core/*.[ch] | grep -v '^core/main.c$$') 2>/dev/null; \
	        grep -nE '#include *"ai/' net/*.[ch] dsp/*.[ch] 2>/dev/null; \
	        grep -nE '#include *"net/' dsp/*.[ch] 2>/dev/null; \
	        grep -nE '#include *"dsp/' net/*.[ch] 2>/dev/null); \
	if [ -n "$$bad" ]; then echo "check-deps: include direction violated:"; echo "$$bad"; exit 1; fi; \
	echo "check-deps: ok"

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
