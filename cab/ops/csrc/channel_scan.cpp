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
//
// Mamba's selective form (`selective`, cab/ops/selective.py) also makes the scan's inputs in the same loop:
// Δ_t = keep_t · softplus(delta_t + bias), x_t = Δ_t u_t, and adds the skip keep_t · D ⊙ u_t to y_t, so that
// softplus, the products and the skip are no passes over (B, L, E) of their own, forward or backward; it may
// run the positions last to first (`reverse`: a bidirectional layer's backward branch, without flipping).
// `conv_forward` / `conv_backward`: Mamba's depthwise short convolution and its SiLU in one pass.
//
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

// exp for float32 that the compiler inlines into the vector loop (no call per vector), Cephes' scheme with a
// shorter polynomial: x = n·ln2 + r, |r| <= ln2/2, e^r = 1 + r + r²·q(r) with q of degree 3 fitted for relative
// error on that interval (within 1.1e-7 in exact arithmetic, 1.7e-7 or about 3 ulp evaluated in float32; Cephes'
// degree-7 form is 1 ulp for two more multiply-adds, about 8% of the scan's time), 2^n put into the exponent
// bits. Arguments below -87.3 give the smallest normal float rather than a subnormal or 0: a decay of 1e-38
// instead of 0 changes nothing representable in a sum with other terms. float64 keeps std::exp.
inline float exp_inline(float x) {
  x = std::min(std::max(x, -87.33654f), 88.37626f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = std::fma(n, 2.12194440e-4f, std::fma(n, -0.693359375f, x));  // two fmas: -ffast-math may not fold
  float p = 8.31249e-3f;
  p = p * r + 4.189008e-2f;
  p = p * r + 1.6667115e-1f;
  p = p * r + 4.9999232e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}
inline double exp_inline(double x) { return std::exp(x); }

// The scan's inputs, and for Mamba's selective form (SEL) how Δ_t and x_t are made from them:
//     plain      Δ_t = delta_t,  x_t = v_t (= Δ_t u_t, made by the caller)
//     selective  Δ_t = keep_t · softplus(delta_t + bias) (softplus and bias optional),  x_t = Δ_t u_t  (u = v),
//                y_t += keep_t · D ⊙ u_t
// `reverse` runs the positions from last to first (the backward branch of a bidirectional layer, without flips).
template <typename T>
struct Scan {
  const T *q, *k, *v, *delta, *A, *h0;
  const T *bias, *D, *keep, *proj;  // selective only, each may be null; proj: (R, E), then delta is (B, L, R)
  bool softplus, reverse;
  int64_t B, E, L, N, R;
  int64_t row(int64_t b, int64_t i) const { return b * L + (reverse ? L - 1 - i : i); }  // i-th position run
};

template <typename T>
inline T softplus_of(T z) { return z > T(20) ? z : std::log1p(exp_inline(z)); }  // torch's threshold 20
template <typename T>
inline T sigmoid_of(T z) { return T(1) / (T(1) + exp_inline(-z)); }

// Δ_t and x_t of one position: the inputs themselves (plain), or made into d and x (selective), with z, Δ_t's
// pre-activation (delta_t, or delta_t projected by proj, + bias), kept for the backward.
template <typename T, bool SEL>
inline void position_inputs(const Scan<T>& s, int64_t row, T* z, T* d, T* x, const T** dp, const T** xp) {
  if (!SEL) {
    *dp = s.delta + row * s.E;
    *xp = s.v + row * s.E;
    return;
  }
  const T kp = s.keep ? s.keep[row] : T(1);
  const T *u = s.v + row * s.E, *bias = s.bias;
  const int64_t E = s.E;
  if (bias) std::memcpy(z, bias, E * sizeof(T));
  else std::fill(z, z + E, T(0));
  if (s.proj) {  // z += Σ_r delta_{t,r} proj_r: Mamba's low-rank W_Δ, R rows of E
    for (int64_t r = 0; r < s.R; ++r) {
      const T c = s.delta[row * s.R + r], *pr = s.proj + r * E;
#pragma omp simd
      for (int64_t e = 0; e < E; ++e) z[e] += c * pr[e];
    }
  } else {
    const T* raw = s.delta + row * E;
#pragma omp simd
    for (int64_t e = 0; e < E; ++e) z[e] += raw[e];
  }
  if (s.softplus) {  // vector exp and log1p (libmvec)
#pragma omp simd
    for (int64_t e = 0; e < E; ++e) d[e] = kp * softplus_of(z[e]);
  } else {
#pragma omp simd
    for (int64_t e = 0; e < E; ++e) d[e] = kp * z[e];
  }
#pragma omp simd
  for (int64_t e = 0; e < E; ++e) x[e] = d[e] * u[e];
  *dp = d;
  *xp = x;
}

// One position, state-major: h is (N, E), a row of E channels per state, so every loop below is a vector loop
// over channels and the read-out y_t = Σ_n q_n h_n accumulates rows (no sum across a vector). `a` (if not null)
// keeps the decays exp(Δ_t A) for the backward.
template <typename T, int NT>
inline void step(const T* __restrict d, const T* __restrict x, const T* __restrict A, const T* __restrict k,
                 const T* prev, T* h, T* __restrict a, int64_t E, int64_t N_) {  // prev may be h (in place)
  const int64_t N = NT ? NT : N_;
  for (int64_t n = 0; n < N; ++n) {
    const T kn = k[n];
    const T *An = A + n * E, *pn = prev + n * E;
    T* hn = h + n * E;
    if (a) {
      T* an = a + n * E;
#pragma omp simd
      for (int64_t e = 0; e < E; ++e) {
        an[e] = exp_inline(d[e] * An[e]);
        hn[e] = an[e] * pn[e] + x[e] * kn;
      }
    } else {
#pragma omp simd
      for (int64_t e = 0; e < E; ++e) hn[e] = exp_inline(d[e] * An[e]) * pn[e] + x[e] * kn;
    }
  }
}

template <typename T, int NT, bool SEL>
void forward_kernel(const Scan<T>& s, T* y, T* hL, T* ckpt) {
  const int64_t E = s.E, L = s.L, N = NT ? NT : s.N;
  const int64_t C = chunk_length(L, E, N), size = E * N, chunks = (L + C - 1) / C;
  at::parallel_for(0, s.B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> h(size), z(E), d(E), x(E);
    for (int64_t b = b0; b < b1; ++b) {
      if (s.h0) std::memcpy(h.data(), s.h0 + b * size, size * sizeof(T));
      else std::fill(h.begin(), h.end(), T(0));
      for (int64_t i = 0; i < L; ++i) {
        if (i % C == 0) std::memcpy(ckpt + (b * chunks + i / C) * size, h.data(), size * sizeof(T));
        const int64_t row = s.row(b, i);
        const T *dt, *xt, *qt = s.q + row * N;
        position_inputs<T, SEL>(s, row, z.data(), d.data(), x.data(), &dt, &xt);
        step<T, NT>(dt, xt, s.A, s.k + row * N, h.data(), h.data(), nullptr, E, N);
        T* yt = y + row * E;
        if (SEL && s.D) {  // the skip keep_t · D ⊙ u_t
          const T kp = s.keep ? s.keep[row] : T(1), *u = s.v + row * E;
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) yt[e] = kp * s.D[e] * u[e];
        } else {
          std::fill(yt, yt + E, T(0));
        }
        for (int64_t n = 0; n < N; ++n) {
          const T qn = qt[n];
          const T* hn = h.data() + n * E;
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) yt[e] += qn * hn[e];
        }
      }
      std::memcpy(hL + b * size, h.data(), size * sizeof(T));
    }
  });
}

