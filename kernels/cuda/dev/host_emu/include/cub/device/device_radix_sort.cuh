/* device_radix_sort.cuh (host emulation): CUB's stable DeviceRadixSort::SortPairs on the bits
 * [begin_bit, end_bit) of the keys, as std::stable_sort (kernels/cuda/dev/host_emu/). */
#ifndef DSA_HOST_EMU_CUB_RADIX_SORT
#define DSA_HOST_EMU_CUB_RADIX_SORT

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace cub {
struct DeviceRadixSort {
    static int SortPairs(void *tmp, size_t &bytes, const uint32_t *kin, uint32_t *kout, const int32_t *vin,
                         int32_t *vout, int n, int begin_bit, int end_bit, void * = nullptr) {
        if (!tmp) return bytes = 64, 0;
        const uint32_t mask = (end_bit >= 32 ? ~0u : (1u << end_bit) - 1) & ~((1u << begin_bit) - 1);
        std::vector<int> order((size_t)n);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return (kin[a] & mask) < (kin[b] & mask); });
        for (int i = 0; i < n; i++) kout[i] = kin[order[i]], vout[i] = vin[order[i]];
        return 0;
    }
};
} // namespace cub

#endif
