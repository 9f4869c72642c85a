/* moe_sim.c: the simulated device's MoE entries (kernels/moe_ops.h): the CPU entries with
 * their pointer arguments translated back (kernels/sim/sim.h).
 */
#include "kernels/cpu/ops.h"
#include "kernels/moe_ops.h"
#include "kernels/sim/sim.h"

#define R(p) dsa_sim_real(p)
#define CPU (&dsa_cpu_moe_ops)

static void sim_route(int32_t *sel, float *weight, float *scores, const float *logits, const float *bias,
                      const DsaMoeShape *s) {
    CPU->route(R(sel), R(weight), R(scores), R(logits), R(bias), s);
}
static void sim_route_backward(float *dlogits, const float *dweight, const int32_t *sel, const float *scores,
                               const DsaMoeShape *s) {
    CPU->route_backward(R(dlogits), R(dweight), R(sel), R(scores), s);
}
static void sim_group(int32_t *pair, int32_t *row, int32_t *start, const int32_t *sel, const DsaMoeShape *s) {
    CPU->group(R(pair), R(row), R(start), R(sel), s);
}
static void sim_gather(float *xg, const float *x, const int32_t *pair, const DsaMoeShape *s) {
    CPU->gather(R(xg), R(x), R(pair), s);
}
static void sim_combine(float *out, const float *y, const float *weight, const int32_t *row, const float *shared,
                        const DsaMoeShape *s) {
    CPU->combine(R(out), R(y), R(weight), R(row), R(shared), s);
}
static void sim_weight_grad(float *dweight, const float *y, const float *dout, const int32_t *row,
                            const DsaMoeShape *s) {
    CPU->weight_grad(R(dweight), R(y), R(dout), R(row), s);
}
static void sim_dispatch_grad(float *dy, const float *dout, const float *weight, const int32_t *pair,
                              const DsaMoeShape *s) {
    CPU->dispatch_grad(R(dy), R(dout), R(weight), R(pair), s);
}
static void sim_gather_backward(float *dx, const float *dy, const int32_t *row, const DsaMoeShape *s) {
    CPU->gather_backward(R(dx), R(dy), R(row), s);
}

const DsaMoeOps dsa_sim_moe_ops = {
    .name = "sim",
    .route = sim_route,
    .route_backward = sim_route_backward,
    .group = sim_group,
    .gather = sim_gather,
    .combine = sim_combine,
    .weight_grad = sim_weight_grad,
    .dispatch_grad = sim_dispatch_grad,
    .gather_backward = sim_gather_backward,
};
