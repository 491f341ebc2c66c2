// Mamba-1's selective scan on CPU, fused: one pass over time per example, its whole state in cache.
//
//     h_t = exp(Δ_t A) ⊙ h_{t-1} + v_t ⊗ k_t        h: (E, N) per example (E channels, N states each)
//     y_t = h_t q_t
//
// q, k: (B, L, N), shared by the E channels (Mamba's C_t and B_t); v, Δ: (B, L, E) (Mamba's Δ_t x_t and Δ_t);
// A: (E, N); h0: (B, E, N) or empty. Forward -> y (B, L, E), h_L (B, E, N) and checkpoints (B, ceil(L/T), E, N),
// the state before every T-th position, which the backward starts from.
//
// Per position the E×N decays exp(Δ_t A) are one contiguous vector loop (glibc's vector exp), the update
// and the read-out another: the sequential dependence is only from one position to the next, never inside a
// vector. The eager form (cab/ops/recurrence.py, _ChannelScan) makes about 6 passes forward and 14 backward
// over (L, B, E, N) numbers in memory; here each number is made and used in cache.
//
// Backward, per example, chunk by chunk from the last: rerun the chunk's T positions from its checkpoint
// (keeping h_t and exp(Δ_t A), 2·T·E·N numbers), then the adjoint recurrence
//     λ_t = q_t dy_t + exp(Δ_{t+1} A) ⊙ λ_{t+1}
// with every gradient reduced in the same loop:
//     dq_t = Σ_e dy_{t,e} h_{t,e}   dk_t = Σ_e v_{t,e} λ_{t,e}   dv_{t,e} = λ_{t,e} · k_t
//     dg_t = λ_t ⊙ exp(Δ_t A) ⊙ h_{t-1}:  dΔ_{t,e} = dg_{t,e} · A_e,  dA += Δ_t dg_t,  dh0 = exp(Δ_0 A) ⊙ λ_0.
// Work is split over the batch (every gradient but dA belongs to one example; dA is summed per example,
// then over examples), so results do not depend on the number of threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// positions per checkpoint: about 2^17 numbers of state per chunk, so a chunk's h_t and decays stay in L2
int64_t chunk_length(int64_t L, int64_t E, int64_t N) {
  return std::max<int64_t>(1, std::min<int64_t>(L, (int64_t(1) << 17) / std::max<int64_t>(1, E * N)));
}

// exp for float32 that the compiler inlines into the vector loop (no call per vector): Cephes' expf, i.e.
// x = n·ln2 + r, |r| <= ln2/2, e^r by a degree-7 polynomial, 2^n put into the exponent bits; within 2 ulp of
// expf. Arguments below -87.3 give the smallest normal float rather than a subnormal or 0: a decay of 1e-38
// instead of 0 changes nothing representable in a sum with other terms. float64 keeps std::exp.
inline float exp_inline(float x) {
  x = std::min(std::max(x, -87.33654f), 88.37626f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}
inline double exp_inline(double x) { return std::exp(x); }

template <typename T, int NT>
inline void decays(const T* d, const T* A, T* a, int64_t E, int64_t N_) {
  const int64_t N = NT ? NT : N_;  // a = exp(Δ_t A), (E, N); NT: N known when compiled (16, Mamba's), else 0
  for (int64_t e = 0; e < E; ++e) {
    const T de = d[e];
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) a[e * N + n] = exp_inline(de * A[e * N + n]);
  }
}

template <typename T, int NT>
inline void update(const T* a, const T* prev, const T* x, const T* k, T* h, int64_t E, int64_t N_) {
  const int64_t N = NT ? NT : N_;
  for (int64_t e = 0; e < E; ++e) {  // h = a ⊙ prev + x ⊗ k
    const T xe = x[e];
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) h[e * N + n] = a[e * N + n] * prev[e * N + n] + xe * k[n];
  }
}

template <typename T, int NT>
void forward_kernel(const T* q, const T* k, const T* v, const T* delta, const T* A, const T* h0, T* y, T* hL,
                    T* ckpt, int64_t B, int64_t E, int64_t L, int64_t N_) {
  const int64_t N = NT ? NT : N_;
  const int64_t C = chunk_length(L, E, N), size = E * N, chunks = (L + C - 1) / C;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> h(size), a(size);
    for (int64_t b = b0; b < b1; ++b) {
      if (h0) std::memcpy(h.data(), h0 + b * size, size * sizeof(T));
      else std::fill(h.begin(), h.end(), T(0));
      for (int64_t t = 0; t < L; ++t) {
        if (t % C == 0) std::memcpy(ckpt + (b * chunks + t / C) * size, h.data(), size * sizeof(T));
        const int64_t row = (b * L + t);
        const T* qt = q + row * N;
        decays<T, NT>(delta + row * E, A, a.data(), E, N);
        update<T, NT>(a.data(), h.data(), v + row * E, k + row * N, h.data(), E, N);
        T* yt = y + row * E;
        for (int64_t e = 0; e < E; ++e) {
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t n = 0; n < N; ++n) acc += qt[n] * h[e * N + n];
          yt[e] = acc;
        }
      }
      std::memcpy(hL + b * size, h.data(), size * sizeof(T));
    }
  });
}

