// Fused CPU kernel for the sigmoid Focal Loss (FL) and FL* of Lin et al., "Focal Loss for Dense Object Detection".
//
// One pass over the (N, K) logits computes the loss (or only its sum), its gradient, or, for a reduced loss that
// autograd will differentiate, both at once, with the closed forms of the paper's appendix B. Everything is evaluated
// from the logit in log-space:
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
// Targets are either int64 class indices (N,) with background = K (the hot path: a background anchor's row, and every
// vector of a positive anchor's row but the one holding its class, is all y = 0 and needs no per-lane selects) or
// float (N, K) soft targets in [0, 1]. Weights are absent, per row (N,) or per element (N, K); an element with weight
// 0 yields exactly 0 loss and gradient, whatever its logit. Sums are accumulated per block of rows (fixed size,
// independent of the thread count) in double and added in block order, so they are deterministic.
//
// Built once per instruction set from this one file (setup.py), as ATen builds its own kernels: the portable at::vec
// code (module _focal_ext, every platform) and, on x86-64, AVX2 + FMA (_focal_ext_avx2, 8 float lanes) and AVX-512
// F/BW/VL/DQ (_focal_ext_avx512, 16 lanes); fltool_plugins.losses.functional imports the best one the CPU runs.
// Vectorised with at::vec::Vectorized<float>, in packs of independent vectors (see Pack), and threaded with
// at::parallel_for over blocks of rows. exp and log1p are short inline polynomials over the ranges needed here (~1-2
// ulp); Sleef (through at::vec) is only called for the rare soft-target, non-integer-gamma power. Where the ISA has
// them, the x86 builds use a few instructions at::vec does not expose: the reciprocal estimate (rcp14 / rcp) refined
// by one Newton step instead of a division, AVX-512 mask registers for per-lane selects, and vscalefps for 2^n.
// Outputs of 1 MiB or more come from a small pool of reused buffers (OutputPool), not fresh memory.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/scalar_tensor.h>
#include <c10/core/CPUAllocator.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 with at::Tensor conversion; lighter to compile than torch/extension.h

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

// The element formulas are many small functions; the compiler's inliner gives up on them part of the way down, and
// every call left spills the whole vector state. In the x86 builds they are forced inline. (The portable build's
// vectors are arrays whose every operation is a loop; forcing those inline made it slower.)
#if !defined(CPU_CAPABILITY_AVX512) && !defined(CPU_CAPABILITY_AVX2)
#define FL_INLINE inline
#define FL_INLINE_LAMBDA
#elif defined(_MSC_VER)
#define FL_INLINE __forceinline
#define FL_INLINE_LAMBDA
#else
#define FL_INLINE inline __attribute__((always_inline))
#define FL_INLINE_LAMBDA __attribute__((always_inline))
#endif

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();
constexpr int64_t kBlockRows = 64;       // rows per partial sum; fixed so that sums do not depend on the thread count
constexpr int64_t kTaskElements = 32768;  // about this many elements per parallel task (ATen's GRAIN_SIZE)

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
  float inv_gamma;  // 1 / gamma (FL*)
  float beta;
  int gamma_int;
};

// ---------------------------------------------------------------------------------------------------------------
// Lane groups. Each element needs an exp, a log1p and two reciprocals in one dependent chain of ~100 cycles per
// vector, more than the out-of-order core overlaps from one vector to the next. Pack<U> holds U vectors and issues
// every operation for all U before the next one, so U independent chains run side by side (on a Zen 5: the formulas
// alone ran 1.7x faster with U = 2; the whole kernel 5-10%). All element formulas below are written on packs.
// ---------------------------------------------------------------------------------------------------------------