// Gradients. Plain: dv = dL/dx, ddelta = dL/dΔ. Selective: dv = dL/du, ddelta = dL/d(delta, before the projection,
// bias and softplus), and dbias, dD, dproj per example (summed by the caller, as dA).
template <typename T>
struct ScanGrads {
  T *dq, *dk, *dv, *ddelta, *dA_per_b, *dh0, *dbias_per_b, *dD_per_b, *dproj_per_b;
};

template <typename T, int NT, bool SEL>
void backward_kernel(const Scan<T>& s, const T* ckpt, const T* dy, const T* dhL, const ScanGrads<T>& g) {
  const int64_t E = s.E, L = s.L, N = NT ? NT : s.N;
  const int64_t C = chunk_length(L, E, N), size = E * N, chunks = (L + C - 1) / C;
  const T* A = s.A;
  at::parallel_for(0, s.B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> hs(C * size), as(C * size), lam(size), dx_t(E), dd_t(E), dz_t(E), no_dy(E, T(0));
    std::vector<T> zs(SEL ? C * E : 0), ds(SEL ? C * E : 0), xs(SEL ? C * E : 0);  // the chunk's z, Δ_t, x_t
    std::vector<const T*> dts(C), xts(C);
    for (int64_t b = b0; b < b1; ++b) {
      T* dAb = g.dA_per_b + b * size;
      if (dhL) std::memcpy(lam.data(), dhL + b * size, size * sizeof(T));
      else std::fill(lam.begin(), lam.end(), T(0));
      for (int64_t c = chunks - 1; c >= 0; --c) {
        const int64_t i0 = c * C, i1 = std::min(L, i0 + C);
        const T* start = ckpt + (b * chunks + c) * size;
        for (int64_t i = i0; i < i1; ++i) {  // the chunk again: h_t and exp(Δ_t A)
          const int64_t row = s.row(b, i), j = i - i0;
          position_inputs<T, SEL>(s, row, SEL ? zs.data() + j * E : nullptr, SEL ? ds.data() + j * E : nullptr,
                                  SEL ? xs.data() + j * E : nullptr, &dts[j], &xts[j]);
          step<T, NT>(dts[j], xts[j], A, s.k + row * N, j > 0 ? hs.data() + (j - 1) * size : start,
                      hs.data() + j * size, as.data() + j * size, E, N);
        }
        for (int64_t i = i1 - 1; i >= i0; --i) {
          const int64_t row = s.row(b, i), j = i - i0;
          const T *qt = s.q + row * N, *kt = s.k + row * N, *xt = xts[j], *dt = dts[j];
          const T* gt = dy ? dy + row * E : no_dy.data();
          const T* ht = hs.data() + j * size;
          const T* at_ = as.data() + j * size;
          const T* prev = j > 0 ? ht - size : start;
          T *dxs = dx_t.data(), *dds = dd_t.data();
          std::fill(dxs, dxs + E, T(0));
          std::fill(dds, dds + E, T(0));
          for (int64_t n = 0; n < N; ++n) {  // a row of E channels per state
            const T qn = qt[n], kn = kt[n];
            T* __restrict ln = lam.data() + n * E;
            const T *__restrict hn = ht + n * E, *__restrict an = at_ + n * E, *__restrict pn = prev + n * E;
            const T* __restrict An = A + n * E;
            T* __restrict dAn = dAb + n * E;
            T dq_n = 0, dk_n = 0;
#pragma omp simd reduction(+ : dq_n, dk_n)
            for (int64_t e = 0; e < E; ++e) {
              const T ge = gt[e];
              const T l = ln[e] + qn * ge;  // λ_t
              dq_n += ge * hn[e];
              dk_n += xt[e] * l;
              dxs[e] += l * kn;
              const T dg = l * an[e] * pn[e];
              dds[e] += dg * An[e];
              dAn[e] += dg * dt[e];
              ln[e] = an[e] * l;  // carried to t-1
            }
            g.dq[row * N + n] = dq_n;
            g.dk[row * N + n] = dk_n;
          }
          if (!SEL) {
            std::memcpy(g.dv + row * E, dxs, E * sizeof(T));
            std::memcpy(g.ddelta + row * E, dds, E * sizeof(T));
          } else {  // x = Δ u, Δ = keep · softplus(z), z = delta (projected) + bias, y += keep · D u
            const T kp = s.keep ? s.keep[row] : T(1);
            const T *u = s.v + row * E, *zt = zs.data() + j * E;
            T *du = g.dv + row * E, *dz = s.proj ? dz_t.data() : g.ddelta + row * E;
            T *dbias = g.dbias_per_b + b * E, *dD = g.dD_per_b + b * E;
#pragma omp simd
            for (int64_t e = 0; e < E; ++e) {
              const T slope = s.softplus ? (zt[e] > T(20) ? T(1) : sigmoid_of(zt[e])) : T(1);
              const T D = s.D ? s.D[e] : T(0), ge = gt[e];
              dz[e] = (dds[e] + dxs[e] * u[e]) * kp * slope;
              du[e] = dxs[e] * dt[e] + ge * kp * D;
              dbias[e] += dz[e];
              dD[e] += ge * kp * u[e];
            }
            for (int64_t r = 0; s.proj && r < s.R; ++r) {  // through z = Σ_r delta_r proj_r
              const T c = s.delta[row * s.R + r], *pr = s.proj + r * E;
              T* dpr = g.dproj_per_b + (b * s.R + r) * E;
              T acc = 0;
#pragma omp simd reduction(+ : acc)
              for (int64_t e = 0; e < E; ++e) {
                acc += dz[e] * pr[e];
                dpr[e] += dz[e] * c;
              }
              g.ddelta[row * s.R + r] = acc;
            }
          }
        }
      }
      if (g.dh0) std::memcpy(g.dh0 + b * size, lam.data(), size * sizeof(T));
    }
  });
}

