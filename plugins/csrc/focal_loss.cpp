// Fused CPU kernel for the sigmoid Focal Loss (FL) and FL* of Lin et al., "Focal Loss for Dense Object Detection".
//
// One pass over the (N, K) logits computes the loss (or only its sum), one pass computes the gradient, with the
// closed forms of the paper's appendix B. Everything is evaluated from the logit in log-space:
//
//   x_t = s x (s = +1 for y = 1, -1 for y = 0),   e = exp(-|x_t|),   l = log1p(e)
//   -log p_t       = softplus(-x_t) = max(-x_t, 0) + l          (the cross entropy, "ce")
//   -log (1 - p_t) = softplus( x_t) = max( x_t, 0) + l
//   1 - p_t = sigmoid(-x_t) = (x_t >= 0 ? e : 1) / (1 + e),  p_t = (x_t >= 0 ? 1 : e) / (1 + e)
//   FL     = alpha_t (1 - p_t)^gamma ce
//   dFL/dx = s alpha_t (1 - p_t)^gamma (gamma p_t log p_t + p_t - 1)
//          = -s alpha_t (1 - p_t)^gamma (gamma p_t ce + 1 - p_t)
//   FL*    = alpha_t softplus(-z) / gamma,  z = gamma x_t + beta
//   dFL*/dx = s alpha_t (p*_t - 1) = -s alpha_t sigmoid(-z)
//
// (1 - p_t)^gamma is never formed as a power of a rounded probability: it is 1 (gamma = 0), a product of (1 - p_t)
// (integer gamma) or exp(-gamma softplus(x_t)); (1 - p_t)^(gamma - 1) is never formed at all.
//
// Targets are either int64 class indices (N,) with background = K (the hot path: one compare per vector picks the
// positive column) or float (N, K) soft targets in [0, 1]. Weights are absent, per row (N,) or per element (N, K); an
// element with weight 0 yields exactly 0 loss and gradient, whatever its logit. Sums are accumulated per block of rows
// (fixed size, independent of the thread count) in double and added in block order, so they are deterministic.
//
// Vectorised with ATen's at::vec::Vectorized<float> (AVX2 when built with CPU_CAPABILITY_AVX2, portable code
// otherwise) and threaded with at::parallel_for. exp and log1p are short inline polynomials over the ranges needed
// here (~1-2 ulp); Sleef (through at::vec) is only called for the rare soft-target, non-integer-gamma power.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();
constexpr int64_t kBlockRows = 64;  // rows per partial sum; fixed so that sums do not depend on the thread count

enum class Modulation { kNone, kSquare, kInteger, kGeneral };  // gamma == 0, gamma == 2, small integer, otherwise

inline Modulation modulation_for(double gamma) {
  if (gamma == 0.0) return Modulation::kNone;
  if (gamma == 2.0) return Modulation::kSquare;
  if (gamma == std::floor(gamma) && gamma >= 1.0 && gamma <= 8.0) return Modulation::kInteger;
  return Modulation::kGeneral;
}

// Shared per-call constants.
struct Params {
  const float* alpha_pos;  // (K padded to a multiple of kLanes) alpha_t for y = 1
  const float* alpha_neg;  // alpha_t for y = 0
  float gamma;
  float beta;
  int gamma_int;
};

inline Vec vmax0(const Vec& v) { return at::vec::maximum(v, Vec(0.f)); }

// ---------------------------------------------------------------------------------------------------------------
// The two transcendental functions every element needs, inlined (a call into Sleef spills every live vector register,
// and the arguments here are range-limited, so short polynomials suffice). Both are accurate to ~1-2 ulp.
// ---------------------------------------------------------------------------------------------------------------

