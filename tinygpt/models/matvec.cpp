// Matrix-vector products for decoding: y (M, N) = x (M, K) · W (N, K)ᵀ for a few rows M, reading each weight
// once for every 4 rows. Built by matvec.py with torch.utils.cpp_extension (as the operator torch.ops.tinygpt.matvec); matvec.py's matvec_reference is the same
// product written with PyTorch ops, and the tests check the two agree.
//
// Decoding one token multiplies a handful of activation rows by every weight matrix, so the time goes into
// reading the weights from memory. The loop below streams each weight row once, multiplies it by every input
// row while it is in registers, and shares the weight rows out among PyTorch's threads. Weights may be fp32,
// bf16 (the top half of an fp32) or int8 with one fp32 scale per output row; the sums are fp32, kept in
// several vector registers side by side so that no addition waits for the one before it. The vector
// operations are AVX-512 or AVX2 with FMA where the compiler targets them (it compiles for the machine at
// hand), else plain floats.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// ---- the vector operations: AVX-512, AVX2 + FMA, or plain floats ----
#if defined(__AVX512F__)
#include <immintrin.h>
using vec = __m512;
constexpr int64_t V = 16;
inline vec zero() { return _mm512_setzero_ps(); }
inline vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
inline vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
inline float total(vec v) { return _mm512_reduce_add_ps(v); }
inline vec load(const float* p) { return _mm512_loadu_ps(p); }
inline vec load(const uint16_t* p) {  // bf16: the top half of an fp32
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline vec load(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
using vec = __m256;
constexpr int64_t V = 8;
inline vec zero() { return _mm256_setzero_ps(); }
inline vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
inline vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
inline float total(vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}
inline vec load(const float* p) { return _mm256_loadu_ps(p); }
inline vec load(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline vec load(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
#else
using vec = float;
constexpr int64_t V = 1;
inline vec zero() { return 0.0f; }
inline vec fma(vec a, vec b, vec c) { return a * b + c; }
inline vec add(vec a, vec b) { return a + b; }
inline float total(vec v) { return v; }
inline vec load(const float* p) { return *p; }
inline vec load(const uint16_t* p) {
  uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline vec load(const int8_t* p) { return static_cast<float>(*p); }
#endif

// One output row n for M input rows: U vectors of weights per step, each multiplied into M running sums.
template <typename W, int M, int U>
inline void dot_rows(const float* x, const W* row, int64_t K, float* out) {
  vec sums[M][U];
  for (int m = 0; m < M; m++)
    for (int u = 0; u < U; u++) sums[m][u] = zero();
  int64_t k = 0;
  for (; k + U * V <= K; k += U * V) {
    for (int u = 0; u < U; u++) {
      vec w = load(row + k + u * V);
      for (int m = 0; m < M; m++) sums[m][u] = fma(w, load(x + m * K + k + u * V), sums[m][u]);
    }
  }
  for (; k < K; k += V) {  // the tail: K is a multiple of V
    vec w = load(row + k);
    for (int m = 0; m < M; m++) sums[m][0] = fma(w, load(x + m * K + k), sums[m][0]);
  }
  for (int m = 0; m < M; m++) {
    vec s = sums[m][0];
    for (int u = 1; u < U; u++) s = add(s, sums[m][u]);
    out[m] = total(s);
  }
}

// ---- int8 weights as integer products, where the CPU has them (AVX-512BW or AVX2) ----
// Converting every int8 weight to fp32 costs more than reading it. Instead, each input row is rounded to 16-bit
// integers (x ≈ xs · q, xs = max|x| / 32767: a relative 2^-16 of the row's largest value, far below int8's
// own rounding of the weights), and the weights are multiplied as integers: one instruction multiplies pairs
// and adds them (vpmaddwd), summed exactly in int32, then in fp32 every BLOCK weights (so no int32 overflows: a
// lane adds at most BLOCK / 64 pair sums of at most 2 · 127 · 32767 in a block, under 2^29).
#if defined(__AVX512BW__) || (defined(__AVX2__) && !defined(__AVX512F__))
#define TINYGPT_INT_DOT 1
constexpr int64_t BLOCK = 2048;
#if defined(__AVX512BW__)
using ivec = __m512i;
constexpr int64_t IV = 32;  // int8 weights per integer step
inline ivec izero() { return _mm512_setzero_si512(); }
inline ivec iload_w(const int8_t* p) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline ivec iload_x(const int16_t* p) { return _mm512_loadu_si512(p); }
inline ivec imadd(ivec w, ivec x, ivec acc) { return _mm512_add_epi32(acc, _mm512_madd_epi16(w, x)); }
inline vec to_vec(ivec v) { return _mm512_cvtepi32_ps(v); }
#else
using ivec = __m256i;
constexpr int64_t IV = 16;
inline ivec izero() { return _mm256_setzero_si256(); }
inline ivec iload_w(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline ivec iload_x(const int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline ivec imadd(ivec w, ivec x, ivec acc) { return _mm256_add_epi32(acc, _mm256_madd_epi16(w, x)); }
inline vec to_vec(ivec v) { return _mm256_cvtepi32_ps(v); }
#endif

template <int M>
inline void int_dot_rows(const int16_t* xq, const int8_t* row, int64_t K, float* out) {
  vec sums[M];
  int32_t tail[M] = {};
  for (int m = 0; m < M; m++) sums[m] = zero();
  for (int64_t k0 = 0; k0 < K; k0 += BLOCK) {
    const int64_t k1 = k0 + BLOCK < K ? k0 + BLOCK : K;
    ivec acc[M][2];
    for (int m = 0; m < M; m++) acc[m][0] = acc[m][1] = izero();
    int64_t k = k0;
    for (; k + 2 * IV <= k1; k += 2 * IV) {
      ivec w0 = iload_w(row + k), w1 = iload_w(row + k + IV);
      for (int m = 0; m < M; m++) {
        acc[m][0] = imadd(w0, iload_x(xq + m * K + k), acc[m][0]);
        acc[m][1] = imadd(w1, iload_x(xq + m * K + k + IV), acc[m][1]);
      }
    }
    for (; k + IV <= k1; k += IV) {
      ivec w0 = iload_w(row + k);
      for (int m = 0; m < M; m++) acc[m][0] = imadd(w0, iload_x(xq + m * K + k), acc[m][0]);
    }
    for (int m = 0; m < M; m++) sums[m] = add(sums[m], add(to_vec(acc[m][0]), to_vec(acc[m][1])));
    for (; k < k1; k++)  // a tail shorter than IV (K is a multiple of 16; IV may be 32)
      for (int m = 0; m < M; m++) tail[m] += static_cast<int32_t>(row[k]) * xq[m * K + k];
  }
  for (int m = 0; m < M; m++) out[m] = total(sums[m]) + static_cast<float>(tail[m]);
}
#endif

template <typename W, int M>
void rows(const float* x, const W* w, const float* scales, float* y, int64_t N, int64_t K) {
  constexpr int U = M <= 2 ? 4 : 2;  // vectors of weights per step: fewer with more rows, to stay in registers
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    float out[M];
    for (int64_t n = begin; n < end; n++) {
      dot_rows<W, M, U>(x, w + n * K, K, out);
      const float scale = scales ? scales[n] : 1.0f;
      for (int m = 0; m < M; m++) y[m * N + n] = out[m] * scale;
    }
  });
}

// Up to 4 rows in one pass over the weights; more rows in groups of 4, a pass each.
#ifdef TINYGPT_INT_DOT
template <int M>
void int_rows(const int16_t* xq, const float* xs, const int8_t* w, const float* scales, float* y, int64_t N,
              int64_t K) {
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    float out[M];
    for (int64_t n = begin; n < end; n++) {
      int_dot_rows<M>(xq, w + n * K, K, out);
      const float scale = scales ? scales[n] : 1.0f;
      for (int m = 0; m < M; m++) y[m * N + n] = out[m] * xs[m] * scale;
    }
  });
}

// int8 weights: each input row rounded to int16 with its own scale, then up to 4 rows per pass.
void int_dispatch(const float* x, const int8_t* w, const float* scales, float* y, int64_t M, int64_t N,
                  int64_t K) {
  std::vector<int16_t> xq(M * K);
  std::vector<float> xs(M);
  for (int64_t m = 0; m < M; m++) {
    float largest = 0.0f;
    for (int64_t k = 0; k < K; k++) largest = std::max(largest, std::fabs(x[m * K + k]));
    xs[m] = largest > 0.0f ? largest / 32767.0f : 1.0f;
    for (int64_t k = 0; k < K; k++) xq[m * K + k] = static_cast<int16_t>(std::lrint(x[m * K + k] / xs[m]));
  }
  for (int64_t m0 = 0; m0 < M; m0 += 4) {
    const int16_t* q = xq.data() + m0 * K;
    const float* s = xs.data() + m0;
    float* ym = y + m0 * N;
    switch (M - m0 < 4 ? M - m0 : 4) {
      case 1: int_rows<1>(q, s, w, scales, ym, N, K); break;
      case 2: int_rows<2>(q, s, w, scales, ym, N, K); break;
      case 3: int_rows<3>(q, s, w, scales, ym, N, K); break;
      default: int_rows<4>(q, s, w, scales, ym, N, K); break;
    }
  }
}
#endif

template <typename W>
void dispatch(const float* x, const W* w, const float* scales, float* y, int64_t M, int64_t N, int64_t K) {
  for (int64_t m0 = 0; m0 < M; m0 += 4) {
    const float* xm = x + m0 * K;
    float* ym = y + m0 * N;
    switch (M - m0 < 4 ? M - m0 : 4) {
      case 1: rows<W, 1>(xm, w, scales, ym, N, K); break;
      case 2: rows<W, 2>(xm, w, scales, ym, N, K); break;
      case 3: rows<W, 3>(xm, w, scales, ym, N, K); break;
      default: rows<W, 4>(xm, w, scales, ym, N, K); break;
    }
  }
}

}  // namespace

// x: (M, K) fp32 contiguous; weight: (N, K) fp32, bf16 or int8, contiguous; scales: (N,) fp32 or empty.
at::Tensor matvec(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1), "matvec: shapes do not match");
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && weight.is_contiguous(),
              "matvec: x must be contiguous fp32 and the weight contiguous");
  TORCH_CHECK(weight.size(1) % 16 == 0, "matvec: in_features must be a multiple of 16");
  TORCH_CHECK(scales.numel() == 0 || scales.numel() == weight.size(0), "matvec: one scale per output row");
  const int64_t M = x.size(0), N = weight.size(0), K = weight.size(1);
  at::Tensor y = at::empty({M, N}, x.options());
  const float* s = scales.numel() ? scales.data_ptr<float>() : nullptr;
  switch (weight.scalar_type()) {
    case at::kFloat:
      dispatch(x.data_ptr<float>(), weight.data_ptr<float>(), s, y.data_ptr<float>(), M, N, K);
      break;
    case at::kBFloat16:
      dispatch(x.data_ptr<float>(), reinterpret_cast<const uint16_t*>(weight.data_ptr()), s, y.data_ptr<float>(),
               M, N, K);
      break;
    case at::kChar:
#ifdef TINYGPT_INT_DOT
      int_dispatch(x.data_ptr<float>(), weight.data_ptr<int8_t>(), s, y.data_ptr<float>(), M, N, K);
#else
      dispatch(x.data_ptr<float>(), weight.data_ptr<int8_t>(), s, y.data_ptr<float>(), M, N, K);
#endif
      break;
    default: TORCH_CHECK(false, "matvec: weights must be fp32, bf16 or int8");
  }
  return y;
}

TORCH_LIBRARY(tinygpt, m) { m.def("matvec(Tensor x, Tensor weight, Tensor scales) -> Tensor", &matvec); }