// Mamba's short convolution with SiLU, one pass: u_t = SiLU(b + Σ_j w_j ⊙ x_{t-(K-1)+j}), zeros outside the
// sequence; `reverse` looks forward instead (x_{t+(K-1)-j}: the causal conv of the reversed sequence, read in
// place). x, u: (B, L, E); w: (K, E) taps; the backward recomputes the pre-activation.
inline int64_t tap_position(int64_t t, int64_t j, int64_t K, bool reverse) {
  return reverse ? t + (K - 1) - j : t - (K - 1) + j;
}

// acc = b + Σ_j w_j ⊙ x at tap j's position (zeros outside the sequence), for position t of example b; x's rows
// (positions) are S numbers apart (S >= E: a slice of a wider projection's output is read in place)
template <typename T>
inline void preactivation(const T* x, const T* w, const T* bias, T* acc, int64_t b, int64_t t, int64_t L, int64_t E,
                          int64_t S, int64_t K, bool reverse) {
  std::memcpy(acc, bias, E * sizeof(T));
  for (int64_t j = 0; j < K; ++j) {
    const int64_t p = tap_position(t, j, K, reverse);
    if (p < 0 || p >= L) continue;
    const T *xp = x + (b * L + p) * S, *wj = w + j * E;
#pragma omp simd
    for (int64_t e = 0; e < E; ++e) acc[e] += wj[e] * xp[e];
  }
}