// exp(u) for u <= 0 (here u = -|x_t|): u = n ln2 + r, |r| <= ln2 / 2, exp(r) by the Cephes expf polynomial,
// 2^n built in the exponent bits. Results below FLT_MIN (u < -87.3) are flushed to 0.
inline Vec exp_nonpositive(const Vec& u) {
  const Vec lowest(-87.3f);
  const Vec uc = at::vec::maximum(u, lowest);
  const Vec n = (uc * Vec(1.44269504088896341f)).round();               // in [-126, 0]
  Vec r = at::vec::fmadd(n, Vec(-0.693359375f), uc);                       // Cody-Waite: ln2 = hi + lo
  r = at::vec::fmadd(n, Vec(2.12194440e-4f), r);
  Vec p = at::vec::fmadd(Vec(1.9875691500e-4f), r, Vec(1.3981999507e-3f));
  p = at::vec::fmadd(p, r, Vec(8.3334519073e-3f));
  p = at::vec::fmadd(p, r, Vec(4.1665795894e-2f));
  p = at::vec::fmadd(p, r, Vec(1.6666665459e-1f));
  p = at::vec::fmadd(p, r, Vec(5.0000001201e-1f));
  p = at::vec::fmadd(p, r * r, r + Vec(1.f));
  const auto biased = at::vec::convert_to_int_of_same_size<float>(n) + at::vec::Vectorized<int32_t>(127);
  const Vec two_n = at::vec::cast<float>(biased << at::vec::Vectorized<int32_t>(23));
  return Vec::blendv(p * two_n, Vec(0.f), u < lowest);
}

// log1p(e) for e in [0, 1]: log(1 + e) = 2 atanh(s) with s = e / (2 + e) in [0, 1/3], the odd series to s^13
// (the first dropped term is below 1.5e-8 relative). Keeps full relative precision for tiny e.
inline Vec log1p_from_s(const Vec& s) {
  const Vec w = s * s;
  Vec p = at::vec::fmadd(Vec(1.f / 13.f), w, Vec(1.f / 11.f));
  p = at::vec::fmadd(p, w, Vec(1.f / 9.f));
  p = at::vec::fmadd(p, w, Vec(1.f / 7.f));
  p = at::vec::fmadd(p, w, Vec(1.f / 5.f));
  p = at::vec::fmadd(p, w, Vec(1.f / 3.f));
  p = at::vec::fmadd(p, w, Vec(1.f));
  return (s + s) * p;
}
inline Vec log1p_unit(const Vec& e) { return log1p_from_s(e / (Vec(2.f) + e)); }

// For e = exp(-|v|): 1 / (1 + e) (the sigmoid of |v|) and log1p(e). (Sharing one division between them,
// r = 1 / ((1 + e)(2 + e)), measured no faster: the divisions are not the bottleneck.)
struct SigmoidParts {
  Vec e, inv, l;
};
inline SigmoidParts sigmoid_parts(const Vec& v) {
  const Vec e = exp_nonpositive(v.abs().neg());
  return {e, Vec(1.f) / (Vec(1.f) + e), log1p_unit(e)};
}

// exp(-|v|) and log1p(exp(-|v|)), the two pieces of softplus(+-v) = max(+-v, 0) + log1p(exp(-|v|)).
struct ExpLog {
  Vec e, l;
};
inline ExpLog exp_log1p_neg_abs(const Vec& v) {
  const Vec e = exp_nonpositive(v.abs().neg());
  return {e, log1p_unit(e)};
}

// ---------------------------------------------------------------------------------------------------------------
// Element formulas: loss(x, target, alpha_pos, alpha_neg, params) and grad(...) for one vector of lanes, unweighted.
// For class-index targets the target is a lane mask (all bits set where the column is the anchor's class).
// ---------------------------------------------------------------------------------------------------------------

template <Modulation M>
struct FocalHard {
  // (1 - p_t)^gamma from q = 1 - p_t (gamma = 2 or integer) or from sp = softplus(x_t) = -log(1 - p_t) (general).
  static inline Vec modulating(const Vec& q, const Vec& sp, const Params& p) {
    if constexpr (M == Modulation::kNone) {
      return Vec(1.f);
    } else if constexpr (M == Modulation::kSquare) {
      return q * q;
    } else if constexpr (M == Modulation::kInteger) {
      Vec m = q;
      for (int i = 1; i < p.gamma_int; ++i) m = m * q;
      return m;
    } else {
      return exp_nonpositive(sp * Vec(-p.gamma));
    }
  }

