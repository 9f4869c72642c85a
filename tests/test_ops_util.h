/* test_ops_util.h: helpers shared by the CPU backend's op tests (test_ops.c,
 * test_layer_ops.c): random fills, fp64 central differences and the OpenMP thread count.
 */
#ifndef DSA_TESTS_TEST_OPS_UTIL_H
#define DSA_TESTS_TEST_OPS_UTIL_H

#include <omp.h>

#include "core/rng.h"
#include "test_util.h"

enum { FD_STEP_INV = 1000000 };
#define FD_TOL 1e-5 /* finite-difference checks, relative to max |gradient| */

static inline void fill(float *x, int64_t n, uint64_t seed, double scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(scale * dsa_rng_normal_at(seed, 1, (uint64_t)i));
}

/* An fp64 forward y = f(x) for one input vector under a fixed context. */
typedef void (*Fwd64)(double *y, const double *x, const void *ctx);

/* Central differences of Σ r ⊙ f(x) with respect to x, in fp64. */
static inline void finite_diff(double *grad, Fwd64 f, const void *ctx, const double *x0, int64_t nx, const double *r,
                        int64_t ny) {
    const double h = 1.0 / FD_STEP_INV;
    double *x = test_dalloc(nx), *y = test_dalloc(ny);
    memcpy(x, x0, sizeof(double) * (size_t)nx);
    for (int64_t i = 0; i < nx; i++) {
        double l[2];
        for (int s = 0; s < 2; s++) {
            x[i] = x0[i] + (s ? -h : h);
            f(y, x, ctx);
            l[s] = 0;
            for (int64_t j = 0; j < ny; j++) l[s] += r[j] * y[j];
        }
        x[i] = x0[i];
        grad[i] = (l[0] - l[1]) / (2 * h);
    }
    free(x), free(y);
}

/* Run with a given OpenMP thread count, restoring the previous one. */
static inline int threads_push(int n) {
    int saved = omp_get_max_threads();
    omp_set_num_threads(n);
    return saved;
}

#endif
