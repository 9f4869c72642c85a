# dsa: one Makefile for the library, the CLI, tests, sanitizers, demo and benchmarks.
#
#   make            build build/dsa, build/libdsa.a and the HDF5 zstd plugin
#   make deps       install the Debian packages the project needs (idempotent)
#   make test       deps + build + the whole test suite (C unit tests, CLI tests, Python check)
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make demo       deps + build + the pipeline on generated data
#   make bench      benchmarks, results appended to bench/RESULTS.md
#   make install    PREFIX/bin/dsa and the HDF5 zstd plugin in PREFIX/lib/hdf5/plugin
#                   (PREFIX=/usr/local by default; DESTDIR= for staged installs)
#   make clean
#
# Knobs: CUDA=0 (skip nvcc even when found), WERROR=0 (warnings not fatal), BUILD=dir,
# PREFIX=dir (make install).

BUILD   ?= build
CUDA    ?= auto
WERROR  ?= 1
SAN     ?= 0
CC      ?= cc
PYENV   ?= .venv
PREFIX  ?= /usr/local

PKGS      := hdf5 libzstd libcjson zlib
# OpenBLAS, the OpenMP build: it shares libgomp's thread pool with our own OpenMP loops.
# (The pthread build runs a second pool that competes with OpenMP's spinning workers for
# the same cores: 2.3x slower training steps measured on 2 cores.) The rpath pins it
# whatever the Debian alternatives point libopenblas.so.0 at.
OPENBLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -I/usr/include/x86_64-linux-gnu/openblas-openmp
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -L$(OPENBLAS_DIR) -lopenblas -Wl,-rpath,$(OPENBLAS_DIR)

# Vector ISA for our own loops (OpenBLAS picks its kernels at run time): AVX-512
# (x86-64-v4) or AVX2 + FMA (x86-64-v3) where the build machine has them, else the
# compiler's default; v4 measured 18% faster than v3 on a tiny-model 4K step. ARCH= to
# override (e.g. ARCH= for a portable binary).
CPUFLAGS := $(shell cat /proc/cpuinfo 2>/dev/null | grep -m1 '^flags')
ARCH    ?= $(if $(and $(findstring avx512bw,$(CPUFLAGS)),$(findstring avx512vl,$(CPUFLAGS)),$(findstring avx512dq,$(CPUFLAGS))),-march=x86-64-v4,$(if $(and $(findstring avx2,$(CPUFLAGS)),$(findstring fma,$(CPUFLAGS))),-march=x86-64-v3))
CFLAGS  := -std=c11 -D_GNU_SOURCE -O2 -g $(ARCH) -Wall -Wextra -Wshadow -Wno-unused-parameter -fopenmp -I. $(PKG_CFLAGS)
LDLIBS  := $(PKG_LIBS) -lpthread -lm -fopenmp
ifeq ($(WERROR),1)
CFLAGS  += -Werror
endif
# The HDF5 plugin is loaded into stock HDF5 tools, which carry no sanitizer runtime.
PLUGIN_CFLAGS := $(CFLAGS)
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1
LDLIBS  += -fsanitize=address,undefined
CUDA    := 0
endif

# CUDA: compiled whenever nvcc is found (CI always has it), unless CUDA=0.
comma := ,
NVCC ?= $(shell command -v nvcc 2>/dev/null)
ifeq ($(CUDA),auto)
  ifneq ($(NVCC),)
    CUDA := 1
  else
    CUDA := 0
  endif
endif
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
NVCCFLAGS := -O2 -std=c++17 -I. -arch=sm_90 --compiler-options -Wall,-Wextra$(if $(filter 1,$(WERROR)),$(comma)-Werror)
ifeq ($(CUDA),1)
  CFLAGS += -DDSA_HAVE_CUDA=1
  LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart -lstdc++
endif