  static inline Vec loss(const Vec& x, const Vec& pos, const Vec& ap, const Vec& an, const Params& p) {
    const Vec xt = Vec::blendv(x.neg(), x, pos);
    const Vec at = Vec::blendv(an, ap, pos);
    if constexpr (M == Modulation::kNone || M == Modulation::kGeneral) {
      const auto [e, l] = exp_log1p_neg_abs(xt);
      const Vec ce = vmax0(xt.neg()) + l;
      if constexpr (M == Modulation::kNone) return at * ce;
      else return at * ce * modulating(Vec(0.f), vmax0(xt) + l, p);
    } else {
      const SigmoidParts sg = sigmoid_parts(xt);
      const Vec ce = vmax0(xt.neg()) + sg.l;
      const Vec q = Vec::blendv(sg.inv, sg.e * sg.inv, xt >= Vec(0.f));  // 1 - p_t = sigmoid(-x_t)
      return at * ce * modulating(q, Vec(0.f), p);
    }
  }

  static inline Vec grad(const Vec& x, const Vec& pos, const Vec& ap, const Vec& an, const Params& p) {
    const Vec xt = Vec::blendv(x.neg(), x, pos);
    const Vec minus_s_at = Vec::blendv(an, ap.neg(), pos);  // -s alpha_t
    const Vec nonneg = xt >= Vec(0.f);
    if constexpr (M == Modulation::kNone) {
      const Vec e = exp_nonpositive(xt.abs().neg());
      const Vec q = Vec::blendv(Vec(1.f), e, nonneg) / (Vec(1.f) + e);  // 1 - p_t
      return minus_s_at * q;                                              // dCE/dx = s (p_t - 1)
    } else {
      const auto [e, inv, l] = sigmoid_parts(xt);
      const Vec q = Vec::blendv(inv, e * inv, nonneg);    // 1 - p_t
      const Vec pt = Vec::blendv(e * inv, inv, nonneg);  // p_t
      const Vec ce = vmax0(xt.neg()) + l;                 // -log p_t
      const Vec mod = modulating(q, vmax0(xt) + l, p);
      return minus_s_at * mod * at::vec::fmadd(Vec(p.gamma) * pt, ce, q);
    }
  }
};

struct StarHard {
  static inline Vec loss(const Vec& x, const Vec& pos, const Vec& ap, const Vec& an, const Params& p) {
    const Vec xt = Vec::blendv(x.neg(), x, pos);
    const Vec at = Vec::blendv(an, ap, pos);
    const Vec z = at::vec::fmadd(Vec(p.gamma), xt, Vec(p.beta));
    const Vec sp = vmax0(z.neg()) + exp_log1p_neg_abs(z).l;  // softplus(-z) = -log p*_t
    return at * sp * Vec(1.f / p.gamma);
  }

  static inline Vec grad(const Vec& x, const Vec& pos, const Vec& ap, const Vec& an, const Params& p) {
    const Vec xt = Vec::blendv(x.neg(), x, pos);
    const Vec minus_s_at = Vec::blendv(an, ap.neg(), pos);
    const Vec z = at::vec::fmadd(Vec(p.gamma), xt, Vec(p.beta));
    const Vec e = exp_nonpositive(z.abs().neg());
    const Vec sig_neg_z = Vec::blendv(Vec(1.f), e, z >= Vec(0.f)) / (Vec(1.f) + e);  // 1 - p*_t
    return minus_s_at * sig_neg_z;
  }
};

// Soft targets y in [0, 1] (torchvision/mmdet formula):
//   p = sigmoid(x), q = 1 - p_t = p (1 - y) + (1 - p) y, ce = y softplus(-x) + (1 - y) softplus(x),
//   alpha_t = alpha y + (1 - alpha)(1 - y), FL = alpha_t q^gamma ce,
//   dFL/dx = alpha_t q^gamma (gamma r (1 - 2y) ce + p - y),  r = p (1 - p) / q  (in [0, 1]; r = p_t for y in {0, 1}),
// which is appendix B for y in {0, 1}. r is evaluated with q clamped below by FLT_MIN: where q underflows, q^gamma = 0
// and the bounded r does not matter.
template <Modulation M>
struct FocalSoft {
  struct Parts {
    Vec p, pbar, ce, q, at;
  };

