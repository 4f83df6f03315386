/*
 * The host execution of attention.cu's block functions, for the test shims: one host thread
 * per CUDA thread of a block, the blocks of a grid one after another. __syncthreads is a
 * barrier of the block's threads, a warp shuffle a write to an exchange buffer between two
 * barriers of the warp's threads. cp.async copies are queued and land as late as the device
 * allows, at the cp.async.wait_group that covers their group: a read before its wait sees
 * the old contents. Shared memory is refilled with NaN bytes before every block (a read of
 * memory the kernel did not write shows), with guard bytes past the kernel's declared size
 * that must stay untouched; the threads really run concurrently, so a missing barrier shows
 * as wrong or varying results. Included by attention.cu only (uses fdl_attn::NT).
 */
#ifndef FASTDL_CUDA_ATTENTION_HOST_CUH
#define FASTDL_CUDA_ATTENTION_HOST_CUH

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace fdl_attn {

class HostBarrier {
  public:
    HostBarrier(int n, const bool *abort) : n_(n), abort_(abort) {}

    void wait() {
        std::unique_lock<std::mutex> lk(m_);
        if (*abort_) return;
        const unsigned g = gen_;
        if (++count_ == n_) {
            count_ = 0;
            ++gen_;
            cv_.notify_all();
        } else {
            cv_.wait(lk, [&] { return gen_ != g || *abort_; });
        }
    }

    void release() {
        std::lock_guard<std::mutex> lk(m_);
        cv_.notify_all();
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    int n_, count_ = 0;
    unsigned gen_ = 0;
    const bool *abort_;
};

struct HostBlock {
    static constexpr int XBYTES = 128;
    bool abort = false;
    HostBarrier block{NT, &abort};
    HostBarrier warp[NT / 32] = {{32, &abort}, {32, &abort}, {32, &abort}, {32, &abort}};
    alignas(16) unsigned char xch[NT][XBYTES];
};
static_assert(NT == 128, "HostBlock's warp barriers are written for 4 warps");

struct HostSync {
    HostBlock *c;
    int tid;
    // this thread's cp.async copies: committed groups (oldest first), then the open group
    std::vector<std::vector<std::pair<void *, const void *>>> groups{1};

    void bar() { c->block.wait(); }

    template <class T, int N>
    void xor_n(T (&v)[N], int m) {
        static_assert(sizeof(v) <= HostBlock::XBYTES, "exchange buffer too small");
        HostBarrier &w = c->warp[tid >> 5];
        memcpy(c->xch[tid], v, sizeof(v));
        w.wait();
        memcpy(v, c->xch[tid ^ m], sizeof(v));
        w.wait();       // the partner has read this thread's slot before it is reused
    }

    void cp16(void *dst, const void *src) { groups.back().emplace_back(dst, src); }
    void commit() { groups.emplace_back(); }

    template <int N>
    void wait() {
        while (groups.size() - 1 > (size_t)N) {
            for (auto &c : groups.front()) memcpy(c.first, c.second, 16);
            groups.erase(groups.begin());
        }
    }

    // the block's end: a copy still pending was never waited for (a kernel bug)
    bool drained() const { return groups.size() == 1 && groups.back().empty(); }
};

struct HostExec {
    // grid-stride kernels: few blocks, so that every block strides more than once
    int64_t cap(int64_t blocks) const { return blocks < 3 ? blocks : 3; }

    template <class K, class P>
    int launch(const P &p, int64_t grid) {
        if (grid <= 0) return 0;
        struct alignas(16) Chunk {
            unsigned char b[16];
        };
        constexpr size_t GUARD = 256;
        try {
            const size_t declared = (size_t)K::smem();
            std::vector<Chunk> mem((declared + GUARD + 15) / 16);
            unsigned char *smem = mem[0].b;
            const size_t bytes = mem.size() * sizeof(Chunk);
            HostBlock ctx;
            std::atomic<bool> fault{false};
            auto body = [&](int tid) {
                HostSync sy{&ctx, tid};
                for (int64_t bid = 0; bid < grid; ++bid) {
                    if (tid == 0) memset(smem, 0xff, bytes);     // NaN in every float slot
                    sy.bar();
                    K::block(p, bid, grid, tid, smem, sy);
                    if (!sy.drained()) fault = true;
                    sy.bar();
                    if (tid == 0) {
                        for (size_t i = declared; i < bytes; ++i)
                            if (smem[i] != 0xff) fault = true;
                    }
                }
            };
            std::vector<std::thread> threads;
            threads.reserve(NT);
            int err = 0;
            try {
                for (int t = 0; t < NT; ++t) threads.emplace_back(body, t);
            } catch (...) {
                // the threads already started must not wait for the missing ones
                ctx.abort = true;
                ctx.block.release();
                for (auto &w : ctx.warp) w.release();
                err = (int)cudaErrorMemoryAllocation;
            }
            for (auto &t : threads) t.join();
            if (!err && fault) err = (int)cudaErrorIllegalAddress;
            return err;
        } catch (...) {
            return (int)cudaErrorMemoryAllocation;
        }
    }

    int zero(void *p, int64_t bytes) {
        if (bytes > 0) memset(p, 0, (size_t)bytes);
        return 0;
    }
};

}  // namespace fdl_attn

#endif