template <typename T>
void conv_forward_kernel(const T* x, const T* w, const T* bias, T* u, int64_t B, int64_t L, int64_t E, int64_t S,
                         int64_t K, bool reverse, bool silu) {
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> acc(E);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t t = 0; t < L; ++t) {
        preactivation(x, w, bias, acc.data(), b, t, L, E, S, K, reverse);
        T* ut = u + (b * L + t) * E;
        if (silu) {
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) ut[e] = acc[e] / (T(1) + exp_inline(-acc[e]));
        } else {
          std::memcpy(ut, acc.data(), E * sizeof(T));
        }
      }
    }
  });
}

template <typename T>
void conv_backward_kernel(const T* x, const T* w, const T* bias, const T* du, T* dx, T* dw_per_b, T* db_per_b,
                          int64_t B, int64_t L, int64_t E, int64_t S, int64_t K, bool reverse, bool silu) {
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> acc(E);
    for (int64_t b = b0; b < b1; ++b) {
      T *dwb = dw_per_b + b * K * E, *dbb = db_per_b + b * E;
      std::fill(dx + b * L * E, dx + (b + 1) * L * E, T(0));
      for (int64_t t = 0; t < L; ++t) {
        preactivation(x, w, bias, acc.data(), b, t, L, E, S, K, reverse);
        const T* gt = du + (b * L + t) * E;
        if (silu) {  // d SiLU(z)/dz = σ(z) (1 + z (1 - σ(z)))
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) {
            const T sg = T(1) / (T(1) + exp_inline(-acc[e]));
            acc[e] = gt[e] * sg * (T(1) + acc[e] * (T(1) - sg));
          }
        } else {
          std::memcpy(acc.data(), gt, E * sizeof(T));
        }
#pragma omp simd
        for (int64_t e = 0; e < E; ++e) dbb[e] += acc[e];
        for (int64_t j = 0; j < K; ++j) {
          const int64_t p = tap_position(t, j, K, reverse);
          if (p < 0 || p >= L) continue;
          const T *xp = x + (b * L + p) * S, *wj = w + j * E;
          T *dxp = dx + (b * L + p) * E, *dwj = dwb + j * E;
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) {
            dxp[e] += acc[e] * wj[e];
            dwj[e] += acc[e] * xp[e];
          }
        }
      }
    }
  });
}