  static inline Parts parts(const Vec& x, const Vec& y, const Vec& ap, const Vec& an) {
    Parts r;
    const Vec one(1.f);
    const auto [e, inv, l] = sigmoid_parts(x);
    const Vec ybar = one - y;
    r.ce = at::vec::fmadd(y, vmax0(x.neg()) + l, ybar * (vmax0(x) + l));
    const Vec nonneg = x >= Vec(0.f);
    r.p = Vec::blendv(e * inv, inv, nonneg);
    r.pbar = Vec::blendv(inv, e * inv, nonneg);
    r.q = at::vec::fmadd(r.p, ybar, r.pbar * y);
    r.at = at::vec::fmadd(ap, y, an * ybar);
    return r;
  }

  static inline Vec modulating(const Vec& q, const Params& p) {
    if constexpr (M == Modulation::kNone) {
      return Vec(1.f);
    } else if constexpr (M == Modulation::kSquare) {
      return q * q;
    } else if constexpr (M == Modulation::kInteger) {
      Vec m = q;
      for (int i = 1; i < p.gamma_int; ++i) m = m * q;
      return m;
    } else {
      return q.pow(Vec(p.gamma));
    }
  }

  static inline Vec loss(const Vec& x, const Vec& y, const Vec& ap, const Vec& an, const Params& p) {
    const Parts r = parts(x, y, ap, an);
    return r.at * r.ce * modulating(r.q, p);
  }

  static inline Vec grad(const Vec& x, const Vec& y, const Vec& ap, const Vec& an, const Params& p) {
    const Parts r = parts(x, y, ap, an);
    const Vec p_minus_y = r.p - y;
    if constexpr (M == Modulation::kNone) {
      return r.at * p_minus_y;
    } else {
      const Vec ratio = r.p * r.pbar / at::vec::maximum(r.q, Vec(FLT_MIN));
      const Vec one_minus_2y = Vec(1.f) - y - y;
      const Vec inner = at::vec::fmadd(Vec(p.gamma) * ratio * one_minus_2y, r.ce, p_minus_y);
      return r.at * modulating(r.q, p) * inner;
    }
  }
};

// FL* for soft targets: the expectation over a Bernoulli(y) target, y L(s = +1) + (1 - y) L(s = -1).
struct StarSoft {
  static inline Vec softplus_neg(const Vec& z) { return vmax0(z.neg()) + exp_log1p_neg_abs(z).l; }
  static inline Vec sigmoid_neg(const Vec& z) {
    const Vec e = exp_nonpositive(z.abs().neg());
    return Vec::blendv(Vec(1.f), e, z >= Vec(0.f)) / (Vec(1.f) + e);
  }

  static inline Vec loss(const Vec& x, const Vec& y, const Vec& ap, const Vec& an, const Params& p) {
    const Vec gx = Vec(p.gamma) * x;
    const Vec z_pos = gx + Vec(p.beta);        // s = +1
    const Vec z_neg = Vec(p.beta) - gx;        // s = -1
    const Vec pos = ap * y * softplus_neg(z_pos);
    const Vec neg = an * (Vec(1.f) - y) * softplus_neg(z_neg);
    return (pos + neg) * Vec(1.f / p.gamma);
  }