// Per-lane conditions of one vector: AVX-512 keeps them in mask registers (one compare, one masked blend); at::vec's
// own compare and blendv would build an all-ones float vector and compare it again. Elsewhere at::vec's float masks.
#if defined(CPU_CAPABILITY_AVX512)
using Mask = __mmask16;
FL_INLINE Mask ge(const Vec& a, const Vec& b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
FL_INLINE Mask lt(const Vec& a, const Vec& b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
FL_INLINE Mask eq(const Vec& a, const Vec& b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
FL_INLINE Vec select(Mask m, const Vec& if_true, const Vec& if_false) {
  return _mm512_mask_blend_ps(m, if_false, if_true);
}
#else
using Mask = Vec;
FL_INLINE Mask ge(const Vec& a, const Vec& b) { return a >= b; }
FL_INLINE Mask lt(const Vec& a, const Vec& b) { return a < b; }
FL_INLINE Mask eq(const Vec& a, const Vec& b) { return a == b; }
FL_INLINE Vec select(const Mask& m, const Vec& if_true, const Vec& if_false) {
  return Vec::blendv(if_false, if_true, m);
}
#endif

// max(bound, v) that passes a NaN v through. The x86 max instruction returns its second operand when either is NaN,
// which gives that in one instruction; at::vec::maximum adds a NaN test (three instructions).
FL_INLINE Vec max_or_nan(const Vec& bound, const Vec& v) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_max_ps(bound, v);
#elif defined(CPU_CAPABILITY_AVX2)
  return _mm256_max_ps(bound, v);
#else
  return at::vec::maximum(v, bound);
#endif
}

// 1 / d for d in [1, 3] (the denominators 1 + e and 2 + e below). x86: the reciprocal estimate (rcp14: 14 bits, rcp:
// 12 bits) and one Newton step, r (2 - d r), to ~1 ulp (rcp14) or ~2 ulp (rcp); a division is a single slow unit
// (AVX-512 vdivps: 16 cycles latency, one per 8 cycles on Sapphire Rapids) and every element needs two.
FL_INLINE Vec reciprocal(const Vec& d) {
#if defined(CPU_CAPABILITY_AVX512)
  const Vec r(_mm512_rcp14_ps(d));
  return at::vec::fmadd(r, at::vec::fnmadd(d, r, Vec(1.f)), r);
#elif defined(CPU_CAPABILITY_AVX2)
  const Vec r(_mm256_rcp_ps(d));
  return at::vec::fmadd(r, at::vec::fnmadd(d, r, Vec(1.f)), r);
#else
  return Vec(1.f) / d;
#endif
}

// p 2^n for integral n in [-126, 0] (vscalefps on AVX-512, built in the exponent bits elsewhere).
FL_INLINE Vec times_pow2(const Vec& p, const Vec& n) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_scalef_ps(p, n);
#else
  const auto biased = at::vec::convert_to_int_of_same_size<float>(n) + at::vec::Vectorized<int32_t>(127);
  return p * at::vec::cast<float>(biased << at::vec::Vectorized<int32_t>(23));
#endif
}

template <int U>
struct Pack {
  static constexpr int kVectors = U;
  Vec v[U];

  Pack() = default;
  FL_INLINE explicit Pack(float s) {
    for (int i = 0; i < U; ++i) v[i] = Vec(s);
  }
  FL_INLINE static Pack loadu(const float* ptr) {  // U whole vectors
    Pack r;
    for (int i = 0; i < U; ++i) r.v[i] = Vec::loadu(ptr + i * kLanes);
    return r;
  }
  static Pack loadu(const float* ptr, int64_t count) {  // the first count lanes (U = 1: a row's tail)
    static_assert(U == 1, "partial loads are for single vectors");
    Pack r;
    r.v[0] = Vec::loadu(ptr, count);
    return r;
  }
  FL_INLINE void store(float* ptr, int64_t count = U * kLanes) const {
    for (int i = 0; i < U; ++i) {
      if (count >= (i + 1) * kLanes) v[i].store(ptr + i * kLanes);
      else if (count > i * kLanes) v[i].store(ptr + i * kLanes, count - i * kLanes);
    }
  }
  FL_INLINE Vec sum() const {  // the U vectors added in a fixed order
    Vec s = v[0];
    for (int i = 1; i < U; ++i) s = s + v[i];
    return s;
  }
  template <typename Fn>
  FL_INLINE Pack map(Fn fn) const {
    Pack r;
    for (int i = 0; i < U; ++i) r.v[i] = fn(v[i]);
    return r;
  }
  FL_INLINE Pack neg() const { return map([](const Vec& a) FL_INLINE_LAMBDA { return a.neg(); }); }
  FL_INLINE Pack abs() const { return map([](const Vec& a) FL_INLINE_LAMBDA { return a.abs(); }); }
  FL_INLINE Pack round() const { return map([](const Vec& a) FL_INLINE_LAMBDA { return a.round(); }); }
};

template <int U>
struct MaskPack {
  Mask m[U];
};

template <int U, typename Fn>
FL_INLINE Pack<U> zip(Fn fn, const Pack<U>& a, const Pack<U>& b) {
  Pack<U> r;
  for (int i = 0; i < U; ++i) r.v[i] = fn(a.v[i], b.v[i]);
  return r;
}
template <int U, typename Fn>
FL_INLINE Pack<U> zip(Fn fn, const Pack<U>& a, const Pack<U>& b, const Pack<U>& c) {
  Pack<U> r;
  for (int i = 0; i < U; ++i) r.v[i] = fn(a.v[i], b.v[i], c.v[i]);
  return r;
}
template <int U, typename Fn>
FL_INLINE MaskPack<U> compare(Fn fn, const Pack<U>& a, const Pack<U>& b) {
  MaskPack<U> r;
  for (int i = 0; i < U; ++i) r.m[i] = fn(a.v[i], b.v[i]);
  return r;
}

template <int U>
FL_INLINE Pack<U> operator+(const Pack<U>& a, const Pack<U>& b) {
  return zip([](const Vec& x, const Vec& y) FL_INLINE_LAMBDA { return x + y; }, a, b);
}
template <int U>
FL_INLINE Pack<U> operator-(const Pack<U>& a, const Pack<U>& b) {
  return zip([](const Vec& x, const Vec& y) FL_INLINE_LAMBDA { return x - y; }, a, b);
}
template <int U>
FL_INLINE Pack<U> operator*(const Pack<U>& a, const Pack<U>& b) {
  return zip([](const Vec& x, const Vec& y) FL_INLINE_LAMBDA { return x * y; }, a, b);
}
template <int U>
FL_INLINE Pack<U> operator/(const Pack<U>& a, const Pack<U>& b) {
  return zip([](const Vec& x, const Vec& y) FL_INLINE_LAMBDA { return x / y; }, a, b);
}
template <int U>
FL_INLINE Pack<U> fmadd(const Pack<U>& a, const Pack<U>& b, const Pack<U>& c) {  // a b + c
  return zip([](const Vec& x, const Vec& y, const Vec& z) FL_INLINE_LAMBDA { return at::vec::fmadd(x, y, z); }, a, b,
             c);
}
template <int U>
FL_INLINE Pack<U> max_or_nan(const Pack<U>& bound, const Pack<U>& v) {
  return zip([](const Vec& x, const Vec& y) FL_INLINE_LAMBDA { return max_or_nan(x, y); }, bound, v);
}
template <int U>
FL_INLINE Pack<U> vmax0(const Pack<U>& v) { return max_or_nan(Pack<U>(0.f), v); }
template <int U>
FL_INLINE Pack<U> maximum(const Pack<U>& a, const Pack<U>& b) {
  return zip([](const Vec& x, const Vec& y) FL_INLINE_LAMBDA { return at::vec::maximum(x, y); }, a, b);
}
template <int U>
FL_INLINE Pack<U> reciprocal(const Pack<U>& d) {
  return d.map([](const Vec& x) FL_INLINE_LAMBDA { return reciprocal(x); });
}
template <int U>
FL_INLINE Pack<U> times_pow2(const Pack<U>& p, const Pack<U>& n) {
  return zip([](const Vec& x, const Vec& y) FL_INLINE_LAMBDA { return times_pow2(x, y); }, p, n);
}
template <int U>
FL_INLINE Pack<U> pow(const Pack<U>& a, float b) {
  return a.map([b](const Vec& x) FL_INLINE_LAMBDA { return x.pow(Vec(b)); });
}
template <int U>
FL_INLINE MaskPack<U> ge(const Pack<U>& a, const Pack<U>& b) {
  return compare([](const Vec& x, const Vec& y) FL_INLINE_LAMBDA { return ge(x, y); }, a, b);
}
template <int U>
FL_INLINE MaskPack<U> lt(const Pack<U>& a, const Pack<U>& b) {
  return compare([](const Vec& x, const Vec& y) FL_INLINE_LAMBDA { return lt(x, y); }, a, b);
}
template <int U>
FL_INLINE MaskPack<U> eq(const Pack<U>& a, const Pack<U>& b) {
  return compare([](const Vec& x, const Vec& y) FL_INLINE_LAMBDA { return eq(x, y); }, a, b);
}
template <int U>
FL_INLINE Pack<U> select(const MaskPack<U>& m, const Pack<U>& if_true, const Pack<U>& if_false) {
  Pack<U> r;
  for (int i = 0; i < U; ++i) r.v[i] = select(m.m[i], if_true.v[i], if_false.v[i]);
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// The two transcendental functions every element needs, inlined (a call into Sleef spills every live vector register,
// and the arguments here are range-limited, so short polynomials suffice). Both are accurate to ~1-2 ulp.
// ---------------------------------------------------------------------------------------------------------------

// exp(u) for u <= 0 (here u = -|x_t|): u = n ln2 + r, |r| <= ln2 / 2, exp(r) by the Cephes expf polynomial, times
// 2^n. Results below FLT_MIN (u < -87.3) are flushed to 0; a NaN stays NaN.
template <int U>
FL_INLINE Pack<U> exp_nonpositive(const Pack<U>& u) {
  using P = Pack<U>;
  const P lowest(-87.3f);
  const P uc = max_or_nan(lowest, u);
  const P n = (uc * P(1.44269504088896341f)).round();  // in [-126, 0]
  P r = fmadd(n, P(-0.693359375f), uc);                  // Cody-Waite: ln2 = hi + lo
  r = fmadd(n, P(2.12194440e-4f), r);
  P p = fmadd(P(1.9875691500e-4f), r, P(1.3981999507e-3f));
  p = fmadd(p, r, P(8.3334519073e-3f));
  p = fmadd(p, r, P(4.1665795894e-2f));
  p = fmadd(p, r, P(1.6666665459e-1f));
  p = fmadd(p, r, P(5.0000001201e-1f));
  p = fmadd(p, r * r, r + P(1.f));
  return select(lt(u, lowest), P(0.f), times_pow2(p, n));
}

// log1p(e) for e in [0, 1]: log(1 + e) = 2 atanh(s) with s = e / (2 + e) in [0, 1/3], atanh(s) / s as a polynomial
// of degree 4 in w = s^2 (a least-squares fit on [0, 1/9], relative error 4.5e-9, below the 1.5e-8 of the Taylor
// series to s^13 with two fewer terms). Keeps full relative precision for tiny e.
template <int U>
FL_INLINE Pack<U> log1p_from_s(const Pack<U>& s) {
  using P = Pack<U>;
  const P w = s * s;
  P p = fmadd(P(0.14007732f), w, P(0.14000392f));
  p = fmadd(p, w, P(0.20010811f));
  p = fmadd(p, w, P(0.33333206f));
  p = fmadd(p, w * (s + s), s + s);
  return p;
}

// For v: e = exp(-|v|), inv = 1 / (1 + e) (the sigmoid of |v|) and l = log1p(e). Whatever a caller leaves unused
// (the loss alone needs no inv for gamma = 0) is removed by the compiler.
template <int U>
struct SigmoidParts {
  Pack<U> e, inv, l;
};
template <int U>
FL_INLINE SigmoidParts<U> sigmoid_parts(const Pack<U>& v) {
  using P = Pack<U>;
  const P e = exp_nonpositive(v.abs().neg());
  return {e, reciprocal(P(1.f) + e), log1p_from_s(e * reciprocal(P(2.f) + e))};
}

// ---------------------------------------------------------------------------------------------------------------
// Element formulas: eval(x, target, alpha_pos, alpha_neg, params) -> {loss, gradient} for one pack of lanes,
// unweighted. Both come from the same intermediate values; a driver that needs one gets the other removed by the
// compiler. For class-index targets the target is a lane mask (set where the column is the anchor's class);
// kAllNeg says at compile time that no lane is (y = 0 everywhere: x_t = -x, alpha_t = -s alpha_t = alpha_neg).
// ---------------------------------------------------------------------------------------------------------------

template <int U>
struct LossGrad {
  Pack<U> loss, grad;
};

// x_t, alpha_t and -s alpha_t for class-index targets.
template <bool kAllNeg, int U>
FL_INLINE void signed_terms(const Pack<U>& x, const MaskPack<U>& pos, const Pack<U>& ap, const Pack<U>& an,
                         Pack<U>& xt, Pack<U>& at, Pack<U>& minus_s_at) {
  if constexpr (kAllNeg) {
    xt = x.neg();
    at = an;
    minus_s_at = an;
  } else {
    xt = select(pos, x, x.neg());
    at = select(pos, ap, an);
    minus_s_at = select(pos, ap.neg(), an);
  }
}

template <Modulation M, int U>
FL_INLINE Pack<U> integer_power(const Pack<U>& q, const Params& p) {
  if constexpr (M == Modulation::kNone) {
    return Pack<U>(1.f);
  } else if constexpr (M == Modulation::kSquare) {
    return q * q;
  } else {
    Pack<U> m = q;
    for (int i = 1; i < p.gamma_int; ++i) m = m * q;
    return m;
  }
}

template <Modulation M>
struct FocalHard {
  template <bool kAllNeg, int U>
  static FL_INLINE LossGrad<U> eval(const Pack<U>& x, const MaskPack<U>& pos, const Pack<U>& ap, const Pack<U>& an,
                                 const Params& p) {
    using P = Pack<U>;
    P xt, at, minus_s_at;
    signed_terms<kAllNeg>(x, pos, ap, an, xt, at, minus_s_at);
    const SigmoidParts<U> sg = sigmoid_parts(xt);
    const MaskPack<U> nonneg = ge(xt, P(0.f));
    const P e_inv = sg.e * sg.inv;
    const P q = select(nonneg, e_inv, sg.inv);   // 1 - p_t = sigmoid(-x_t)
    const P pt = select(nonneg, sg.inv, e_inv);  // p_t
    const P ce = vmax0(xt.neg()) + sg.l;         // -log p_t
    // (1 - p_t)^gamma: from q for gamma 0, 2 or a small integer, else exp(-gamma softplus(x_t))
    P mod;
    if constexpr (M == Modulation::kGeneral) mod = exp_nonpositive((vmax0(xt) + sg.l) * P(-p.gamma));
    else mod = integer_power<M>(q, p);
    LossGrad<U> r;
    r.loss = at * ce * mod;
    if constexpr (M == Modulation::kNone) {
      r.grad = minus_s_at * q;  // dCE/dx = s (p_t - 1)
    } else {
      r.grad = minus_s_at * mod * fmadd(P(p.gamma) * pt, ce, q);
    }
    return r;
  }
};

struct StarHard {
  template <bool kAllNeg, int U>
  static FL_INLINE LossGrad<U> eval(const Pack<U>& x, const MaskPack<U>& pos, const Pack<U>& ap, const Pack<U>& an,
                                 const Params& p) {
    using P = Pack<U>;
    P xt, at, minus_s_at;
    signed_terms<kAllNeg>(x, pos, ap, an, xt, at, minus_s_at);
    const P z = fmadd(P(p.gamma), xt, P(p.beta));
    const SigmoidParts<U> sg = sigmoid_parts(z);
    LossGrad<U> r;
    r.loss = at * (vmax0(z.neg()) + sg.l) * P(p.inv_gamma);                 // softplus(-z) = -log p*_t
    r.grad = minus_s_at * select(ge(z, P(0.f)), sg.e * sg.inv, sg.inv);    // 1 - p*_t = sigmoid(-z)
    return r;
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
  template <bool kAllNeg, int U>  // kAllNeg: no compile-time knowledge for soft targets
  static FL_INLINE LossGrad<U> eval(const Pack<U>& x, const Pack<U>& y, const Pack<U>& ap, const Pack<U>& an,
                                 const Params& p) {
    using P = Pack<U>;
    const P one(1.f);
    const SigmoidParts<U> sg = sigmoid_parts(x);
    const P ybar = one - y;
    const P ce = fmadd(y, vmax0(x.neg()) + sg.l, ybar * (vmax0(x) + sg.l));
    const MaskPack<U> nonneg = ge(x, P(0.f));
    const P e_inv = sg.e * sg.inv;
    const P prob = select(nonneg, sg.inv, e_inv);  // p
    const P pbar = select(nonneg, e_inv, sg.inv);  // 1 - p
    const P q = fmadd(prob, ybar, pbar * y);
    const P at = fmadd(ap, y, an * ybar);
    P mod;
    if constexpr (M == Modulation::kGeneral) mod = pow(q, p.gamma);
    else mod = integer_power<M>(q, p);
    LossGrad<U> r;
    r.loss = at * ce * mod;
    const P p_minus_y = prob - y;
    if constexpr (M == Modulation::kNone) {
      r.grad = at * p_minus_y;
    } else {
      const P ratio = prob * pbar / maximum(q, P(FLT_MIN));
      const P one_minus_2y = one - y - y;
      r.grad = at * mod * fmadd(P(p.gamma) * ratio * one_minus_2y, ce, p_minus_y);
    }
    return r;
  }
};

// FL* for soft targets: the expectation over a Bernoulli(y) target, y L(s = +1) + (1 - y) L(s = -1).
struct StarSoft {
  template <bool kAllNeg, int U>
  static FL_INLINE LossGrad<U> eval(const Pack<U>& x, const Pack<U>& y, const Pack<U>& ap, const Pack<U>& an,
                                 const Params& p) {
    using P = Pack<U>;
    const P gx = P(p.gamma) * x;
    const P z_pos = gx + P(p.beta);  // s = +1
    const P z_neg = P(p.beta) - gx;  // s = -1
    const SigmoidParts<U> sp = sigmoid_parts(z_pos), sn = sigmoid_parts(z_neg);
    const P wp = ap * y, wn = an * (P(1.f) - y);
    LossGrad<U> r;
    r.loss = (wp * (vmax0(z_pos.neg()) + sp.l) + wn * (vmax0(z_neg.neg()) + sn.l)) * P(p.inv_gamma);
    const P sig_neg_pos = select(ge(z_pos, P(0.f)), sp.e * sp.inv, sp.inv);  // sigmoid(-z_pos)
    const P sig_neg_neg = select(ge(z_neg, P(0.f)), sn.e * sn.inv, sn.inv);  // sigmoid(-z_neg)
    r.grad = wn * sig_neg_neg - wp * sig_neg_pos;
    return r;
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Drivers: loop over rows and column packs, apply weights, tails, reduction.
// ---------------------------------------------------------------------------------------------------------------

// Vectors per pack on the hot path: two independent chains gained 5-10% on a Zen 5 (AVX-512 and AVX2); more run out
// of registers and lose. The portable build's vectors are arrays in memory, for which packs gain nothing.
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
constexpr int kPack = 2;
#else
constexpr int kPack = 1;
#endif

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

template <int U, bool kFull>
FL_INLINE Pack<U> load(const float* ptr, int64_t count) {
  if constexpr (kFull) return Pack<U>::loadu(ptr);
  else return Pack<U>::loadu(ptr, count);
}

// U column vectors of row i from column k0 (kFull: all U * kLanes lanes are columns; else U = 1 and the first count
// are): loads, the element formulas, the element weight, zeroed loss lanes past the tail.
template <typename F, bool kHard, int U, bool kFull, bool kAllNeg>
FL_INLINE LossGrad<U> column_pack(const Problem& pb, const float* xr, const float* yr, const float* wr,
                                  int64_t label, int64_t k0, int64_t count) {
  using P = Pack<U>;
  const P x = load<U, kFull>(xr + k0, count);
  const P ap = P::loadu(pb.params.alpha_pos + k0);  // padded to whole vectors
  const P an = P::loadu(pb.params.alpha_neg + k0);
  LossGrad<U> v;
  if constexpr (kHard) {
    MaskPack<U> pos;  // y = 1 in the anchor's class column (column indices are exact in float for K < 2^24)
    for (int j = 0; j < U; ++j) {
      pos.m[j] = eq(Vec::arange(static_cast<float>(k0 + j * kLanes), 1.f), Vec(static_cast<float>(label)));
    }
    v = F::template eval<kAllNeg>(x, pos, ap, an, pb.params);
  } else {
    const P y = load<U, kFull>(yr + k0, count);
    v = F::template eval<false>(x, y, ap, an, pb.params);
  }
  if (wr != nullptr) {
    const P w = load<U, kFull>(wr + k0, count);
    const MaskPack<U> ignored = eq(w, P(0.f));  // weight 0: exactly 0, even for a non-finite value
    v.loss = select(ignored, P(0.f), w * v.loss);
    v.grad = select(ignored, P(0.f), w * v.grad);
  }
  if constexpr (!kFull) v.loss.v[0] = Vec::set(Vec(0.f), v.loss.v[0], count);
  return v;
}

// Row kernel: calls fn(k0, count, value) for each pack of column vectors of row i, value = {element loss, gradient}
// times the element weight (loss lanes past the last column are 0): packs of kPack vectors, then single vectors, then
// the tail. For class-index targets only the pack holding the anchor's class (none for background) takes the
// per-lane path.
template <typename F, bool kHard, typename Fn>
FL_INLINE void for_row(const Problem& pb, int64_t i, const Fn& fn) {
  const int64_t k = pb.k;
  const float* xr = pb.x + i * k;
  const float* yr = kHard ? nullptr : pb.targets + i * k;
  const float* wr = pb.weight_mode == WeightMode::kElement ? pb.weight + i * k : nullptr;
  const int64_t label = kHard ? pb.labels[i] : -1;
  auto step = [&](auto u, auto full, int64_t k0, int64_t count) FL_INLINE_LAMBDA {
    constexpr int U = decltype(u)::value;
    constexpr bool kFull = decltype(full)::value;
    if (kHard && label >= k0 && label < k0 + count) {
      fn(k0, count, column_pack<F, kHard, U, kFull, false>(pb, xr, yr, wr, label, k0, count));
    } else {
      fn(k0, count, column_pack<F, kHard, U, kFull, kHard>(pb, xr, yr, wr, label, k0, count));
    }
  };
  using Whole = std::integral_constant<bool, true>;
  int64_t k0 = 0;
  for (; k0 + kPack * kLanes <= k; k0 += kPack * kLanes) {
    step(std::integral_constant<int, kPack>{}, Whole{}, k0, kPack * kLanes);
  }
  for (; k0 + kLanes <= k; k0 += kLanes) step(std::integral_constant<int, 1>{}, Whole{}, k0, kLanes);
  if (k0 < k) step(std::integral_constant<int, 1>{}, std::integral_constant<bool, false>{}, k0, k - k0);
}

// The lanes of v added up (in a fixed order: sums do not depend on the thread count). The portable build's
// reduce_add does not compile in this ATen.
FL_INLINE float lane_sum(const Vec& v) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  return v.reduce_add();
#else
  float lanes[kLanes];
  v.store(lanes);
  float total = 0.f;
  for (int64_t i = 0; i < kLanes; ++i) total += lanes[i];
  return total;
#endif
}

FL_INLINE float row_weight(const Problem& pb, int64_t i) {
  return pb.weight_mode == WeightMode::kRow ? pb.weight[i] : 1.f;
}

// Calls block_fn(b) for every block of kBlockRows rows, about kTaskElements elements per task, over the threads. (A
// busy machine delays the call until every thread has had a core, whatever the split: OpenMP joins them at the end.
// Dealing blocks out from a shared counter instead of splitting them evenly measured no different.)
template <typename Fn>
void for_blocks(const Problem& pb, const Fn& block_fn) {
  const int64_t blocks = (pb.n + kBlockRows - 1) / kBlockRows;
  const int64_t per_task = std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, kBlockRows * pb.k));
  at::parallel_for(0, blocks, per_task, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) block_fn(b);
  });
}

