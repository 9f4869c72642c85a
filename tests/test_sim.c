/* test_sim.c: the simulated device (kernels/sim/sim.h). Its pointers cannot be
 * dereferenced by the host (a child process that tries dies, so tests on sim cannot pass
 * by reading memory behind the backend's back); its memory entries move bytes exactly; the
 * registries give its indexer entries; the MoE DSA model (configs/tiny.json) runs a dense
 * pass with the indexer loss and a sparse pass, forward and backward, on sim with the
 * CPU's loss, gradients and indexer statistics bit for bit; a backend without MoE entries
 * is refused by name. tests/cli/test_sim.sh trains the tiny configs on sim end to end. */
#include <signal.h>
#include <sys/wait.h>

#include "indexer/indexer.h"
#include "kernels/backend.h"
#include "kernels/sim/sim.h"
#include "pretrain/host_view.h"
#include "pretrain/model.h"
#include "test_util.h"

/* A host read through a sim pointer kills the process (SIGSEGV; under ASan its SEGV report
 * and a non-zero exit). */
static void test_host_dereference_crashes(void **state) {
    (void)state;
    const DsaBackend *sim = dsa_backend_sim();
    float *p = sim->alloc(64 * sizeof(float));
    assert_non_null(p);
    assert_true(p != dsa_sim_real(p));
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL); /* cmocka's handler would catch the fault and go on */
        signal(SIGBUS, SIG_DFL);
        volatile float v = *(volatile float *)p; /* must fault */
        (void)v;
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    const bool crashed = WIFSIGNALED(status) ? (WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS)
                                             : WIFEXITED(status) && WEXITSTATUS(status) != 0;
    if (!crashed) fail_msg("the host read a sim pointer without crashing (status %#x)", status);
    sim->release(p, 64 * sizeof(float));
}