  static inline Vec grad(const Vec& x, const Vec& y, const Vec& ap, const Vec& an, const Params& p) {
    const Vec gx = Vec(p.gamma) * x;
    const Vec pos = ap * y * sigmoid_neg(gx + Vec(p.beta));
    const Vec neg = an * (Vec(1.f) - y) * sigmoid_neg(Vec(p.beta) - gx);
    return neg - pos;
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Drivers: loop over rows and column vectors, apply weights, tails, reduction.
// ---------------------------------------------------------------------------------------------------------------

enum class WeightMode { kNone, kRow, kElement };

struct Problem {
  const float* x;
  const int64_t* labels;   // class-index targets, or nullptr
  const float* targets;    // soft targets, or nullptr
  const float* weight;     // nullptr, (N,) or (N, K)
  WeightMode weight_mode;
  int64_t n;
  int64_t k;
  Params params;
};

inline int64_t grain_blocks(int64_t k) {
  // About at::internal::GRAIN_SIZE elements per task, at least one block.
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, kBlockRows * k));
}

// One column vector of row i: loads, the element formula, the element weight, zeroed lanes past the tail.
template <typename F, bool kHard, bool kGrad, bool kFull>
inline Vec column_vector(const Problem& pb, const float* xr, const float* yr, const float* wr, const Vec& cols,
                         const Vec& label, int64_t k0, int64_t count) {
  const Vec x = kFull ? Vec::loadu(xr + k0) : Vec::loadu(xr + k0, count);
  Vec tgt;
  if constexpr (kHard) {
    tgt = cols == label;  // y = 1 in the anchor's class column
  } else {
    tgt = kFull ? Vec::loadu(yr + k0) : Vec::loadu(yr + k0, count);
  }
  const Vec ap = Vec::loadu(pb.params.alpha_pos + k0);  // padded to whole vectors
  const Vec an = Vec::loadu(pb.params.alpha_neg + k0);
  Vec v = kGrad ? F::grad(x, tgt, ap, an, pb.params) : F::loss(x, tgt, ap, an, pb.params);
  if (wr != nullptr) {
    const Vec w = kFull ? Vec::loadu(wr + k0) : Vec::loadu(wr + k0, count);
    v = Vec::blendv(w * v, Vec(0.f), w == Vec(0.f));  // weight 0: exactly 0, even for a non-finite v
  }
  if constexpr (!kFull) v = Vec::set(Vec(0.f), v, count);
  return v;
}

// Row kernel: calls fn(k0, count, value) for each column vector of row i, value = element loss or gradient times the
// element weight (lanes past the last column are 0).
template <typename F, bool kHard, bool kGrad, typename Fn>
inline void for_row(const Problem& pb, int64_t i, const Fn& fn) {
  const int64_t k = pb.k;
  const float* xr = pb.x + i * k;
  const float* yr = kHard ? nullptr : pb.targets + i * k;
  const float* wr = pb.weight_mode == WeightMode::kElement ? pb.weight + i * k : nullptr;
  const Vec label(kHard ? static_cast<float>(pb.labels[i]) : 0.f);
  Vec cols = Vec::arange(0.f, 1.f);  // column indices of the current vector (exact in float for K < 2^24)
  int64_t k0 = 0;
  for (; k0 + kLanes <= k; k0 += kLanes) {
    fn(k0, kLanes, column_vector<F, kHard, kGrad, true>(pb, xr, yr, wr, cols, label, k0, kLanes));
    cols = cols + Vec(static_cast<float>(kLanes));
  }
  if (k0 < k) fn(k0, k - k0, column_vector<F, kHard, kGrad, false>(pb, xr, yr, wr, cols, label, k0, k - k0));
}

inline float row_weight(const Problem& pb, int64_t i) {
  return pb.weight_mode == WeightMode::kRow ? pb.weight[i] : 1.f;
}

