/* Adam over segments of one contiguous buffer, each segment with its own step size.
 *
 * The loop body is torch's Adam (torch/optim/adam.py, ``_single_tensor_adam``, and
 * the CPU kernel of ``Adam(fused=True)``) for one element:
 *
 *     g      = grad (negated with maximize) + weight_decay * param
 *     m      = lerp(m, g, 1 - beta1)
 *     v      = fma((1 - beta2) * g, g, v * beta2)
 *     param -= step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)
 *
 * with step_size = lr / (1 - beta1^step) and bias_correction2_sqrt =
 * sqrt(1 - beta2^step) given per segment (computed in double by the caller, as
 * torch computes them in double). Scalars are rounded to the buffer's type once,
 * as torch's kernel does. ``lerp`` is torch's: ``fma(w, g - m, m)`` for |w| < 0.5,
 * else ``fma(w - 1, g - m, g)``. The multiply-adds are written out and the
 * compiler may fuse nothing else (``-ffp-contract=off``): one step then equals
 * torch's fused CPU kernel to within one unit in the last place.
 */
#include <math.h>
#include <stdint.h>

#define FLAT_ADAM(T, NAME, SQRT, FMA)                                                                       \
    void NAME(T *restrict param, const T *restrict grad, T *restrict exp_avg, T *restrict exp_avg_sq,       \
              const int64_t *starts, const int64_t *ends, const double *step_size,                          \
              const double *bias_correction2_sqrt, int64_t segments, double beta1, double beta2,            \
              double eps, double weight_decay, int32_t maximize) {                                          \
        const T w = (T)(1.0 - beta1), w_minus_1 = w - (T)1, b2 = (T)beta2;                                  \
        const T w2 = (T)(1.0 - beta2), e = (T)eps, wd = (T)weight_decay, sign = maximize ? -1 : 1;          \
        const int small_weight = fabs(1.0 - beta1) < 0.5;                                                   \
        for (int64_t s = 0; s < segments; ++s) {                                                            \
            const T step = (T)step_size[s], c2 = (T)bias_correction2_sqrt[s];                               \
            const int64_t end = ends[s];                                                                    \
            if (small_weight) {                                                                             \
                for (int64_t i = starts[s]; i < end; ++i) {                                                 \
                    const T g = sign * grad[i] + wd * param[i];                                             \
                    const T m = FMA(w, g - exp_avg[i], exp_avg[i]);                                         \
                    const T v = FMA(w2 * g, g, exp_avg_sq[i] * b2);                                         \
                    exp_avg[i] = m;                                                                         \
                    exp_avg_sq[i] = v;                                                                      \
                    param[i] = param[i] - step * m / (SQRT(v) / c2 + e);                                    \
                }                                                                                           \
            } else {                                                                                        \
                for (int64_t i = starts[s]; i < end; ++i) {                                                 \
                    const T g = sign * grad[i] + wd * param[i];                                             \
                    const T m = FMA(w_minus_1, g - exp_avg[i], g);                                          \
                    const T v = FMA(w2 * g, g, exp_avg_sq[i] * b2);                                         \
                    exp_avg[i] = m;                                                                         \
                    exp_avg_sq[i] = v;                                                                      \
                    param[i] = param[i] - step * m / (SQRT(v) / c2 + e);                                    \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
    }

FLAT_ADAM(float, flat_adam_float32, sqrtf, fmaf)
FLAT_ADAM(double, flat_adam_float64, sqrt, fma)