static void test_memory_entries(void **state) {
    (void)state;
    const DsaBackend *sim = dsa_backend_sim();
    enum { N = 1000 };
    float host[N], back[N];
    for (int i = 0; i < N; i++) host[i] = (float)i * 0.5f - 7.0f;
    float *a = sim->alloc(N * sizeof(float)), *b = sim->alloc(N * sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    sim->download(back, a, sizeof back); /* alloc zero-fills */
    for (int i = 0; i < N; i++) assert_true(back[i] == 0.0f);
    sim->upload(a, host, sizeof host);
    sim->copy(b + 10, a, (N - 10) * sizeof(float)); /* offsets from a sim base stay sim pointers */
    sim->fill_zero(b, 10 * sizeof(float));
    sim->copy_order();
    sim->download(back, b, sizeof back);
    for (int i = 0; i < N; i++) assert_true(back[i] == (i < 10 ? 0.0f : host[i - 10]));
    assert_true(sim->sum_squares(a, N) == dsa_backend_cpu()->sum_squares(host, N));
    sim->release(a, N * sizeof(float));
    sim->release(b, N * sizeof(float));
    sim->release(NULL, 0);
    /* a host view of sim memory is a staged copy; of CPU memory the buffer itself */
    DsaHostView v;
    float *c = sim->alloc(sizeof host);
    assert_ok(dsa_host_view_open(&v, sim, c, sizeof host, "test"));
    assert_true(v.staged && v.host != (void *)c);
    memcpy(v.host, host, sizeof host);
    dsa_host_view_commit(&v, sim, c);
    dsa_host_view_close(&v);
    sim->download(back, c, sizeof back);
    assert_memory_equal(back, host, sizeof host);
    sim->release(c, sizeof host);
    assert_ok(dsa_host_view_open(&v, dsa_backend_cpu(), host, sizeof host, "test"));
    assert_true(!v.staged && v.host == (void *)host);
    dsa_host_view_close(&v);
}

static void test_registries(void **state) {
    (void)state;
    const DsaBackend *be = NULL;
    const DsaIndexerOps *ix = NULL;
    assert_ok(dsa_backend_get("sim", &be));
    assert_ptr_equal(be, dsa_backend_sim());
    assert_false(be->host_memory || be->fp32_table);
    assert_non_null(be->moe);
    const DsaBackend *bf = NULL; /* sim's bf16 table: sim's memory, its bf16 GEMMs, the indexer of sim */
    assert_ok(dsa_backend_for_precision(be, "bf16", &bf));
    assert_ptr_equal(bf->fp32_table, be);
    assert_true(bf->linear_forward == be->linear_forward_bf16 && bf->alloc == be->alloc && !bf->host_memory);
    assert_ok(dsa_indexer_ops_get(bf, &ix));
    assert_ptr_equal(ix, dsa_indexer_ops_sim());
    assert_ok(dsa_indexer_ops_get(be, &ix));
    assert_ptr_equal(ix, dsa_indexer_ops_sim());
    assert_ok(dsa_indexer_ops_get(dsa_backend_cpu(), &ix));
    assert_ptr_equal(ix, dsa_indexer_ops_cpu());
    assert_true(dsa_backend_cpu()->host_memory);
    assert_fails_with(dsa_backend_get("tpu", &be), DSA_ERR_CONFIG, "\"sim\"");
}

/* Loss, every gradient and the indexer statistics of one dense (indexer loss on) and one
 * sparse forward/backward of the tiny MoE DSA model on backend `be`. */
typedef struct {
    double loss[2];
    DsaIndexerLoss stats[2];
    float *grads;
    int64_t count;
} PassResult;

static void run_passes(const DsaBackend *be, const DsaModelConfig *mc, PassResult *r) {
    DsaModel m;
    assert_ok(dsa_model_init(&m, mc, be));
    assert_ok(dsa_model_init_weights(&m, 7));
    enum { B = 2, L = 48 };
    int32_t in[B * L], tgt[B * L];
    for (int i = 0; i < B * L; i++) {
        in[i] = (int32_t)(dsa_rng_u32_at(9, 0, (uint64_t)i) % (uint64_t)mc->vocab_size);
        tgt[i] = i % 11 == 0 ? -1 : (int32_t)(dsa_rng_u32_at(9, 1, (uint64_t)i) % (uint64_t)mc->vocab_size);
    }
    DsaForwardMode mode = dsa_forward_mode_default(mc);
    mode.topk = 16;
    mode.indexer_loss = true;
    mode.indexer_grad_scale = 1.0f / (B * L);
    mode.recall_rows = 8;
    for (int pass = 0; pass < 2; pass++) {
        mode.sparse = pass == 1;
        assert_ok(dsa_model_set_mode(&m, &mode));
        dsa_model_reset_indexer_stats(&m);
        int64_t n = 0;
        assert_ok(dsa_model_forward(&m, in, tgt, B, L, &r->loss[pass], &n));
        dsa_model_backward(&m, 1.0f / (float)n);
        r->stats[pass] = m.idx_stats[0];
        r->count = n;
    }
    const size_t bytes = (size_t)m.table.total * sizeof(float);
    r->grads = test_falloc(m.table.total);
    be->download(r->grads, m.grads, bytes);
    dsa_model_free(&m);
}

static void test_moe_dsa_model_matches_cpu(void **state) {
    (void)state;
    DsaConfig *cfg = dsa_calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    assert_ok(dsa_config_load(cfg, "configs/tiny.json", NULL, 0));
    assert_true(cfg->model.has_moe && cfg->model.has_indexer);
    PassResult cpu = {0}, sim = {0};
    dsa_backend_cpu_set_threads(2);
    run_passes(dsa_backend_cpu(), &cfg->model, &cpu);
    run_passes(dsa_backend_sim(), &cfg->model, &sim);
    assert_memory_equal(cpu.loss, sim.loss, sizeof cpu.loss);
    assert_memory_equal(cpu.stats, sim.stats, sizeof cpu.stats);
    assert_true(cpu.stats[1].mass_rows > 0 && cpu.stats[0].rows > 0);
    DsaParamTable t;
    assert_ok(dsa_param_table_build(&t, &cfg->model));
    assert_memory_equal(cpu.grads, sim.grads, (size_t)t.total * sizeof(float));
    double norm = 0;
    for (int64_t i = 0; i < t.total; i++) norm += (double)cpu.grads[i] * cpu.grads[i];
    assert_true(norm > 0);
    free(cpu.grads);
    free(sim.grads);
    dsa_param_table_free(&t);
    /* a backend without MoE entries refuses the MoE model by name */
    DsaBackend nomoe = *dsa_backend_cpu();
    nomoe.name = "nomoe", nomoe.moe = NULL;
    DsaModel m;
    assert_fails_with(dsa_model_init(&m, &cfg->model, &nomoe), DSA_ERR_DEVICE, "backend \"nomoe\" has no MoE entries");
    dsa_free(cfg, sizeof *cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_dereference_crashes),
        cmocka_unit_test(test_memory_entries),
        cmocka_unit_test(test_registries),
        cmocka_unit_test(test_moe_dsa_model_matches_cpu),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_tmpdir_remove();
    return rc;
}