template <typename F, bool kHard>
double loss_sum(const Problem& pb) {
  const int64_t blocks = (pb.n + kBlockRows - 1) / kBlockRows;
  std::vector<double> partial(blocks, 0.0);
  at::parallel_for(0, blocks, grain_blocks(pb.k), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double block_sum = 0.0;
      const int64_t i1 = std::min(pb.n, (b + 1) * kBlockRows);
      for (int64_t i = b * kBlockRows; i < i1; ++i) {
        const float w = row_weight(pb, i);
        if (w == 0.f) continue;  // ignored anchor
        Vec acc(0.f);
        for_row<F, kHard, false>(pb, i, [&](int64_t, int64_t, const Vec& v) { acc = acc + v; });
        const float row = at::vec::vec_reduce_all<float>([](Vec& a, Vec& c) { return a + c; }, acc);
        block_sum += static_cast<double>(w) * static_cast<double>(row);
      }
      partial[b] = block_sum;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

template <typename F, bool kHard>
void loss_elements(const Problem& pb, float* out) {
  const int64_t blocks = (pb.n + kBlockRows - 1) / kBlockRows;
  at::parallel_for(0, blocks, grain_blocks(pb.k), [&](int64_t b0, int64_t b1) {
    const int64_t i1 = std::min(pb.n, b1 * kBlockRows);
    for (int64_t i = b0 * kBlockRows; i < i1; ++i) {
      float* outr = out + i * pb.k;
      const float w = row_weight(pb, i);
      if (w == 0.f) {
        std::fill(outr, outr + pb.k, 0.f);
        continue;
      }
      const Vec wv(w);
      for_row<F, kHard, false>(pb, i,
                               [&](int64_t k0, int64_t count, const Vec& v) { (v * wv).store(outr + k0, count); });
    }
  });
}

// grad = d(element loss)/dx * weight * scale * (grad_output element, if any).
template <typename F, bool kHard>
void loss_grad(const Problem& pb, const float* grad_output, float scale, float* out) {
  const int64_t blocks = (pb.n + kBlockRows - 1) / kBlockRows;
  at::parallel_for(0, blocks, grain_blocks(pb.k), [&](int64_t b0, int64_t b1) {
    const int64_t i1 = std::min(pb.n, b1 * kBlockRows);
    for (int64_t i = b0 * kBlockRows; i < i1; ++i) {
      float* outr = out + i * pb.k;
      const float w = row_weight(pb, i) * scale;
      if (row_weight(pb, i) == 0.f) {
        std::fill(outr, outr + pb.k, 0.f);
        continue;
      }
      const Vec wv(w);
      const float* gr = grad_output != nullptr ? grad_output + i * pb.k : nullptr;
      for_row<F, kHard, true>(
          pb, i,
          [&](int64_t k0, int64_t count, const Vec& v) {
            Vec g = v * wv;
            if (gr != nullptr) {
              const Vec go = count == kLanes ? Vec::loadu(gr + k0) : Vec::loadu(gr + k0, count);
              g = g * go;
            }
            g.store(outr + k0, count);
          });
    }
  });
}

// An (N, K) float32 output from the default allocator. A large one is fresh memory whose first touch costs one page
// fault per 4 KiB (for 120k x 80 that takes longer than computing the gradient), so ask Linux for transparent huge
// pages on its 2 MiB-aligned interior before the kernel writes it (a hint only; harmless when THP is off).
at::Tensor empty_output(const at::Tensor& like) {
  at::Tensor out = at::empty_like(like, at::MemoryFormat::Contiguous);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(out.data_ptr());
  const uintptr_t end = begin + static_cast<uintptr_t>(out.nbytes());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = end & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Dispatch and Python entry points.
// ---------------------------------------------------------------------------------------------------------------

struct Prepared {
  Problem pb;
  std::vector<float> alpha_pos, alpha_neg;
  Modulation modulation;
  bool star;
};

void check_inputs(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& weight,
                  const at::Tensor& alpha_per_class) {
  TORCH_CHECK(logits.device().is_cpu() && logits.scalar_type() == at::kFloat && logits.dim() == 2 &&
                  logits.is_contiguous(),
              "focal kernel: logits must be a contiguous CPU float32 (N, K) tensor");
  const int64_t n = logits.size(0), k = logits.size(1);
  if (target.scalar_type() == at::kLong) {
    TORCH_CHECK(target.dim() == 1 && target.size(0) == n && target.is_contiguous(),
                "focal kernel: class-index targets must be a contiguous int64 (N,) tensor");
  } else {
    TORCH_CHECK(target.scalar_type() == at::kFloat && target.sizes() == logits.sizes() && target.is_contiguous(),
                "focal kernel: soft targets must be a contiguous float32 (N, K) tensor");
  }
  if (weight.defined() && weight.numel() > 0) {
    TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.is_contiguous() &&
                    (weight.numel() == n || weight.numel() == n * k),
                "focal kernel: weight must be a contiguous float32 tensor with N or N*K elements");
  }
  if (alpha_per_class.defined() && alpha_per_class.numel() > 0) {
    TORCH_CHECK(alpha_per_class.scalar_type() == at::kFloat && alpha_per_class.numel() == k &&
                    alpha_per_class.is_contiguous(),
                "focal kernel: per-class alpha must be a contiguous float32 tensor with K elements");
  }
}

Prepared prepare(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& weight,
                 const at::Tensor& alpha_per_class, double alpha, bool use_alpha, double gamma, double beta,
                 bool star) {
  check_inputs(logits, target, weight, alpha_per_class);
  TORCH_CHECK_VALUE(star ? gamma > 0.0 : gamma >= 0.0, "focal kernel: gamma must be ", star ? "> 0" : ">= 0");
  Prepared pr;
  const int64_t n = logits.size(0), k = logits.size(1);
  const int64_t padded = ((k + kLanes - 1) / kLanes) * kLanes;
  pr.alpha_pos.assign(padded, 0.f);
  pr.alpha_neg.assign(padded, 0.f);
  const bool per_class = alpha_per_class.defined() && alpha_per_class.numel() > 0;
  const float* apc = per_class ? alpha_per_class.data_ptr<float>() : nullptr;
  for (int64_t c = 0; c < k; ++c) {
    const float a = per_class ? apc[c] : static_cast<float>(alpha);
    pr.alpha_pos[c] = use_alpha ? a : 1.f;
    pr.alpha_neg[c] = use_alpha ? 1.f - a : 1.f;
  }
  Problem& pb = pr.pb;
  pb.x = logits.data_ptr<float>();
  const bool hard = target.scalar_type() == at::kLong;
  pb.labels = hard ? target.data_ptr<int64_t>() : nullptr;
  pb.targets = hard ? nullptr : target.data_ptr<float>();
  const bool has_weight = weight.defined() && weight.numel() > 0;
  pb.weight = has_weight ? weight.data_ptr<float>() : nullptr;
  pb.weight_mode = !has_weight ? WeightMode::kNone
                   : (weight.numel() == n && !(k == 1 && weight.dim() == 2)) ? WeightMode::kRow
                                                                              : WeightMode::kElement;
  pb.n = n;
  pb.k = k;
  pb.params = Params{pr.alpha_pos.data(), pr.alpha_neg.data(), static_cast<float>(gamma), static_cast<float>(beta),
                     static_cast<int>(gamma)};
  pr.modulation = modulation_for(gamma);
  pr.star = star;
  return pr;
}

template <typename F_, bool kHard_>
struct Kernel {
  using F = F_;
  static constexpr bool kHard = kHard_;
};

// Calls body(Kernel<F, kHard>{}) with the functor for this loss, modulation and target kind.
template <typename Body>
void dispatch(const Prepared& pr, Body&& body) {
  const bool hard = pr.pb.labels != nullptr;
  if (pr.star) {
    if (hard) body(Kernel<StarHard, true>{});
    else body(Kernel<StarSoft, false>{});
    return;
  }
  switch (pr.modulation) {
    case Modulation::kNone:
      if (hard) body(Kernel<FocalHard<Modulation::kNone>, true>{});
      else body(Kernel<FocalSoft<Modulation::kNone>, false>{});
      break;
    case Modulation::kSquare:
      if (hard) body(Kernel<FocalHard<Modulation::kSquare>, true>{});
      else body(Kernel<FocalSoft<Modulation::kSquare>, false>{});
      break;
    case Modulation::kInteger:
      if (hard) body(Kernel<FocalHard<Modulation::kInteger>, true>{});
      else body(Kernel<FocalSoft<Modulation::kInteger>, false>{});
      break;
    case Modulation::kGeneral:
      if (hard) body(Kernel<FocalHard<Modulation::kGeneral>, true>{});
      else body(Kernel<FocalSoft<Modulation::kGeneral>, false>{});
      break;
  }
}

// forward(...) -> the (N, K) weighted loss if reduce is false, else a 0-dim float64 tensor holding its sum.
at::Tensor forward(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& weight,
                   const at::Tensor& alpha_per_class, double alpha, bool use_alpha, double gamma, double beta,
                   bool star, bool reduce) {
  const Prepared pr = prepare(logits, target, weight, alpha_per_class, alpha, use_alpha, gamma, beta, star);
  if (reduce) {
    double total = 0.0;
    dispatch(pr, [&](auto kn) { total = loss_sum<typename decltype(kn)::F, decltype(kn)::kHard>(pr.pb); });
    return at::scalar_tensor(total, logits.options().dtype(at::kDouble));
  }
  at::Tensor out = empty_output(logits);
  float* out_ptr = out.data_ptr<float>();
  dispatch(pr, [&](auto kn) { loss_elements<typename decltype(kn)::F, decltype(kn)::kHard>(pr.pb, out_ptr); });
  return out;
}

// backward(...) -> d(loss)/d(logits) (N, K) float32: the element gradient times weight, times scale, times
// grad_output (an (N, K) float32 tensor for reduction "none", or empty for a reduced loss: then only scale).
at::Tensor backward(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& weight,
                    const at::Tensor& alpha_per_class, double alpha, bool use_alpha, double gamma, double beta,
                    bool star, const at::Tensor& grad_output, double scale) {
  const Prepared pr = prepare(logits, target, weight, alpha_per_class, alpha, use_alpha, gamma, beta, star);
  const bool has_go = grad_output.defined() && grad_output.numel() > 0;
  if (has_go) {
    TORCH_CHECK(grad_output.scalar_type() == at::kFloat && grad_output.sizes() == logits.sizes() &&
                    grad_output.is_contiguous(),
                "focal kernel: grad_output must be a contiguous float32 (N, K) tensor");
  }
  at::Tensor out = empty_output(logits);
  float* out_ptr = out.data_ptr<float>();
  const float* go = has_go ? grad_output.data_ptr<float>() : nullptr;
  dispatch(pr, [&](auto kn) {
    loss_grad<typename decltype(kn)::F, decltype(kn)::kHard>(pr.pb, go, static_cast<float>(scale), out_ptr);
  });
  return out;
}

std::string isa() {
#if defined(CPU_CAPABILITY_AVX512)
  return "avx512";
#elif defined(CPU_CAPABILITY_AVX2)
  return "avx2";
#else
  return "default";
#endif
}

std::string build_detail() {
  std::string detail = "at::vec " + isa() + " (" + std::to_string(kLanes) + " float lanes";
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  detail += ", FMA";
#endif
  detail += "), threads: " + std::to_string(at::get_num_threads());
#if defined(_OPENMP)
  detail += " (OpenMP)";
#endif
  return detail;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused CPU kernel for sigmoid Focal Loss (FL) and FL* (forward and closed-form backward).";
  m.def("forward", &forward, "Loss per element (reduce=False) or its float64 sum (reduce=True)",
        py::arg("logits"), py::arg("target"), py::arg("weight"), py::arg("alpha_per_class"), py::arg("alpha"),
        py::arg("use_alpha"), py::arg("gamma"), py::arg("beta"), py::arg("star"), py::arg("reduce"));
  m.def("backward", &backward, "Gradient w.r.t. the logits (closed form of appendix B)", py::arg("logits"),
        py::arg("target"), py::arg("weight"), py::arg("alpha_per_class"), py::arg("alpha"), py::arg("use_alpha"),
        py::arg("gamma"), py::arg("beta"), py::arg("star"), py::arg("grad_output"), py::arg("scale"));
  m.def("isa", &isa, "Instruction set the kernel was compiled for: avx512, avx2 or default");
  m.def("build_detail", &build_detail, "One line describing the build");
}
