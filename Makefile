# refract — build, run and test the constellation.
#
#   make                     build every binary into build/bin/
#   make deps                install missing Debian packages (idempotent)
#   make run                 build, make sample media, start the single-node stack
#   make test                build and run every test suite, ending with a summary line
#   make SANITIZE=address,undefined   the same build with sanitizers, into build/san/
#   make SANITIZE=thread     ThreadSanitizer build, into build/tsan/
#   make fuzz                libFuzzer targets (clang) into build/fuzz/
#   make format              clang-format every C file
#   make docs                regenerate docs/configuration.md's tables from common/rf_config.def
#
CC       ?= gcc
ifeq ($(CC),cc)
CC       := gcc
endif
SANITIZE ?=
OPT      ?= -O2
# Sanitizer builds go beside the normal one: ASan/UBSan in build/san,
# ThreadSanitizer (which cannot be combined with ASan) in build/tsan.
O        := build$(if $(SANITIZE),/$(if $(findstring thread,$(SANITIZE)),tsan,san))

PKGS     := libczmq libzmq jansson yaml-0.1
CFLAGS_BASE := -std=gnu11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -Icommon \
               $(shell pkg-config --cflags $(PKGS))
ifneq ($(SANITIZE),)
CFLAGS_BASE += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS_SAN := -fsanitize=$(SANITIZE)
endif
LIBS_BASE := $(shell pkg-config --libs $(PKGS)) -lxxhash -lz -lexpat -lisal -lcrypto -lpthread
# common/rf_tmpl (storgate's Nunjucks templates) runs Duktape and PCRE2, rf_s3c
# (S3-backed mounts) libcurl;
# --as-needed keeps them out of the binaries that do not use it.
LIBS_BASE += -Wl,--push-state,--as-needed $(shell pkg-config --libs duktape libpcre2-8) -lcurl -Wl,--pop-state

H2O_CFLAGS := $(shell pkg-config --cflags libh2o-evloop)
H2O_LIBS   := $(shell pkg-config --libs libh2o-evloop) -lssl -lcrypto -lz -lbrotlienc -lpcre2-8 -lhiredis
VIPS_CFLAGS := $(shell pkg-config --cflags vips)
VIPS_LIBS   := $(shell pkg-config --libs vips)

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(O)/obj/%.o)
COMMON_LIB := $(O)/lib/librefract-common.a