void check(const torch::Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.dim() == dims, name, " must have ", dims, " dimensions");
}

template <typename T>
const T* optional_ptr(const torch::Tensor& t) { return t.numel() ? t.data_ptr<T>() : nullptr; }

template <typename T>
Scan<T> make_scan(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& delta,
                  const torch::Tensor& A, const torch::Tensor& h0, const torch::Tensor& bias, const torch::Tensor& D,
                  const torch::Tensor& keep, const torch::Tensor& proj, bool softplus, bool reverse) {
  // A and h0 state-major, (N, E) and (B, N, E): the kernels' layout
  check(q, "q", 3); check(k, "k", 3); check(v, "v", 3); check(delta, "delta", 3); check(A, "A", 2);
  return Scan<T>{q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), delta.data_ptr<T>(), A.data_ptr<T>(),
                 optional_ptr<T>(h0), optional_ptr<T>(bias), optional_ptr<T>(D), optional_ptr<T>(keep),
                 optional_ptr<T>(proj), softplus, reverse, v.size(0), v.size(2), v.size(1), A.size(0),
                 proj.numel() ? proj.size(0) : 0};
}

// selective: false for the plain scan (cab.ops.causal_recurrence's case), true for Mamba's whole selective scan.
// A: (E, N), h0 and h_L: (B, E, N) as the callers hold them; transposed here to the kernels' (N, E) rows (E·N
// numbers, against the scan's L·E·N work).
std::vector<torch::Tensor> scan_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor delta,
                                        torch::Tensor A, torch::Tensor h0, torch::Tensor bias, torch::Tensor D,
                                        torch::Tensor keep, torch::Tensor proj, bool selective, bool softplus,
                                        bool reverse) {
  const int64_t B = v.size(0), L = v.size(1), E = v.size(2), N = A.size(1);
  const int64_t chunks = (L + chunk_length(L, E, N) - 1) / chunk_length(L, E, N);
  auto y = torch::empty_like(v);
  auto hL = torch::empty({B, N, E}, v.options());
  auto ckpt = torch::empty({B, chunks, N, E}, v.options());
  const auto At = A.t().contiguous();
  const auto h0t = h0.numel() ? h0.transpose(1, 2).contiguous() : h0;
  const auto projt = proj.numel() ? proj.t().contiguous() : proj;  // (E, R) -> R rows of E
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "cab_channel_scan_forward", [&] {
    const auto s = make_scan<scalar_t>(q, k, v, delta, At, h0t, bias, D, keep, projt, softplus, reverse);
    auto run = selective ? (N == 16 ? forward_kernel<scalar_t, 16, true> : forward_kernel<scalar_t, 0, true>)
                         : (N == 16 ? forward_kernel<scalar_t, 16, false> : forward_kernel<scalar_t, 0, false>);
    run(s, y.data_ptr<scalar_t>(), hL.data_ptr<scalar_t>(), ckpt.data_ptr<scalar_t>());  // N = 16: unrolled
  });
  return {y, hL.transpose(1, 2).contiguous(), ckpt};
}

