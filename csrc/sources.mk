# csrc/sources.mk: which C files make up coglet, by directory, so that setup.py, tests/c and
# fuzz/ never list files by hand and keep building when files move between directories.
#
#   COGLET_PY_SRCS     every .c under the directories in COGLET_PY_DIRS: they include
#                      Python.h and are only ever part of the extension
#   COGLET_PLAIN_SRCS  every other .c under csrc/: plain C, also linked by tests/c and fuzz/
#   (the directories in COGLET_SEPARATE_DIRS are neither: each is a shared object of its own,
#   built by setup.py beside the extension, e.g. shim/, the libcurl shim)
#
# setup.py reads COGLET_PY_DIRS from this file (one `NAME = words` line) and applies the same
# rule, so a directory is named here once. tests/c and fuzz/ set COGLET_OUT (and CC, CFLAGS)
# before including this file and link $(COGLET_LIB) and $(LLHTTP_LIB): objects are compiled
# once each, with header dependencies, and an archive only pulls in what a binary uses.

COGLET_PY_DIRS = py worker
COGLET_SEPARATE_DIRS = shim

COGLET_CSRC := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
COGLET_ALL_SRCS := $(filter-out $(foreach d,$(COGLET_SEPARATE_DIRS),$(COGLET_CSRC)/$(d)/%),\
                   $(sort $(shell find $(COGLET_CSRC) -name '*.c')))
COGLET_PY_SRCS := $(filter $(foreach d,$(COGLET_PY_DIRS),$(COGLET_CSRC)/$(d)/%),$(COGLET_ALL_SRCS))
COGLET_PLAIN_SRCS := $(filter-out $(COGLET_PY_SRCS),$(COGLET_ALL_SRCS))

# What the plain-C group compiles against (libcurl: headers only, it is dlopen'ed) and links.
COGLET_PLAIN_PKGS = libuv jansson libpcre2-8 libcurl
COGLET_PLAIN_LDLIBS = $(shell pkg-config --libs libuv jansson libpcre2-8) -ldl -lm -lpthread

# llhttp as Debian's node-llhttp ships it: C sources, built with their own flags (the
# generated C is not -Wextra clean). setup.py also accepts a system libllhttp.
LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INCLUDE ?= /usr/share/include/llhttp
LLHTTP_SRCS = $(LLHTTP_DIR)/api.c $(LLHTTP_DIR)/http.c $(LLHTTP_DIR)/llhttp.c

ifdef COGLET_OUT
# The build stamp the extension gets from setup.py (build/gen/coglet_build_info.h), with fixed
# values: these binaries are never shipped. Only common/build_info.c includes it.
COGLET_STAMP_VERSION ?= test
COGLET_STAMP = $(COGLET_OUT)/gen/coglet_build_info.h
COGLET_CFLAGS = -I$(COGLET_CSRC) -I$(LLHTTP_INCLUDE) -I$(COGLET_OUT)/gen \
                $(shell pkg-config --cflags $(COGLET_PLAIN_PKGS))
COGLET_OBJS = $(patsubst $(COGLET_CSRC)/%.c,$(COGLET_OUT)/obj/%.o,$(COGLET_PLAIN_SRCS))
COGLET_LIB = $(COGLET_OUT)/libcoglet.a
LLHTTP_LIB = $(COGLET_OUT)/libllhttp.a
LLHTTP_CFLAGS ?= -O1 -g

$(COGLET_STAMP):
	@mkdir -p $(@D)
	@printf '%s\n' '#ifndef COGLET_BUILD_INFO_GENERATED_H' '#define COGLET_BUILD_INFO_GENERATED_H' \
	    '#define COGLET_VERSION "$(COGLET_STAMP_VERSION)"' '#define COGLET_GIT_SHA "unknown"' \
	    '#define COGLET_GIT_DIRTY 0' '#define COGLET_BUILD_TIME "1970-01-01T00:00:00Z"' \
	    '#define COGLET_COMPILER "$(CC)"' '#endif' > $@

$(COGLET_OUT)/obj/%.o: $(COGLET_CSRC)/%.c | $(COGLET_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(COGLET_CFLAGS) -MMD -MP -c -o $@ $<

$(COGLET_LIB): $(COGLET_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(COGLET_OUT)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(@D)
	$(CC) $(LLHTTP_CFLAGS) -I$(LLHTTP_INCLUDE) -c -o $@ $<

$(LLHTTP_LIB): $(patsubst $(LLHTTP_DIR)/%.c,$(COGLET_OUT)/llhttp/%.o,$(LLHTTP_SRCS))
	@rm -f $@
	ar rcs $@ $^

-include $(COGLET_OBJS:.o=.d)
endif
