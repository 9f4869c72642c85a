/* train.c: `dsa train`: LM training from a fresh init, a checkpoint's weights, or a
 * resumed run (pretrain/trainer.h has the loop, the run directory and the guarantees),
 * on one process or, started by mpirun / srun, data parallel over the ranks
 * (pretrain/comm.h): an error on any rank ends the whole job, naming the rank. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "core/mem.h"
#include "kernels/backend.h"
#include "kernels/comm.h"
#include "pretrain/cli/cli.h"
#include "pretrain/trainer.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dsa train --config FILE [--set key.path=value ...] [--resume | --init DIR]\n"
            "                 [--stop-at STEP] [--threads N] [--device NAME] [--precision P] [--quiet]\n"
            "                 [--comm-timeout S]\n"
            "       mpirun -np N dsa train ...   (or srun): data parallel over N ranks\n\n"
            "Trains the model the config describes on its data.train shards, stage after stage,\n"
            "logging one JSON line per step to OUT/metrics.jsonl (step, stage, lr, loss, grad norm,\n"
            "tokens/s, peak memory) and writing checkpoints OUT/step-NNNNNNNN every\n"
            "train.checkpoint_every steps and at the end (OUT = train.out_dir; OUT/latest names the\n"
            "newest). A resumed run continues bit for bit on the same thread count.\n\n"
            "Started by mpirun or srun, every rank trains on its own windows of the data and the\n"
            "gradients are summed over the ranks (ZeRO-1: each rank keeps 1/N of the AdamW state);\n"
            "global_batch must be a multiple of N x train.micro_batch. --resume works on any\n"
            "number of ranks (README.md, \"Running at scale\"). An error or a dead rank ends the job.\n\n"
            "To watch a run in TensorBoard, run the source tree's converter beside it (it waits for\n"
            "OUT/metrics.jsonl, appends each step as it is logged and stops at the run's last step):\n"
            "  .venv/bin/python tools/metrics_tensorboard.py OUT --logdir DIR --follow\n"
            "  .venv/bin/tensorboard --logdir DIR\n\n"
            "options:\n"
            "  --config FILE        run config (configs/tiny-dense.json for a small dense model)\n"
            "  --set KEY=VALUE      override a config key (see dsa config --help)\n"
            "  --resume             continue the run in train.out_dir from its latest checkpoint\n"
            "  --init DIR           start from the weights in DIR (a checkpoint or a Hugging Face\n"
            "                       model directory with config.json and model.safetensors)\n"
            "  --stop-at STEP       stop after global step STEP (writing a checkpoint); --resume\n"
            "                       continues from there\n"
            "  --threads N          CPU threads (same as --set train.threads=N; 0 = all cores)\n"
            "  --device NAME        backend (same as --set train.device=NAME): cpu (default), cuda\n"
            "                       (where built and a GPU is present), or sim: the test device, the\n"
            "                       CPU ops on memory the host cannot dereference (same bits as cpu)\n"
            "  --precision P        fp32 (default) or bf16 (same as --set train.precision=P): bf16\n"
            "                       runs every GEMM on bf16-rounded operands with fp32 sums (the MoE\n"
            "                       router stays fp32); fp32 master weights, gradients and moments\n"
            "  --quiet              no per-step log lines\n"
            "  --comm-timeout S     multi-rank: end the job when one collective waits longer than\n"
            "                       S seconds for the other ranks (default 300; 0 = never)\n"
            "  --weights-shard-bytes N  multi-rank: checkpoint weights as Hugging Face shards of at\n"
            "                       most N bytes with model.safetensors.index.json (default 5e9)\n"
            "  --pause-in-save MS   testing aid: sleep MS milliseconds inside every checkpoint save,\n"
            "                       just before it is committed\n"
            "  -h, --help           this text\n\n"
            "examples:\n"
            "  dsa train --config configs/tiny-dense.json\n"
            "  dsa train --config configs/tiny-dense.json --set train.steps=500 --set train.out_dir=runs/a\n"
            "  dsa train --config configs/tiny-dense.json --resume\n");
}

int cli_train(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'}, {"set", required_argument, 0, 's'},
        {"resume", no_argument, 0, 'r'},       {"init", required_argument, 0, 'i'},
        {"stop-at", required_argument, 0, 'S'}, {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},        {"pause-in-save", required_argument, 0, 'P'},
        {"comm-timeout", required_argument, 0, 'T'}, {"weights-shard-bytes", required_argument, 0, 'W'},
        {"device", required_argument, 0, 'd'}, {"precision", required_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    const char *path = NULL;
    DsaTrainOptions opts = {.progress = 1};
    double comm_timeout = 300;
    int n_sets = 0, rc = -1;
    const char **sets = calloc((size_t)argc + 2, sizeof *sets);
    static char threads_set[64], device_set[96], precision_set[96];
    if (!sets) return cli_report("train", DSA_ERR_NOMEM);
    optind = 1;
    int opt;
    char *end = NULL;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 's': sets[n_sets++] = optarg; break;
        case 'r': opts.resume = true; break;
        case 'i': opts.init_from = optarg; break;
        case 'q': opts.progress = 0; break;
        case 'T': {
            double v = strtod(optarg, &end);
            if (!*optarg || *end || !(v >= 0)) {
                fprintf(stderr, "dsa train: --comm-timeout wants a non-negative number of seconds, got \"%s\"\n",
                        optarg);
                rc = 2;
            }
            comm_timeout = v;
            break;
        }
        case 'd':
            snprintf(device_set, sizeof device_set, "train.device=%s", optarg);
            sets[n_sets++] = device_set;
            break;
        case 'p':
            snprintf(precision_set, sizeof precision_set, "train.precision=%s", optarg);
            sets[n_sets++] = precision_set;
            break;
        case 'S':
        case 'W':
        case 'P':
        case 't': {
            long long v = strtoll(optarg, &end, 10);
            if (!*optarg || *end || v < 0) {
                fprintf(stderr, "dsa train: --%s wants a non-negative integer, got \"%s\"\n",
                        opt == 'S' ? "stop-at" : opt == 'P' ? "pause-in-save" : opt == 'W' ? "weights-shard-bytes" : "threads",
                        optarg);
                rc = 2;
            } else if (opt == 'S') {
                opts.stop_at = v;
            } else if (opt == 'W') {
                opts.weights_shard_bytes = (uint64_t)v;
            } else if (opt == 'P') {
                opts.pause_before_commit_ms = v;
            } else {
                snprintf(threads_set, sizeof threads_set, "train.threads=%lld", v);
                sets[n_sets++] = threads_set;
            }
            break;
        }
        case 'h': usage(stdout); rc = 0; break;
        default: usage(stderr); rc = 2; break;
        }
    }
    if (rc < 0 && optind < argc) {
        fprintf(stderr, "dsa train: unexpected argument \"%s\"\n\n", argv[optind]);
        usage(stderr);
        rc = 2;
    }
    if (rc < 0 && !path) {
        fprintf(stderr, "dsa train: --config FILE is required\n\n");
        usage(stderr);
        rc = 2;
    }
    if (rc < 0 && opts.resume && opts.init_from) {
        fprintf(stderr, "dsa train: --resume and --init exclude each other (a resumed run has its own weights)\n");
        rc = 2;
    }
    DsaComm *comm = NULL;
    if (rc < 0 && dsa_comm_init(&comm, NULL, NULL, comm_timeout) != DSA_OK) rc = cli_report("train", DSA_ERR_DEVICE);
    if (rc < 0) {
        const bool rank0 = comm->rank == 0;
        if (!rank0) dsa_log_set_level(DSA_LOG_WARN); /* rank 0 logs the run */
        opts.comm = comm;
        DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
        DsaStatus st = cfg ? dsa_config_load(cfg, path, sets, n_sets) : DSA_ERR_NOMEM;
        DsaTrainResult res;
        DsaComm *dcomm = NULL; /* the CUDA backend's collectives: NCCL on the GPU of the local rank */
        const DsaBackend *be = NULL;
        if (st == DSA_OK && comm->world > 1 && !strcmp(cfg->train.device, "cuda") &&
            (st = dsa_backend_get(cfg->train.device, &be)) == DSA_OK)
            st = dsa_comm_nccl_init(&dcomm, comm, comm->local_rank);
        opts.device_comm = dcomm;
        if (st == DSA_OK) st = dsa_train(cfg, &opts, &res);
        if (st != DSA_OK && comm->world > 1) { /* end every rank, naming this one and the cause */
            char cause[512];
            snprintf(cause, sizeof cause, "%s: %s", dsa_status_name(st), dsa_error_message());
            cause[strcspn(cause, "\n")] = 0; /* the first line; the whole chain is printed above */
            cli_report("train", st);
            dsa_comm_abort(comm, 1, cause);
        }
        if (!rank0) {
        } else if (st == DSA_OK && res.already_done && res.steps_done >= res.total_steps)
            printf("run already complete: %s is at step %lld of %lld (%s); nothing to train\n", cfg->train.out_dir,
                   (long long)res.steps_done, (long long)res.total_steps, res.last_checkpoint);
        else if (st == DSA_OK && res.already_done)
            printf("nothing to train: %s is at step %lld of %lld (%s), already at or past --stop-at %lld\n",
                   cfg->train.out_dir, (long long)res.steps_done, (long long)res.total_steps, res.last_checkpoint,
                   (long long)opts.stop_at);
        else if (st == DSA_OK)
            printf("trained to step %lld, last loss %.4f, checkpoint %s\n", (long long)res.steps_done, res.last_loss,
                   res.last_checkpoint[0] ? res.last_checkpoint : "(none)");
        dsa_free(cfg, sizeof *cfg);
        dsa_comm_free(dcomm);
        rc = cli_report("train", st);
    }
    dsa_comm_free(comm);
    free(sets);
    return rc;
}