std::vector<torch::Tensor> scan_backward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor delta,
                                         torch::Tensor A, torch::Tensor ckpt, bool has_h0, torch::Tensor bias,
                                         torch::Tensor D, torch::Tensor keep, torch::Tensor proj, bool selective,
                                         bool softplus, bool reverse, torch::Tensor dy, torch::Tensor dhL) {
  check(ckpt, "checkpoints", 4);
  const int64_t B = v.size(0), E = v.size(2), N = A.size(1);
  auto dq = torch::empty_like(q), dk = torch::empty_like(k);
  auto dv = torch::empty_like(v), ddelta = torch::empty_like(delta);
  auto dA_per_b = torch::zeros({B, N, E}, v.options());
  auto dh0 = has_h0 ? torch::empty({B, N, E}, v.options()) : torch::empty({0}, v.options());
  const auto At = A.t().contiguous();
  const auto dhLt = dhL.numel() ? dhL.transpose(1, 2).contiguous() : dhL;
  const auto projt = proj.numel() ? proj.t().contiguous() : proj;
  auto dproj_per_b = torch::zeros({proj.numel() ? B : 0, projt.numel() ? projt.size(0) : 0, E}, v.options());
  auto dbias_per_b = torch::zeros({selective ? B : 0, E}, v.options());
  auto dD_per_b = torch::zeros({selective ? B : 0, E}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "cab_channel_scan_backward", [&] {
    const auto s = make_scan<scalar_t>(q, k, v, delta, At, torch::empty({0}, v.options()), bias, D, keep, projt,
                                       softplus, reverse);
    const ScanGrads<scalar_t> g{dq.data_ptr<scalar_t>(), dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(),
                                ddelta.data_ptr<scalar_t>(), dA_per_b.data_ptr<scalar_t>(),
                                has_h0 ? dh0.data_ptr<scalar_t>() : nullptr,
                                selective ? dbias_per_b.data_ptr<scalar_t>() : nullptr,
                                selective ? dD_per_b.data_ptr<scalar_t>() : nullptr,
                                proj.numel() ? dproj_per_b.data_ptr<scalar_t>() : nullptr};
    auto run = selective ? (N == 16 ? backward_kernel<scalar_t, 16, true> : backward_kernel<scalar_t, 0, true>)
                         : (N == 16 ? backward_kernel<scalar_t, 16, false> : backward_kernel<scalar_t, 0, false>);
    run(s, ckpt.data_ptr<scalar_t>(), dy.numel() ? dy.data_ptr<scalar_t>() : nullptr,
        dhLt.numel() ? dhLt.data_ptr<scalar_t>() : nullptr, g);
  });
  return {dq, dk, dv, ddelta, dA_per_b.sum(0).t().contiguous(), has_h0 ? dh0.transpose(1, 2).contiguous() : dh0,
          dbias_per_b.sum(0), dD_per_b.sum(0), dproj_per_b.sum(0).t().contiguous()};
}

// x: (B, L, E) with unit channel stride and rows S apart (contiguous, or a slice of a (B, L, S) tensor)
int64_t row_stride(const torch::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3, "x must be a (B, L, E) CPU tensor");
  TORCH_CHECK(x.stride(2) == 1 && x.stride(0) == x.size(1) * x.stride(1) && x.stride(1) >= x.size(2),
              "x must have contiguous channels and rows, as a slice of a (B, L, S) tensor along its last dimension");
  return x.stride(1);
}

std::vector<torch::Tensor> conv_forward(torch::Tensor x, torch::Tensor w, torch::Tensor bias, bool reverse,
                                        bool silu) {
  const int64_t S = row_stride(x);
  check(w, "w", 2); check(bias, "bias", 1);
  auto u = torch::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cab_short_conv_forward", [&] {
    conv_forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
                                  u.data_ptr<scalar_t>(), x.size(0), x.size(1), x.size(2), S, w.size(0), reverse, silu);
  });
  return {u};
}

std::vector<torch::Tensor> conv_backward(torch::Tensor x, torch::Tensor w, torch::Tensor bias, torch::Tensor du,
                                         bool reverse, bool silu) {
  const int64_t S = row_stride(x);
  check(w, "w", 2); check(bias, "bias", 1); check(du, "du", 3);
  const int64_t B = x.size(0), E = x.size(2), K = w.size(0);
  auto dx = torch::empty(x.sizes(), x.options());
  auto dw_per_b = torch::zeros({B, K, E}, x.options());
  auto db_per_b = torch::zeros({B, E}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cab_short_conv_backward", [&] {
    conv_backward_kernel<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
                                   du.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), dw_per_b.data_ptr<scalar_t>(),
                                   db_per_b.data_ptr<scalar_t>(), B, x.size(1), E, S, K, reverse, silu);
  });
  return {dx, dw_per_b.sum(0), db_per_b.sum(0)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "Mamba-1's scan, plain or selective, forward (CPU)");
  m.def("backward", &scan_backward, "Mamba-1's scan, plain or selective, backward (CPU)");
  m.def("conv_forward", &conv_forward, "depthwise short convolution (+ SiLU), forward (CPU)");
  m.def("conv_backward", &conv_backward, "depthwise short convolution (+ SiLU), backward (CPU)");
}