template <typename T, int NT>
void backward_kernel(const T* q, const T* k, const T* v, const T* delta, const T* A, const T* ckpt, const T* dy,
                     const T* dhL, T* dq, T* dk, T* dv, T* ddelta, T* dA_per_b, T* dh0, int64_t B, int64_t E,
                     int64_t L, int64_t N_) {
  const int64_t N = NT ? NT : N_;
  const int64_t C = chunk_length(L, E, N), size = E * N, chunks = (L + C - 1) / C;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> hs(C * size), as(C * size), lam(size), dq_t(N), dk_t(N);
    for (int64_t b = b0; b < b1; ++b) {
      T* dAb = dA_per_b + b * size;
      if (dhL) std::memcpy(lam.data(), dhL + b * size, size * sizeof(T));
      else std::fill(lam.begin(), lam.end(), T(0));
      for (int64_t c = chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * C, t1 = std::min(L, t0 + C);
        const T* start = ckpt + (b * chunks + c) * size;
        for (int64_t t = t0; t < t1; ++t) {  // the chunk again: h_t and exp(Δ_t A)
          const int64_t row = b * L + t;
          T* at_ = as.data() + (t - t0) * size;
          decays<T, NT>(delta + row * E, A, at_, E, N);
          update<T, NT>(at_, t > t0 ? hs.data() + (t - t0 - 1) * size : start, v + row * E, k + row * N,
                 hs.data() + (t - t0) * size, E, N);
        }
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const int64_t row = b * L + t;
          const T *qt = q + row * N, *kt = k + row * N, *xt = v + row * E, *dt = delta + row * E;
          const T* gt = dy ? dy + row * E : nullptr;
          const T* ht = hs.data() + (t - t0) * size;
          const T* at_ = as.data() + (t - t0) * size;
          const T* prev = t > t0 ? ht - size : start;
          std::fill(dq_t.begin(), dq_t.end(), T(0));
          std::fill(dk_t.begin(), dk_t.end(), T(0));
          for (int64_t e = 0; e < E; ++e) {
            const T ge = gt ? gt[e] : T(0), xe = xt[e], de = dt[e];
            T* le = lam.data() + e * N;
            const T *he = ht + e * N, *ae = at_ + e * N, *pe = prev + e * N, *Ae = A + e * N;
            T* dAe = dAb + e * N;
            T dv_e = 0, dd_e = 0;
#pragma omp simd reduction(+ : dv_e, dd_e)
            for (int64_t n = 0; n < N; ++n) {
              const T l = le[n] + qt[n] * ge;  // λ_t
              dq_t[n] += ge * he[n];
              dk_t[n] += xe * l;
              dv_e += l * kt[n];
              const T dg = l * ae[n] * pe[n];
              dd_e += dg * Ae[n];
              dAe[n] += dg * de;
              le[n] = ae[n] * l;  // carried to t-1
            }
            dv[row * E + e] = dv_e;
            ddelta[row * E + e] = dd_e;
          }
          std::memcpy(dq + row * N, dq_t.data(), N * sizeof(T));
          std::memcpy(dk + row * N, dk_t.data(), N * sizeof(T));
        }
      }
      if (dh0) std::memcpy(dh0 + b * size, lam.data(), size * sizeof(T));
    }
  });
}

void check(const torch::Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.dim() == dims, name, " must have ", dims, " dimensions");
}

}  // namespace

std::vector<torch::Tensor> scan_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor delta,
                                        torch::Tensor A, torch::Tensor h0) {
  check(q, "q", 3); check(k, "k", 3); check(v, "v", 3); check(delta, "delta", 3); check(A, "A", 2);
  const int64_t B = v.size(0), L = v.size(1), E = v.size(2), N = A.size(1);
  const int64_t chunks = (L + chunk_length(L, E, N) - 1) / chunk_length(L, E, N);
  auto y = torch::empty_like(v);
  auto hL = torch::empty({B, E, N}, v.options());
  auto ckpt = torch::empty({B, chunks, E, N}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "cab_channel_scan_forward", [&] {
    auto run = N == 16 ? forward_kernel<scalar_t, 16> : forward_kernel<scalar_t, 0>;  // Mamba's N: unrolled
    run(q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                             delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                             h0.numel() ? h0.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(),
                             hL.data_ptr<scalar_t>(), ckpt.data_ptr<scalar_t>(), B, E, L, N);
  });
  return {y, hL, ckpt};
}

std::vector<torch::Tensor> scan_backward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor delta,
                                         torch::Tensor A, torch::Tensor ckpt, bool has_h0, torch::Tensor dy,
                                         torch::Tensor dhL) {
  check(q, "q", 3); check(k, "k", 3); check(v, "v", 3); check(delta, "delta", 3); check(A, "A", 2);
  check(ckpt, "checkpoints", 4);
  const int64_t B = v.size(0), L = v.size(1), E = v.size(2), N = A.size(1);
  auto dq = torch::empty_like(q), dk = torch::empty_like(k);
  auto dv = torch::empty_like(v), ddelta = torch::empty_like(v);
  auto dA_per_b = torch::zeros({B, E, N}, v.options());
  auto dh0 = has_h0 ? torch::empty({B, E, N}, v.options()) : torch::empty({0}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "cab_channel_scan_backward", [&] {
    auto run = N == 16 ? backward_kernel<scalar_t, 16> : backward_kernel<scalar_t, 0>;
    run(q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                              delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(), ckpt.data_ptr<scalar_t>(),
                              dy.numel() ? dy.data_ptr<scalar_t>() : nullptr,
                              dhL.numel() ? dhL.data_ptr<scalar_t>() : nullptr, dq.data_ptr<scalar_t>(),
                              dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(), ddelta.data_ptr<scalar_t>(),
                              dA_per_b.data_ptr<scalar_t>(), has_h0 ? dh0.data_ptr<scalar_t>() : nullptr, B, E, L,
                              N);
  });
  return {dq, dk, dv, ddelta, dA_per_b.sum(0), dh0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "Mamba-1 selective scan, forward (CPU)");
  m.def("backward", &scan_backward, "Mamba-1 selective scan, backward (CPU)");
}