GW_SRC  := $(wildcard services/gateway/*.c)
GW_OBJ  := $(GW_SRC:%.c=$(O)/obj/%.o)
IMG_SRC := $(wildcard services/image-worker/*.c)
IMG_OBJ := $(IMG_SRC:%.c=$(O)/obj/%.o)
# The image transform core (img_core.c) builds and tests without the bus.
# img_orc.c serialises liborc's code-memory changes; ORC_GUARD exports its
# two wrappers from the executable so that libvips's calls bind to them.
IMG_CORE_OBJ := $(O)/obj/services/image-worker/img_core.o $(O)/obj/services/image-worker/img_orc.o
ORC_GUARD := -Wl,--export-dynamic-symbol=orc_program_compile -Wl,--export-dynamic-symbol=orc_program_free
# The video transform core (MP4 -> HLS) likewise; only its own tests link it.
VID_CORE_OBJ := $(O)/obj/services/video-worker/vid_core.o $(O)/obj/services/video-worker/vid_recut.o \
                $(O)/obj/services/video-worker/vid_hvcc.o
VID_CORE_SRC := services/video-worker/vid_core.c services/video-worker/vid_recut.c services/video-worker/vid_hvcc.c
AV_PKGS   := libavformat libavcodec libavutil libswscale libswresample
AV_CFLAGS := $(shell pkg-config --cflags $(AV_PKGS))
AV_LIBS   := $(shell pkg-config --libs $(AV_PKGS)) -lm

VID_SRC := $(wildcard services/video-worker/*.c)
VID_OBJ := $(VID_SRC:%.c=$(O)/obj/%.o)

SG_SRC := $(wildcard services/storgate-scheduler/*.c)
SG_OBJ := $(SG_SRC:%.c=$(O)/obj/%.o)

PW_SRC := $(wildcard services/prewarm/*.c)
PW_OBJ := $(PW_SRC:%.c=$(O)/obj/%.o)

BINS := $(O)/bin/refract-gateway $(O)/bin/refract-image-worker $(O)/bin/refract-video-worker \
        $(O)/bin/refract-storgate-scheduler $(O)/bin/refract-prewarm

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(O)/tests/%)
# Gateway unit tests (tests/unit/gateway/) link the gateway's objects
# without its main(), so stages and tables are tested in-process.
GW_UNIT_SRC  := $(wildcard tests/unit/gateway/test_*.c)
GW_UNIT_BINS := $(GW_UNIT_SRC:tests/unit/gateway/%.c=$(O)/tests/gateway/%)
GW_LIB_OBJ   := $(filter-out $(O)/obj/services/gateway/main.o,$(GW_OBJ))

FUZZ_SRC  := $(wildcard fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRC:fuzz/%.c=build/fuzz/%)

.PHONY: all deps run test unit fuzz format clean bench docs
all: $(BINS) $(UNIT_BINS) $(GW_UNIT_BINS) build/bin/bench-vips-loop build/bin/bench-evict \
     build/bin/refract-kafka-mock

deps:
	@scripts/deps.sh

$(O)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS_BASE) $(H2O_CFLAGS) $(VIPS_CFLAGS) $(AV_CFLAGS) -MMD -MP -c $< -o $@

$(COMMON_LIB): $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR    $@"
	@ar rcs $@ $^

$(O)/bin/refract-gateway: $(GW_OBJ) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(H2O_LIBS) $(LIBS_BASE)

$(O)/bin/refract-image-worker: $(IMG_OBJ) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(ORC_GUARD) $(VIPS_LIBS) $(LIBS_BASE)

$(O)/bin/refract-video-worker: $(VID_OBJ) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(AV_LIBS) -lcurl $(LIBS_BASE)

$(O)/bin/refract-storgate-scheduler: $(SG_OBJ) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ -lcurl -lhiredis -lduktape -lrdkafka $(LIBS_BASE)

# The Kafka pre-warm consumer (librdkafka), requesting through the gateway (libcurl).
$(O)/bin/refract-prewarm: $(PW_OBJ) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ -lrdkafka -lcurl $(LIBS_BASE)

# Unit tests link the common library, and the image core where they need it;
# UNIT_EXTRA names a gateway file one of them tests without the gateway.
$(O)/tests/%: tests/unit/%.c $(COMMON_LIB) $(IMG_CORE_OBJ)
	@mkdir -p $(dir $@)
	@echo "  TEST  $@"
	@$(CC) $(CFLAGS_BASE) $(VIPS_CFLAGS) -Iservices/image-worker -o $@ $< $(UNIT_EXTRA) $(IMG_CORE_OBJ) $(COMMON_LIB) \
	    -lcmocka $(ORC_GUARD) $(VIPS_LIBS) $(LIBS_BASE)

# liborc itself, called directly to reproduce the race img_orc.c guards against.
$(O)/tests/test_img_orc: UNIT_EXTRA = $(shell pkg-config --libs orc-0.4)

# The video core, with libavformat.
$(O)/tests/test_vid_core: UNIT_EXTRA = -Iservices/video-worker $(AV_CFLAGS) $(VID_CORE_OBJ) $(AV_LIBS)
$(O)/tests/test_vid_core: $(VID_CORE_OBJ)

# The gateway's pure header parsers (no h2o).
$(O)/tests/test_http_parse: UNIT_EXTRA = -Iservices/gateway $(O)/obj/services/gateway/gw_http_parse.o
$(O)/tests/test_http_parse: $(O)/obj/services/gateway/gw_http_parse.o

# The batch scan's snapshot file (storgate-scheduler, no Redis or curl).
$(O)/tests/test_sgsnap: UNIT_EXTRA = -Iservices/storgate-scheduler $(O)/obj/services/storgate-scheduler/sg_snap.o
$(O)/tests/test_sgsnap: $(O)/obj/services/storgate-scheduler/sg_snap.o
# The https:// leader lease's object (storgate-scheduler, pure).
$(O)/tests/test_sgldoc: UNIT_EXTRA = -Iservices/storgate-scheduler $(O)/obj/services/storgate-scheduler/sg_ldoc.o
$(O)/tests/test_sgldoc: $(O)/obj/services/storgate-scheduler/sg_ldoc.o

# HEVC parameter set renumbering (video-worker, pure: no libav); the test makes its media with the ffmpeg CLI.
$(O)/tests/test_vid_hvcc: UNIT_EXTRA = -Iservices/video-worker $(O)/obj/services/video-worker/vid_hvcc.o
$(O)/tests/test_vid_hvcc: $(O)/obj/services/video-worker/vid_hvcc.o

$(O)/tests/gateway/%: tests/unit/gateway/%.c $(GW_LIB_OBJ) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	@echo "  TEST  $@"
	@$(CC) $(CFLAGS_BASE) $(H2O_CFLAGS) -Iservices/gateway -o $@ $< $(GW_LIB_OBJ) $(COMMON_LIB) \
	    -lcmocka $(H2O_LIBS) $(LIBS_BASE)

build/bin/bench-evict: bench/evict.c $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -o $@ $< $(COMMON_LIB) $(LIBS_BASE) -lm

# A Kafka mock cluster for the tests of kafka:// webhooks (librdkafka's,
# over loopback TCP). A test tool: always built plain, into build/bin, which
# the tests use whatever REFRACT_BIN says.
build/bin/refract-kafka-mock: tests/tools/kafka_mock.c
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) -std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -o $@ $< -lrdkafka -lpthread

build/bin/bench-vips-loop: bench/vips_loop.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE $(VIPS_CFLAGS) -o $@ $< $(VIPS_LIBS) -lpthread

unit: $(UNIT_BINS) $(GW_UNIT_BINS)
	@scripts/run-unit.sh $(UNIT_BINS) $(GW_UNIT_BINS)

# libFuzzer targets: clang, with ASan+UBSan, built from the same sources.
comma := ,
FUZZ_CFLAGS := -std=gnu11 -O1 -g -D_GNU_SOURCE -Icommon -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
               $(shell pkg-config --cflags $(PKGS))
# The common library is compiled once for every target (instrumented, not
# linked with libFuzzer's main), then each target links what it uses.
FUZZ_COMMON_OBJ := $(COMMON_SRC:%.c=build/fuzz/obj/%.o)
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $@"
	@clang $(subst -fsanitize=fuzzer$(comma),-fsanitize=fuzzer-no-link$(comma),$(FUZZ_CFLAGS)) -MMD -MP -c $< -o $@
build/fuzz/libcommon.a: $(FUZZ_COMMON_OBJ)
	@ar rcs $@ $^
build/fuzz/%: fuzz/%.c build/fuzz/libcommon.a
	@mkdir -p $(dir $@)
	@echo "  FUZZ  $@"
	@clang $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_EXTRA) build/fuzz/libcommon.a $(LIBS_BASE)
-include $(FUZZ_COMMON_OBJ:.o=.d)

# The origin response parser, with picohttpparser from libh2o.
build/fuzz/fuzz_origin: FUZZ_EXTRA = -Iservices/gateway services/gateway/gw_origin_parse.c -lh2o-evloop
build/fuzz/fuzz_origin: services/gateway/gw_origin_parse.c services/gateway/gw_origin_parse.h

# vid_core over whole (hostile) source files, through libavformat and libavcodec.
build/fuzz/fuzz_vid_mp4: FUZZ_EXTRA = -Iservices/video-worker $(VID_CORE_SRC) $(AV_LIBS)
build/fuzz/fuzz_vid_mp4: $(VID_CORE_SRC) services/video-worker/vid_core.h services/video-worker/vid_recut.h

# The avcC parser of the frame-accurate trimmer (the avcC comes from the source).
build/fuzz/fuzz_avcc: FUZZ_EXTRA = -Iservices/video-worker services/video-worker/vid_recut.c \
                                   services/video-worker/vid_hvcc.c $(AV_LIBS)
build/fuzz/fuzz_avcc: services/video-worker/vid_recut.c services/video-worker/vid_recut.h services/video-worker/vid_hvcc.c

# The hvcC reader and the HEVC parameter set and slice renumbering (bytes from the source and libx265).
build/fuzz/fuzz_hvcc: FUZZ_EXTRA = -Iservices/video-worker services/video-worker/vid_hvcc.c
build/fuzz/fuzz_hvcc: services/video-worker/vid_hvcc.c services/video-worker/vid_hvcc.h

# The video functions' URL parsers (times, segment names, trimming ranges).
build/fuzz/fuzz_vurl: FUZZ_EXTRA =
build/fuzz/fuzz_vurl: common/rf_vparse.h

# The cache's Range / conditional parsers and the purge API's URL parsers.
build/fuzz/fuzz_range: FUZZ_EXTRA = -Iservices/gateway services/gateway/gw_http_parse.c
build/fuzz/fuzz_range: services/gateway/gw_http_parse.c services/gateway/gw_http_parse.h

# The video core's saved-index parser (hostile: it may come from a shared cache).
build/fuzz/fuzz_vid_index: FUZZ_EXTRA = -Iservices/video-worker $(VID_CORE_SRC) $(AV_LIBS)
build/fuzz/fuzz_vid_index: $(VID_CORE_SRC) services/video-worker/vid_core.h services/video-worker/vid_recut.h

# The preamble a worker writes before a streamed result (gw_tstream.c).
build/fuzz/fuzz_preamble: FUZZ_EXTRA = -Iservices/gateway services/gateway/gw_preamble.c
build/fuzz/fuzz_preamble: services/gateway/gw_preamble.c services/gateway/gw_preamble.h

# The batch scan's snapshot file (sg_scan.c).
build/fuzz/fuzz_sgsnap: FUZZ_EXTRA = -Iservices/storgate-scheduler services/storgate-scheduler/sg_snap.c
build/fuzz/fuzz_sgsnap: services/storgate-scheduler/sg_snap.c services/storgate-scheduler/sg_snap.h
build/fuzz/fuzz_sgldoc: FUZZ_EXTRA = -Iservices/storgate-scheduler services/storgate-scheduler/sg_ldoc.c
build/fuzz/fuzz_sgldoc: services/storgate-scheduler/sg_ldoc.c services/storgate-scheduler/sg_ldoc.h

# The pre-warm message parser (everything it reads comes from Kafka).
build/fuzz/fuzz_prewarm: FUZZ_EXTRA = -Iservices/prewarm services/prewarm/pw_msg.c
build/fuzz/fuzz_prewarm: services/prewarm/pw_msg.c services/prewarm/pw.h

# rf_tmpl.c embeds the vendored Nunjucks bundle with .incbin (from the
# repository root): rebuild what compiles it when the bundle changes.
$(O)/obj/common/rf_tmpl.o build/fuzz/obj/common/rf_tmpl.o: third_party/nunjucks/nunjucks.min.js

fuzz: $(FUZZ_BINS)

run: 
	@scripts/deps.sh --check >/dev/null 2>&1 || scripts/deps.sh
	@$(MAKE) --no-print-directory all
	@scripts/run.sh

test:
	@scripts/deps.sh --check >/dev/null 2>&1 || scripts/deps.sh
	@scripts/test.sh

bench: all
	@bench/run.sh

# The schema tables of docs/configuration.md come from common/rf_config.def.
docs: $(O)/bin/config-doc
	@$(O)/bin/config-doc docs/configuration.md && echo "docs/configuration.md: schema tables regenerated"

$(O)/bin/config-doc: scripts/config_doc.c $(COMMON_LIB)
	@mkdir -p $(dir $@)
	@$(CC) $(CFLAGS_BASE) -o $@ $< $(COMMON_LIB) $(LIBS_BASE)

format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
