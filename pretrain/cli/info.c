/* info.c: `dsa info`: the build configuration and the devices this process sees. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <zstd.h>

#include <hdf5.h>

#include "kernels/device.h"
#include "pretrain/cli/cli.h"

int cli_info(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: dsa info\n\nPrints library versions, whether CUDA was compiled in, and the GPUs found.\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "dsa info: unexpected argument \"%s\" (see dsa info --help)\n", argv[1]);
        return 2;
    }
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    printf("hdf5: %u.%u.%u\nzstd: %s\n", maj, min, rel, ZSTD_versionString());
    DsaCudaInfo cuda;
    dsa_device_cuda_query(&cuda);
    printf("cuda backend: %s\n", cuda.compiled ? "compiled" : "not compiled");
    if (cuda.compiled) printf("cuda runtime: %d, driver: %d\n", cuda.runtime_version, cuda.driver_version);
    if (cuda.device_count > 0)
        printf("cuda devices: %d (device 0: %s, %.1f GiB, sm_%d%d)\n", cuda.device_count, cuda.name,
               (double)cuda.total_memory / (1 << 30), cuda.cc_major, cuda.cc_minor);
    else
        printf("cuda devices: none (%s)\n", cuda.why_unavailable);
    return 0;
}