inline int64_t block_end(const Problem& pb, int64_t b) { return std::min(pb.n, (b + 1) * kBlockRows); }

// Sum of the weighted loss; with grad_out, also its gradient times scale, from the same pass.
template <typename F, bool kHard>
double loss_sum(const Problem& pb, float scale = 1.f, float* grad_out = nullptr) {
  const int64_t blocks = (pb.n + kBlockRows - 1) / kBlockRows;
  std::vector<double> partial(blocks, 0.0);
  for_blocks(pb, [&](int64_t b) {
    double block_sum = 0.0;
    for (int64_t i = b * kBlockRows; i < block_end(pb, b); ++i) {
      const float w = row_weight(pb, i);
      float* gr = grad_out != nullptr ? grad_out + i * pb.k : nullptr;
      if (w == 0.f) {  // ignored anchor
        if (gr != nullptr) std::fill(gr, gr + pb.k, 0.f);
        continue;
      }
      Vec acc(0.f);
      if (gr != nullptr) {
        const float wg = w * scale;
        for_row<F, kHard>(pb, i, [&](int64_t k0, int64_t count, const auto& v) FL_INLINE_LAMBDA {
          acc = acc + v.loss.sum();
          (v.grad * std::decay_t<decltype(v.grad)>(wg)).store(gr + k0, count);
        });
      } else {
        for_row<F, kHard>(pb, i, [&](int64_t, int64_t, const auto& v) FL_INLINE_LAMBDA { acc = acc + v.loss.sum(); });
      }
      block_sum += static_cast<double>(w) * static_cast<double>(lane_sum(acc));
    }
    partial[b] = block_sum;
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

template <typename F, bool kHard>
void loss_elements(const Problem& pb, float* out) {
  for_blocks(pb, [&](int64_t b) {
    for (int64_t i = b * kBlockRows; i < block_end(pb, b); ++i) {
      float* outr = out + i * pb.k;
      const float w = row_weight(pb, i);
      if (w == 0.f) {
        std::fill(outr, outr + pb.k, 0.f);
        continue;
      }
      for_row<F, kHard>(pb, i, [&](int64_t k0, int64_t count, const auto& v) FL_INLINE_LAMBDA {
        (v.loss * std::decay_t<decltype(v.loss)>(w)).store(outr + k0, count);
      });
    }
  });
}

// grad = d(element loss)/dx * weight * scale * (grad_output element, if any).
template <typename F, bool kHard>
void loss_grad(const Problem& pb, const float* grad_output, float scale, float* out) {
  for_blocks(pb, [&](int64_t b) {
    for (int64_t i = b * kBlockRows; i < block_end(pb, b); ++i) {
      float* outr = out + i * pb.k;
      if (row_weight(pb, i) == 0.f) {
        std::fill(outr, outr + pb.k, 0.f);
        continue;
      }
      const float wg = row_weight(pb, i) * scale;
      const float* gr = grad_output != nullptr ? grad_output + i * pb.k : nullptr;
      for_row<F, kHard>(pb, i, [&](int64_t k0, int64_t count, const auto& v) FL_INLINE_LAMBDA {
        using P = std::decay_t<decltype(v.grad)>;
        P g = v.grad * P(wg);
        if (gr != nullptr) {
          P go;
          for (int j = 0; j < P::kVectors; ++j) {
            const int64_t left = count - j * kLanes;
            go.v[j] = left >= kLanes ? Vec::loadu(gr + k0 + j * kLanes) : Vec::loadu(gr + k0 + j * kLanes, left);
          }
          g = g * go;
        }
        g.store(outr + k0, count);
      });
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Output buffers.
// ---------------------------------------------------------------------------------------------------------------

// A large (N, K) output is fresh memory every time: the C library maps it anew and unmaps it when it is freed, so each
// first touch takes a page fault and a zeroed page (120,000 x 80: 8.3 ms on a 2-core Sapphire Rapids, about as long
// as computing the gradient). Large outputs therefore come from a small pool: a block returns to the pool when the last
// tensor using it is freed (its deleter), and the next output that fits reuses it, already mapped. The pool holds no
// reference to a block in use, so autograd still moves a gradient into .grad without copying it. Blocks come from
// c10's CPU allocator (memory profilers see them) with transparent huge pages requested on their 2 MiB-aligned
// interior; at most kFreeBlocks free blocks are kept.
class OutputPool {
 public:
  static OutputPool& get() {
    static OutputPool* pool = new OutputPool();  // never destroyed: a tensor's deleter may run at interpreter exit
    return *pool;
  }

  at::Tensor empty(int64_t n, int64_t k) {
    const auto options = at::TensorOptions().dtype(at::kFloat);
    const size_t bytes = static_cast<size_t>(n) * static_cast<size_t>(k) * sizeof(float);
    if (bytes < kMinBytes) return at::empty({n, k}, options);
    void* data = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto best = free_.end();  // the smallest free block that fits
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->bytes >= bytes && (best == free_.end() || it->bytes < best->bytes)) best = it;
      }
      if (best != free_.end()) {
        data = best->ptr.get();
        in_use_.emplace(data, std::move(*best));
        free_.erase(best);
      }
    }
    if (data == nullptr) {
      Block block{c10::GetCPUAllocator()->allocate(bytes), bytes};
      data = block.ptr.get();
      advise_huge_pages(data, bytes);
      std::lock_guard<std::mutex> lock(mu_);
      in_use_.emplace(data, std::move(block));
    }
    return at::from_blob(data, {n, k}, [](void* ptr) { OutputPool::get().give_back(ptr); }, options);
  }

  int64_t free_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t total = 0;
    for (const Block& block : free_) total += static_cast<int64_t>(block.bytes);
    return total;
  }

  void release() {
    std::vector<Block> dropped;
    std::lock_guard<std::mutex> lock(mu_);
    dropped.swap(free_);
  }

 private:
  static constexpr size_t kMinBytes = size_t{1} << 20;  // smaller ones come from the C library's heap, already mapped
  static constexpr size_t kFreeBlocks = 2;

  struct Block {
    c10::DataPtr ptr;
    size_t bytes;
  };

  void give_back(void* data) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = in_use_.find(data);
    if (it == in_use_.end()) return;
    free_.push_back(std::move(it->second));
    in_use_.erase(it);
    if (free_.size() > kFreeBlocks) {  // drop the smallest
      auto smallest = std::min_element(free_.begin(), free_.end(),
                                       [](const Block& a, const Block& b) { return a.bytes < b.bytes; });
      free_.erase(smallest);
    }
  }

  static void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr uintptr_t kHuge = uintptr_t{1} << 21;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
    const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t last = (begin + bytes) & ~(kHuge - 1);
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // a hint only
#else
    (void)data;
    (void)bytes;
#endif
  }

  std::mutex mu_;
  std::vector<Block> free_;
  std::unordered_map<void*, Block> in_use_;
};

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
  pb.params = Params{pr.alpha_pos.data(), pr.alpha_neg.data(), static_cast<float>(gamma),
                     gamma > 0.0 ? static_cast<float>(1.0 / gamma) : 0.f, static_cast<float>(beta),
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
  at::Tensor out = OutputPool::get().empty(pr.pb.n, pr.pb.k);
  float* out_ptr = out.data_ptr<float>();
  dispatch(pr, [&](auto kn) { loss_elements<typename decltype(kn)::F, decltype(kn)::kHard>(pr.pb, out_ptr); });
  return out;
}

// forward_backward(...) -> (the sum of the weighted loss as a 0-dim float64 tensor, its gradient w.r.t. the logits
// times scale, (N, K) float32), from one pass: for a reduced loss whose backward will follow, the two share every
// exp, log and reciprocal, and the logits are read once.
std::tuple<at::Tensor, at::Tensor> forward_backward(const at::Tensor& logits, const at::Tensor& target,
                                                    const at::Tensor& weight, const at::Tensor& alpha_per_class,
                                                    double alpha, bool use_alpha, double gamma, double beta,
                                                    bool star, double scale) {
  const Prepared pr = prepare(logits, target, weight, alpha_per_class, alpha, use_alpha, gamma, beta, star);
  at::Tensor grad = OutputPool::get().empty(pr.pb.n, pr.pb.k);
  float* grad_ptr = grad.data_ptr<float>();
  double total = 0.0;
  dispatch(pr, [&](auto kn) {
    total = loss_sum<typename decltype(kn)::F, decltype(kn)::kHard>(pr.pb, static_cast<float>(scale), grad_ptr);
  });
  return {at::scalar_tensor(total, logits.options().dtype(at::kDouble)), grad};
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
  at::Tensor out = OutputPool::get().empty(pr.pb.n, pr.pb.k);
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
  std::string detail = "at::vec " + isa() + ", " + std::to_string(kLanes) + " float lanes";
#if defined(CPU_CAPABILITY_AVX512)
  detail += " (FMA, rcp14, mask registers)";
#elif defined(CPU_CAPABILITY_AVX2)
  detail += " (FMA, rcp)";
#endif
  detail += ", threads: " + std::to_string(at::get_num_threads());
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
  m.def("forward_backward", &forward_backward,
        "(float64 sum of the loss, its gradient w.r.t. the logits times scale) from one pass",
        py::arg("logits"), py::arg("target"), py::arg("weight"), py::arg("alpha_per_class"), py::arg("alpha"),
        py::arg("use_alpha"), py::arg("gamma"), py::arg("beta"), py::arg("star"), py::arg("scale"));
  m.def("backward", &backward, "Gradient w.r.t. the logits (closed form of appendix B)", py::arg("logits"),
        py::arg("target"), py::arg("weight"), py::arg("alpha_per_class"), py::arg("alpha"), py::arg("use_alpha"),
        py::arg("gamma"), py::arg("beta"), py::arg("star"), py::arg("grad_output"), py::arg("scale"));
  m.def("isa", &isa, "Instruction set the kernel was compiled for: avx512, avx2 or default");
  m.def("build_detail", &build_detail, "One line describing the build");
  m.def("pool_free_bytes", [] { return OutputPool::get().free_bytes(); },
        "Bytes of output memory the kernel keeps for reuse (freed outputs of 1 MiB or more)");
  m.def("release_pool", [] { OutputPool::get().release(); }, "Free the output memory kept for reuse");
}
