/* cli.h: the `dsa` subcommands. Each takes the arguments after its name (argv[0] is
 * the subcommand name), prints its own --help, prints the error trail of a failure on
 * stderr, and returns the process exit code: 0 success, 1 runtime error, 2 usage error. */
#ifndef DSA_PRETRAIN_CLI_CLI_H
#define DSA_PRETRAIN_CLI_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "core/config.h"
#include "core/error.h"

int cli_config(int argc, char **argv);  /* print a resolved configuration */
int cli_plan(int argc, char **argv);    /* device plan: memory, FLOPs, communication, time per stage */
int cli_pack(int argc, char **argv);    /* build token shards */
int cli_inspect(int argc, char **argv); /* describe and verify shards */
int cli_stream(int argc, char **argv);  /* run the streaming loader */
int cli_bench(int argc, char **argv);   /* benchmarks: loader, train, gemm */
int cli_bench_train(int argc, char **argv); /* training-step throughput (bench_train.c) */
int cli_bench_gemm(int argc, char **argv);  /* OpenBLAS SGEMM rate (bench_train.c) */
int cli_bench_dsa(int argc, char **argv);   /* dense vs sparse training step (bench_dsa.c) */
int cli_bench_topk(int argc, char **argv);  /* indexer top-k vs scoring alone (bench_topk.c) */
/* Common start of `dsa bench train|dsa`: set the CPU threads, load and validate the config
 * (`path` with `--set` overrides) into *cfg (dsa_calloc'ed, even on failure, or NULL),
 * refuse a model without indexer when need_indexer, and with `record` open it for
 * appending (*rec) and write the section header and the table header. */
DsaStatus cli_bench_open(const char *path, const char *const *sets, int n_sets, int threads, bool need_indexer,
                         const char *record, const char *title, const char *table_header, int argc, char **argv,
                         DsaConfig **cfg, FILE **rec);
/* The markdown section header of a recorded benchmark: title, date, device, command. */
void cli_bench_record_header(FILE *f, const char *what, int argc, char **argv);
int cli_info(int argc, char **argv);    /* build and device information */
int cli_train(int argc, char **argv);   /* LM training, checkpoints, resume */
int cli_eval(int argc, char **argv);    /* held-out loss of a checkpoint */
int cli_convert(int argc, char **argv); /* import a checkpoint; add an indexer */
int cli_export(int argc, char **argv);  /* V3.2-layout Hugging Face checkpoint */

/* Print "dsa SUB: error: <trail>" and return the exit code for `status`. */
int cli_report(const char *sub, DsaStatus status);

#endif