LIB_DIRS := core data kernels kernels/cpu indexer pretrain checkpoints
LIB_SRCS := $(filter-out pretrain/main.c data/h5z_zstd_plugin.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
CU_SRCS  := $(if $(filter 1,$(CUDA)),$(wildcard kernels/cuda/*.cu))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(CU_SRCS:%.cu=$(BUILD)/obj/%.cu.o)
TEST_SRCS := $(wildcard tests/test_*.c)
TESTS    := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
BENCHES  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
PLUGIN   := $(BUILD)/hdf5-plugin/libdsa_h5zstd.so
HEADERS  := $(foreach d,$(LIB_DIRS) tests,$(wildcard $(d)/*.h))

.PHONY: all deps test asan demo bench clean pyenv check-tools tests-build torch-env parity install uninstall
all: check-tools $(BUILD)/dsa $(BUILD)/libdsa.a $(PLUGIN)

check-tools:
	@pkg-config --exists $(PKGS) || { echo "missing libraries ($(PKGS)): run 'make deps'"; exit 1; }
	@test -e $(OPENBLAS_DIR)/libopenblas.so || { echo "missing OpenBLAS (OpenMP build) in $(OPENBLAS_DIR): run 'make deps'"; exit 1; }
	@echo "dsa build: CC=$(CC) CUDA=$(CUDA)$(if $(filter 1,$(CUDA)), ($(NVCC))) SAN=$(SAN) BUILD=$(BUILD)" > $(BUILD).config.txt 2>/dev/null || true

$(BUILD)/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The CPU kernels' tile loops need -O3 (full unrolling of the 4x16 register blocks):
# measured 2x on attention's backward over -O2.
# -fno-trapping-math lets GCC if-convert the selects of the vector exp (dsa_vexpf) and
# the ReLU masks on AVX2, where it has no mask registers; it changes no value (only
# which floating-point exception flags may be raised, which nothing here reads).
$(BUILD)/obj/kernels/cpu/%.o: CFLAGS += -O3 -funroll-loops -fno-trapping-math
$(BUILD)/obj/indexer/%.o: CFLAGS += -O3 -funroll-loops -fno-trapping-math

$(BUILD)/obj/%.cu.o: %.cu $(HEADERS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libdsa.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/dsa: $(BUILD)/obj/pretrain/main.o $(BUILD)/libdsa.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# The zstd filter as an HDF5 plugin, so h5dump and other HDF5 tools decode our shards
# with HDF5_PLUGIN_PATH set to the plugin's directory, as an absolute path
# ($PWD/build/hdf5-plugin, or PREFIX/lib/hdf5/plugin after make install): HDF5 takes a
# relative one relative to the current directory, and without the plugin h5dump prints an
# empty DATA block and exits 0.
$(PLUGIN): data/h5z_zstd_plugin.c data/h5z_zstd.c data/h5z_zstd.h
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -fPIC -shared data/h5z_zstd_plugin.c data/h5z_zstd.c -o $@ $(PKG_LIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libdsa.a tests/test_util.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libdsa.a -o $@ $(LDLIBS) -lcmocka

$(BUILD)/bench/%: bench/%.c $(BUILD)/libdsa.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libdsa.a -o $@ $(LDLIBS)

tests-build: all $(TESTS)

deps:
	@tools/install_deps.sh

# Python tools (h5py + hdf5plugin for the cross-check of our shards) in a virtual env.
pyenv: $(PYENV)/.ready
$(PYENV)/.ready: tools/requirements.txt
	python3 -m venv $(PYENV)
	$(PYENV)/bin/pip install --quiet --disable-pip-version-check -r tools/requirements.txt
	touch $@

test: deps
	@$(MAKE) --no-print-directory tests-build pyenv
	@tests/run_tests.sh $(BUILD) $(PYENV)

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 tests-build
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  tests/run_tests.sh build-asan ""

demo: deps
	@$(MAKE) --no-print-directory all pyenv
	@PYENV=$(PYENV) tools/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory all $(BENCHES)
	@tools/torch_env.sh $(TORCH_ENV) > /dev/null || echo "bench: no PyTorch environment; the comparison is skipped"
	@TORCH_PY=$(TORCH_ENV)/bin/python bench/run.sh $(BUILD)

# PyTorch (CPU use only) for tools/torch_ref.py: the parity test and the bench baseline.
TORCH_ENV ?= .venv-torch
torch-env:
	@tools/torch_env.sh $(TORCH_ENV)

# Parity with Hugging Face transformers' DeepSeek models (tools/hf_parity.py): tiny random
# models saved by transformers, evaluated by dsa, logits compared. Ends with a tests: line.
parity: deps
	@$(MAKE) --no-print-directory all
	@tools/parity.sh $(BUILD) $(TORCH_ENV)

# The dsa binary and the HDF5 plugin, for use outside the repository.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/hdf5/plugin
	install -m 755 $(BUILD)/dsa $(DESTDIR)$(PREFIX)/bin/dsa
	install -m 644 $(PLUGIN) $(DESTDIR)$(PREFIX)/lib/hdf5/plugin/libdsa_h5zstd.so
	@echo "installed $(DESTDIR)$(PREFIX)/bin/dsa and $(DESTDIR)$(PREFIX)/lib/hdf5/plugin/libdsa_h5zstd.so"
	@echo "  for HDF5's own tools (h5dump): export HDF5_PLUGIN_PATH=$(abspath $(DESTDIR)$(PREFIX))/lib/hdf5/plugin"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/dsa $(DESTDIR)$(PREFIX)/lib/hdf5/plugin/libdsa_h5zstd.so

clean:
	rm -rf build build-asan build.config.txt build-asan.config.txt
