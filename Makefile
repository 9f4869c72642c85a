# dsa: one Makefile for the library, the CLI, tests, sanitizers, demo and benchmarks.
#
#   make            build build/dsa, build/libdsa.a and the HDF5 zstd plugin
#   make deps       install the Debian packages the project needs (idempotent)
#   make test       deps + build + the whole test suite (C unit tests, CLI tests, Python check)
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make reliability  kill and full-disk faults at every file operation of train, convert,
#                   export and pack (tests/reliability.sh, through tests/fault_shim.c; also
#                   part of make test and make asan)
#   make fuzz       libFuzzer harnesses of the file parsers (tests/fuzz/), FUZZ_SECONDS each
#   make demo       deps + build + the pipeline on generated data
#   make bench      benchmarks, results appended to bench/RESULTS.md
#   make install    PREFIX/bin/dsa and the HDF5 zstd plugin in PREFIX/lib/hdf5/plugin
#                   (PREFIX=/usr/local by default; DESTDIR= for staged installs)
#   make gpu-bundle  build-gpu/: dsa, every test binary and gpu-check, self-contained for a
#                   bare GPU machine (tools/gpu_bundle.sh), and build-gpu.tar.xz, the archive
#                   that travels (at most 48 MiB; the target fails when over)
#   make gpu-bundle-check  the bundle run here as on a bare machine: env -i, only its own
#                   libraries, in a fake root where chroot is allowed (tests/cli/test_gpu_bundle.sh;
#                   gpu-check's GPU parts skip, never pass); .ci/run runs it
#   make clean
#
# Knobs: CUDA=0 (skip nvcc even when found), NCCL=0 (no NCCL communicator), CUDA_ARCH=90 (sm_N device code plus compute_N
# PTX, which newer GPUs compile at load), WERROR=0 (warnings not fatal), BUILD=dir,
# FUZZ_SECONDS=N (make fuzz: seconds per harness, default 30), PREFIX=dir (make install).

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
PLUGIN_LIBS = $(PKG_LIBS)
# BUNDLE=1 (make gpu-bundle sets it): the link of build-gpu/ (tools/gpu_bundle.sh), for a
# machine that has none of these libraries. HDF5 (without its ROS3 driver, so no curl or
# OpenSSL), szip, zstd and zlib are linked statically; OpenBLAS (36.5 MB: linked statically
# it would be in every binary) and cJSON, cmocka and the OpenMP and Fortran runtimes (no
# static archives on Debian) are copied into build-gpu/lib, found through the rpath
# $ORIGIN/../lib (binaries sit in build-gpu/bin and build-gpu/tests; DT_RPATH, so that
# OpenBLAS's own dependencies are found there too); libcudart is linked statically.
ifeq ($(BUNDLE),1)
PKG_LIBS := $(shell pkg-config --libs-only-L hdf5 2>/dev/null) -Wl,-Bstatic -lhdf5 -lsz -laec -lzstd -lz -Wl,-Bdynamic \
            -lcjson -L$(OPENBLAS_DIR) -lopenblas -Wl,--disable-new-dtags,-rpath,'$$ORIGIN/../lib'
# The plugin is loaded into a process that brings its own HDF5; Debian's libzstd.a is not
# position-independent, so the plugin (in build-gpu/lib/hdf5-plugin) takes lib/libzstd.so.1.
PLUGIN_LIBS := -lzstd -Wl,--disable-new-dtags,-rpath,'$$ORIGIN/..'
CUDART := -lcudart_static -ldl -lrt
endif

# MPI (Open MPI from Debian, `make deps`): always linked; `dsa train` started by mpirun or
# srun runs data parallel over its ranks (pretrain/comm.h), started alone it is one process
# and never calls MPI_Init.
MPI_PKG    := ompi-c
MPI_CFLAGS := $(shell pkg-config --cflags $(MPI_PKG) 2>/dev/null)
MPI_LIBS   := $(shell pkg-config --libs $(MPI_PKG) 2>/dev/null)

