# The purchase API: a FastCGI responder (C) behind nginx, with Redis and PostgreSQL.
#
#   make          build the responder (build/stock-fcgi)
#   make run      install missing packages (as root), build, and serve
#                 http://127.0.0.1:3000 from a private stack under .run/ (Ctrl-C stops it)
#   make test     build and run every test against real services started on free ports
#
# See README.md for the rest (up, down, psql, reset, format).

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wformat=2
PKGS     = hiredis libpq json-c
# Recursive (=) on purpose: pkg-config runs when a recipe needs it, which is
# after `make run` has installed the packages that provide the .pc files.
DEPFLAGS = -D_POSIX_C_SOURCE=200809L -Iinclude $(shell pkg-config --cflags $(PKGS))
LIBS     = $(shell pkg-config --libs $(PKGS)) -lfcgi
# The test build: sanitizers, and the fault points of include/fault.h.
SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
           -DSTOCK_FAULT_POINTS

SRC      = $(wildcard app/*.c)
LIB_SRC  = $(filter-out app/main.c,$(SRC))
UNIT_SRC = $(wildcard tests/unit/*.c)

BIN      = build/stock-fcgi
ASAN_BIN = build/asan/stock-fcgi
UNIT_BIN = build/asan/unit-tests
FCGI_REQ = build/fcgi-request
FUZZ_BIN = build/fuzz/fuzz-request
FUZZ_SRC = tests/fuzz/fuzz_request.c app/request.c app/jsonscan.c app/decimal.c
# make fuzz runs this long; make test runs the short FUZZ_TEST_SECONDS.
FUZZ_SECONDS ?= 600

OBJ      = $(SRC:%.c=build/obj/%.o)
ASAN_OBJ = $(SRC:%.c=build/asan/obj/%.o) $(UNIT_SRC:%.c=build/asan/obj/%.o)

STACK    = tests/stack/stack.sh
FORMATTED = app/*.c include/*.h tests/unit/*.c tests/unit/*.h tests/integration/*.c tests/fuzz/*.c

.PHONY: all asan deps run up down psql reset prune test test-unit fuzz bench bench-cluster install format format-check clean

all: $(BIN)

asan: $(ASAN_BIN) $(UNIT_BIN)

$(BIN): $(OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

build/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(DEPFLAGS) -MMD -MP -c -o $@ $<

$(ASAN_BIN): $(filter build/asan/obj/app/%,$(ASAN_OBJ))
	$(CC) $(CFLAGS) $(SANITIZE) $(LDFLAGS) -o $@ $^ $(LIBS)

$(UNIT_BIN): $(LIB_SRC:%.c=build/asan/obj/%.o) $(UNIT_SRC:%.c=build/asan/obj/%.o)
	$(CC) $(CFLAGS) $(SANITIZE) $(LDFLAGS) -o $@ $^ $(LIBS)

# libFuzzer (clang) on the request parsers, with ASan and UBSan.
$(FUZZ_BIN): $(FUZZ_SRC) $(wildcard include/*.h)
	@mkdir -p $(dir $@)
	clang $(WARN) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		$(DEPFLAGS) -o $@ $(FUZZ_SRC) $(LIBS)

# A strict FastCGI client for the integration tests.
$(FCGI_REQ): tests/integration/fcgi_request.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -D_POSIX_C_SOURCE=200809L -o $@ $<

build/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(SANITIZE) $(DEPFLAGS) -MMD -MP -c -o $@ $<

# Installs what is missing when run as root; otherwise prints the apt-get
# line. `make deps` is what `make run` needs; `make test` adds its own tools.
deps:
	@tests/stack/deps.sh run

# $(call fail,MESSAGE): the last line of a step that failed, so that a newcomer
# never meets a bare "make: *** Error" (the step printed its details above).
fail = { echo "make $@: $(1)" >&2; exit 1; }
BUILD_FAILED = the build failed (the compiler's message is above): fix that; or 'make clean' and try again
STACK_FAILED = the stack failed (the 'stack:' lines above say why; logs in $${RUN_DIR:-.run}/log): \
               fix that; then 'make down' and try again
# After the stack's failure: one it foresaw (exit status 1) ended with its own
# 'stack:' line, which says what failed and what to do, and stays the last
# word; any other (a command that failed unexpectedly: 70) gets STACK_FAILED.
stack_fail = { [ $$? -eq 1 ] && exit 1; $(call fail,$(STACK_FAILED)); }

run: deps
	@$(MAKE) --no-print-directory -s all || $(call fail,$(BUILD_FAILED))
	@$(STACK) run || $(stack_fail)

up: deps
	@$(MAKE) --no-print-directory -s all || $(call fail,$(BUILD_FAILED))
	@$(STACK) up || $(stack_fail)

down:
	@$(STACK) down

# psql, reset and prune act on the stack where it runs: like down, they need
# none of the settings it was started with (PGPORT, ...).
psql:
	@$(STACK) psql

reset: deps
	@$(STACK) reset

test:
	@tests/stack/deps.sh test
	@$(MAKE) --no-print-directory all asan $(FCGI_REQ) $(FUZZ_BIN) || $(call fail,$(BUILD_FAILED))
	@tests/run.sh

# Fuzzes for FUZZ_SECONDS; new inputs go to build/fuzz/corpus, crashes to
# tests/fuzz/findings/ (add each one to tests/fuzz/corpus/ once fixed).
fuzz:
	@tests/stack/deps.sh test
	@$(MAKE) --no-print-directory $(FUZZ_BIN)
	@tests/fuzz/run.sh $(FUZZ_SECONDS)

# The benchmark: workloads side by side with their ceilings (see
# tests/bench/bench.sh); not part of make test.
bench: deps
	@tests/stack/deps.sh bench
	@$(MAKE) --no-print-directory -s all
	@tests/bench/bench.sh

# Purchases/s with one responder host and with two, and the CPU time each
# purchase costs a host (tests/cluster/bench.sh; root: network namespaces).
bench-cluster: deps
	@tests/stack/deps.sh bench
	@$(MAKE) --no-print-directory -s all
	@tests/cluster/bench.sh

# Installs the responder, the nginx templates, the SQL, example settings
# and the systemd unit under DESTDIR + PREFIX (nginx/README.md: Operations).
PREFIX  ?= /usr/local
BINDIR   = $(PREFIX)/bin
SHAREDIR = $(PREFIX)/share/stock-api
UNITDIR ?= $(PREFIX)/lib/systemd/system

install: all
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(SHAREDIR)/nginx" "$(DESTDIR)$(SHAREDIR)/sql" \
	    "$(DESTDIR)$(SHAREDIR)/examples" "$(DESTDIR)$(SHAREDIR)/tests" "$(DESTDIR)$(UNITDIR)"
	install -m 755 $(BIN) "$(DESTDIR)$(BINDIR)/stock-fcgi"
	install -m 644 nginx/*.conf.in "$(DESTDIR)$(SHAREDIR)/nginx/"
	install -m 755 nginx/render.sh nginx/setup-db.sh "$(DESTDIR)$(SHAREDIR)/nginx/"
	install -m 644 sql/*.sql "$(DESTDIR)$(SHAREDIR)/sql/"
	install -m 644 nginx/env/*.env "$(DESTDIR)$(SHAREDIR)/examples/"
	install -m 644 README.md "$(DESTDIR)$(SHAREDIR)/"
	install -m 644 nginx/README.md "$(DESTDIR)$(SHAREDIR)/nginx/"
	install -m 644 tests/README.md "$(DESTDIR)$(SHAREDIR)/tests/"
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SHAREDIR@|$(SHAREDIR)|g' nginx/stock-api@.service.in \
	    >"$(DESTDIR)$(UNITDIR)/stock-api@.service"
	chmod 644 "$(DESTDIR)$(UNITDIR)/stock-api@.service"

# The docker-compose demo where there is no Docker engine or image registry:
# podman, with stand-ins for the registry's images, in a store of its own
# (tests/compose/stack.sh; README: Running it elsewhere). As root.
.PHONY: compose-up compose-down
compose-up:
	@tests/stack/deps.sh test
	@tests/compose/stack.sh up

compose-down:
	@tests/compose/stack.sh down

# Removes idempotency keys and purchase tokens older than 24 hours from the
# local stack (sql/prune.sql), and says how many.
prune:
	@$(STACK) prune

test-unit: asan
	@$(UNIT_BIN)

format:
	clang-format -i $(FORMATTED)

format-check:
	clang-format --dry-run --Werror $(FORMATTED)

clean:
	rm -rf build

-include $(OBJ:.o=.d) $(ASAN_OBJ:.o=.d)