# Vector ISA for our own loops (OpenBLAS picks its kernels at run time): AVX-512
# (x86-64-v4) or AVX2 + FMA (x86-64-v3) where the build machine has them, else the
# compiler's default; v4 measured 18% faster than v3 on a tiny-model 4K step. ARCH= to
# override (e.g. ARCH= for a portable binary).
CPUFLAGS := $(shell cat /proc/cpuinfo 2>/dev/null | grep -m1 '^flags')
ARCH    ?= $(if $(and $(findstring avx512bw,$(CPUFLAGS)),$(findstring avx512vl,$(CPUFLAGS)),$(findstring avx512dq,$(CPUFLAGS))),-march=x86-64-v4,$(if $(and $(findstring avx2,$(CPUFLAGS)),$(findstring fma,$(CPUFLAGS))),-march=x86-64-v3))
CFLAGS  := -std=c11 -D_GNU_SOURCE -O2 -g $(ARCH) -Wall -Wextra -Wshadow -Wno-unused-parameter -fopenmp -I. $(PKG_CFLAGS) $(MPI_CFLAGS)
LDLIBS  := $(PKG_LIBS) $(MPI_LIBS) -lpthread -lm -fopenmp
ifeq ($(WERROR),1)
CFLAGS  += -Werror
endif
# The HDF5 plugin is loaded into stock HDF5 tools, which carry no sanitizer runtime.
PLUGIN_CFLAGS := $(CFLAGS)
# FUZZ=1 (make fuzz sets it, with CC=clang): libFuzzer coverage and ASan + UBSan in every
# object; OpenMP through libgomp, the runtime OpenBLAS uses too.
# The numeric kernels (kernels/, indexer/) use GCC vector builtins: gcc compiles them,
# uninstrumented; the parsers under test are all clang-compiled.
ifeq ($(FUZZ),1)
GCC_CFLAGS := $(CFLAGS)
CFLAGS  := $(filter-out -fopenmp,$(CFLAGS)) -fopenmp=libgomp -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1
LDLIBS  := $(filter-out -fopenmp,$(LDLIBS)) -fopenmp=libgomp -fsanitize=address,undefined
CUDA    := 0
$(BUILD)/obj/kernels/%.o $(BUILD)/obj/indexer/%.o: override CC := gcc
$(BUILD)/obj/kernels/%.o $(BUILD)/obj/indexer/%.o: CFLAGS := $(GCC_CFLAGS)
endif
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
# nvcc's own warnings are errors too (-Werror all-warnings), not only the host compiler's;
# host code is never FMA-contracted (kernels/rules/hd.h: the scalar rules' bits).
# CUDA_ARCH: machine code for sm_$(CUDA_ARCH) (Hopper: H100/H200/H800) and its PTX, which the
# driver compiles at load time on newer GPUs (B200); cuobjdump --list-elf/--list-ptx show both.
CUDA_ARCH ?= 90
NVCC_GENCODE := -gencode arch=compute_$(CUDA_ARCH),code=sm_$(CUDA_ARCH) -gencode arch=compute_$(CUDA_ARCH),code=compute_$(CUDA_ARCH)
CUDART ?= -lcudart
NVCCFLAGS := -O2 -std=c++17 -I. $(NVCC_GENCODE) --compiler-options -Wall,-Wextra,-ffp-contract=off$(if $(filter 1,$(WERROR)),$(comma)-Werror -Werror all-warnings)
ifeq ($(CUDA),1)
  CFLAGS += -DDSA_HAVE_CUDA=1
  LDLIBS += -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas $(CUDART) -lstdc++
endif
# The CUDA twins of kernels/cpu/'s plain-C ops compute as the C build does, which never
# fuses a*b + c (ISO C, -std=c11): their device code too is built without FMA contraction,
# so each matches its twin's roundings (kernels/cuda/README.md). Multiply-adds that the
# CPU does fuse are written as kernels/rules/hd.h's dsa_fma_rule, which this flag leaves
# fused.
CUDA_NOFMA := embedding rmsnorm rope elementwise cross_entropy adamw copy
$(CUDA_NOFMA:%=$(BUILD)/obj/kernels/cuda/%.cu.o): NVCCFLAGS += -fmad=false
# NCCL (the CUDA backend's collectives, kernels/comm_nccl.c): compiled with the CUDA
# backend wherever its header is found, NCCL=0 to leave it out.
NCCL ?= auto
NCCL_H := $(if $(filter 1,$(CUDA)),$(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h /usr/local/include/nccl.h)))
ifeq ($(NCCL),auto)
  NCCL := $(if $(NCCL_H),1,0)
endif
ifeq ($(NCCL),1)
  LDLIBS += -L$(CUDA_HOME)/lib64 -lnccl
$(BUILD)/obj/kernels/comm_nccl.o: CFLAGS += -DDSA_HAVE_NCCL=1 -I$(dir $(NCCL_H)) -I$(CUDA_HOME)/include
endif

LIB_DIRS := core data kernels kernels/cpu kernels/sim indexer pretrain pretrain/cli checkpoints
LIB_SRCS := $(filter-out pretrain/cli/main.c data/h5z_zstd_plugin.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
CU_SRCS  := $(if $(filter 1,$(CUDA)),$(wildcard kernels/cuda/*.cu))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(CU_SRCS:%.cu=$(BUILD)/obj/%.cu.o)
TEST_SRCS := $(wildcard tests/test_*.c)
TESTS    := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
BENCHES  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
PLUGIN   := $(BUILD)/hdf5-plugin/libdsa_h5zstd.so
FAULT_SHIM := $(BUILD)/tests/libfault_shim.so
HEADERS  := $(foreach d,$(LIB_DIRS) kernels/rules kernels/cuda tests,$(wildcard $(d)/*.h)) $(wildcard kernels/cuda/*.cuh)

.PHONY: all deps test asan demo bench bench-tokenize clean pyenv check-tools tests-build torch-env parity reliability fuzz fuzz-build \
        install uninstall gpu-bundle gpu-bundle-check
all: check-tools $(BUILD)/dsa $(BUILD)/libdsa.a $(PLUGIN)

check-tools:
	@pkg-config --exists $(PKGS) || { echo "missing libraries ($(PKGS)): run 'make deps'"; exit 1; }
	@test -e $(OPENBLAS_DIR)/libopenblas.so || { echo "missing OpenBLAS (OpenMP build) in $(OPENBLAS_DIR): run 'make deps'"; exit 1; }
	@pkg-config --exists $(MPI_PKG) || { echo "missing MPI (pkg-config $(MPI_PKG), Open MPI): run 'make deps'"; exit 1; }
	@echo "dsa build: CC=$(CC) CUDA=$(CUDA)$(if $(filter 1,$(CUDA)), ($(NVCC))) NCCL=$(NCCL) SAN=$(SAN) BUILD=$(BUILD)" > $(BUILD).config.txt 2>/dev/null || true

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

$(BUILD)/obj/%.cu.o: %.cu $(HEADERS) $(wildcard kernels/cuda/*.cuh)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libdsa.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/dsa: $(BUILD)/obj/pretrain/cli/main.o $(BUILD)/libdsa.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# The zstd filter as an HDF5 plugin, so h5dump and other HDF5 tools decode our shards
# with HDF5_PLUGIN_PATH set to the plugin's directory, as an absolute path
# ($PWD/build/hdf5-plugin, or PREFIX/lib/hdf5/plugin after make install): HDF5 takes a
# relative one relative to the current directory, and without the plugin h5dump prints an
# empty DATA block and exits 0.
$(PLUGIN): data/h5z_zstd_plugin.c data/h5z_zstd.c data/h5z_zstd.h
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -fPIC -shared data/h5z_zstd_plugin.c data/h5z_zstd.c -o $@ $(PLUGIN_LIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libdsa.a $(wildcard tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libdsa.a -o $@ $(LDLIBS) -lcmocka

$(BUILD)/bench/%: bench/%.c $(BUILD)/libdsa.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libdsa.a -o $@ $(LDLIBS)

# The fault injector of tests/reliability.sh, an LD_PRELOAD library: built without the
# sanitizers (it is loaded into processes that may carry none).
$(FAULT_SHIM): tests/fault_shim.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror) -fPIC -shared $< -o $@ -ldl

# The replay of the fuzz harnesses includes them.
$(BUILD)/tests/test_fuzz_replay: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)

tests-build: all $(TESTS) $(FAULT_SHIM)

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

# libFuzzer harnesses (tests/fuzz/): the safetensors header, the HF index JSON, the config
# loader, the Megatron .idx reader, shard opening and attribute validation. Each runs
# FUZZ_SECONDS from its seed corpus (tests/fuzz/corpus/); crash inputs land in
# build-fuzz/crashes/ (tests/fuzz/README.md: they become regression cases). Needs clang
# and libFuzzer, which tests/fuzz/deps.sh installs when missing.
FUZZ_SECONDS ?= 30
FUZZERS := safetensors hf_index config megatron_idx shard
fuzz:
	@tests/fuzz/deps.sh
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang FUZZ=1 WERROR=$(WERROR) fuzz-build
	@tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS) $(FUZZERS)

fuzz-build: $(BUILD)/libdsa.a $(FUZZERS:%=$(BUILD)/fuzz/fuzz_%)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h $(BUILD)/libdsa.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer $< $(BUILD)/libdsa.a -o $@ $(LDLIBS)

reliability: deps
	@$(MAKE) --no-print-directory tests-build
	@tests/reliability.sh $(BUILD)

demo: deps
	@$(MAKE) --no-print-directory all pyenv
	@PYENV=$(PYENV) tools/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory all $(BENCHES) pyenv
	@tools/torch_env.sh $(TORCH_ENV) > /dev/null || echo "bench: no PyTorch environment; the comparison is skipped"
	@TORCH_PY=$(TORCH_ENV)/bin/python PYENV=$(PYENV) bench/run.sh $(BUILD)

# tools/tokenize_pack.py from raw text to shards: 50 MB of generated text, 1 and 2 workers,
# beside tokenizers alone (tools/bench_tokenize.py; about 2 minutes on 2 cores). Appends to
# bench/RESULTS.md; make bench runs it too.
bench-tokenize: deps
	@$(MAKE) --no-print-directory all pyenv
	@$(PYENV)/bin/python tools/bench_tokenize.py --dsa $(BUILD)/dsa --record bench/RESULTS.md

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

# The GPU check in one call (README "GPU check"): a bundle built here, without a GPU, for a
# bare x86-64 GPU machine. Host code for x86-64-v3 (AVX2 + FMA): the GPU host's processor is
# unknown, and v4 (AVX-512) would stop with an illegal instruction on hosts without it
# (AMD Zen 3 servers, say); every x86-64 server CPU of the last ten years has v3.
GPU_BUNDLE      ?= build-gpu
GPU_BUNDLE_OBJ  ?= build-gpu-obj
GPU_BUNDLE_ARCH ?= -march=x86-64-v3
GPU_BUNDLE_MAX_MIB ?= 48
gpu-bundle: deps
	@test -n "$(NVCC)" || { echo "gpu-bundle: nvcc not found (the bundle carries the CUDA backend); put the CUDA Toolkit's bin on PATH"; exit 1; }
	@$(MAKE) --no-print-directory BUILD=$(GPU_BUNDLE_OBJ) BUNDLE=1 CUDA=1 CUDA_ARCH=$(CUDA_ARCH) ARCH="$(GPU_BUNDLE_ARCH)" tests-build
	@tools/gpu_bundle.sh $(GPU_BUNDLE_OBJ) $(GPU_BUNDLE) $(GPU_BUNDLE_MAX_MIB) "$(GPU_BUNDLE_ARCH)" sm_$(CUDA_ARCH)

# Ends with a countable "tests:" line, as make test does (.ci/run sums them).
gpu-bundle-check: gpu-bundle
	@log=$$(mktemp); GPU_BUNDLE=$(GPU_BUNDLE) DSA=$(GPU_BUNDLE)/bin/dsa bash tests/cli/test_gpu_bundle.sh > $$log 2>&1; rc=$$?; cat $$log; \
	  p=$$(grep -cE '^ok ' $$log); s=$$(grep -cE '^ok .*# SKIP' $$log); f=$$(grep -cE '^not ok' $$log); rm -f $$log; \
	  [ $$rc -eq 0 ] || [ $$f -gt 0 ] || f=1; \
	  echo "tests: $$((p - s)) passed, $$f failed, $$s skipped"; [ $$f -eq 0 ]

clean:
	rm -rf build build-asan build-fuzz build.config.txt build-asan.config.txt build-fuzz.config.txt \
	  $(GPU_BUNDLE) $(GPU_BUNDLE_OBJ) $(GPU_BUNDLE).tar.xz $(GPU_BUNDLE_OBJ).config.txt
