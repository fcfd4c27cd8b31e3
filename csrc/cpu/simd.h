// SIMD vocabulary for CPU kernels (internal header).
//
// Included by kernel files (*.inc) that cmake/LongcatISA.cmake compiles once per ISA level, each
// copy with its own -m flags and LONGCAT_ISA_NS. Everything here lives in that namespace, so the
// copies never share an inline function compiled for a different ISA (an ODR trap otherwise).
//
//   Vec           W fp32 lanes: 16 with AVX-512, 8 with AVX2, 1 for the portable copy.
//   bf16          storage type of bfloat16 (the upper half of an fp32).
//   load / store  fp32 vectors from and to float or bf16 memory (round to nearest even).
//   load2/store2  2*W consecutive elements as two vectors. For bf16 the lanes come in a
//                 shuffled order (unpack/pack within 128-bit lanes, no shifts), so use them
//                 only for elementwise work, and always in pairs: store2 undoes load2's order.
//   quantize<T>   round an fp32 vector to T's precision and back, as torch does between ops.
//
// The vector bf16 rounding adds 0x7fff + lsb to the fp32 bits with no NaN special case: that
// keeps every NaN whose low 16 bits are below 0x8000, which covers every NaN that bf16 data or
// x86 arithmetic produces (bf16 payloads have zero low bits; the default NaN is 0xffc00000).
// Skipping the NaN blend roughly halves the cost of the conversion.
#pragma once

#include <memory>
#include <vector>

#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#ifndef LONGCAT_ISA_NS
#error "simd.h is included by per-ISA kernel files; LONGCAT_ISA_NS names the ISA copy"
#endif

namespace longcat::cpu::LONGCAT_ISA_NS {

// std::vector for the kernel copies. Each copy is compiled with its own -m flags, but
// std::vector<T>'s out-of-line members are shared (COMDAT) symbols and the linker keeps one
// copy's: an AVX2 or emulated-AMX copy could then run an AVX-512 build of, say,
// vector<uint32_t>::_M_default_append (seen in the -O1 sanitizer build: vmovdqu8 on an AVX2 CPU).
// An allocator type of the copy's own namespace makes every instantiation the copy's own symbol.
template <class T>
struct IsaAllocator : std::allocator<T> {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = IsaAllocator<U>;
  };
  IsaAllocator() noexcept = default;
  template <class U>
  IsaAllocator(const IsaAllocator<U>&) noexcept {}
};
template <class T, class U>
bool operator==(const IsaAllocator<T>&, const IsaAllocator<U>&) noexcept { return true; }
template <class T, class U>
bool operator!=(const IsaAllocator<T>&, const IsaAllocator<U>&) noexcept { return false; }
template <class T>
using IsaVector = std::vector<T, IsaAllocator<T>>;

struct bf16 {
  uint16_t bits;
};

inline float to_f32(float f) { return f; }
inline float to_f32(bf16 h) {
  uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}
template <typename T> inline T from_f32(float f);
template <> inline float from_f32<float>(float f) { return f; }
template <> inline bf16 from_f32<bf16>(float f) { return bf16{f32_to_bf16_bits(f)}; }
template <typename T> inline float quantize_scalar(float f) { return to_f32(from_f32<T>(f)); }

#if defined(__AVX512F__)
// ---------------------------------------------------------------- AVX-512: 16 lanes
struct Vec {
  static constexpr int W = 16;
  __m512 v;
};
inline Vec vzero() { return {_mm512_setzero_ps()}; }
inline Vec vset1(float f) { return {_mm512_set1_ps(f)}; }
inline Vec vadd(Vec a, Vec b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Vec vmul(Vec a, Vec b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline Vec vfma(Vec a, Vec b, Vec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline float vsum(Vec a) { return _mm512_reduce_add_ps(a.v); }
inline Vec vload(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void vstore(float* p, Vec a) { _mm512_storeu_ps(p, a.v); }
inline Vec vload(const bf16* p) {
  __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))};
}
inline __m256i bf16_bits(Vec a) {
#if defined(__AVX512BF16__)
  return (__m256i)_mm512_cvtneps_pbh(a.v);  // round to nearest even, NaN kept quiet
#else
  __m512i u = _mm512_castps_si512(a.v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
#endif
}
inline void vstore(bf16* p, Vec a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), bf16_bits(a)); }
inline Vec vquantize_bf16(Vec a) {
#if defined(__AVX512BF16__)
  __m512i w = _mm512_cvtepu16_epi32(bf16_bits(a));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))};
#else
  __m512i u = _mm512_castps_si512(a.v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  return {_mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32(static_cast<int>(0xffff0000u))))};
#endif
}
inline __m512i bf16_rounded_u32(Vec a) {  // rounded bf16 in the upper 16 bits of each lane
  __m512i u = _mm512_castps_si512(a.v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  return _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
}
inline void vload2(const bf16* p, Vec& a, Vec& b) {
  __m512i v = _mm512_loadu_si512(p), z = _mm512_setzero_si512();
  a = {_mm512_castsi512_ps(_mm512_unpacklo_epi16(z, v))};
  b = {_mm512_castsi512_ps(_mm512_unpackhi_epi16(z, v))};
}
inline void vstore2(bf16* p, Vec a, Vec b) {
  __m512i ra = _mm512_srli_epi32(bf16_rounded_u32(a), 16), rb = _mm512_srli_epi32(bf16_rounded_u32(b), 16);
  _mm512_storeu_si512(p, _mm512_packus_epi32(ra, rb));
}
#elif defined(__AVX2__)
// ---------------------------------------------------------------- AVX2 + FMA: 8 lanes
struct Vec {
  static constexpr int W = 8;
  __m256 v;
};
inline Vec vzero() { return {_mm256_setzero_ps()}; }
inline Vec vset1(float f) { return {_mm256_set1_ps(f)}; }
inline Vec vadd(Vec a, Vec b) { return {_mm256_add_ps(a.v, b.v)}; }
inline Vec vmul(Vec a, Vec b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline Vec vfma(Vec a, Vec b, Vec c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline float vsum(Vec a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline Vec vload(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void vstore(float* p, Vec a) { _mm256_storeu_ps(p, a.v); }
inline Vec vload(const bf16* p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
}
// fp32 -> bf16 bits in the upper halves of 32-bit lanes (lower halves zero): rounding done.
inline __m256i bf16_rounded_u32(Vec a) {
  __m256i u = _mm256_castps_si256(a.v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  return _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));  // low 16 bits: junk
}
inline void vstore(bf16* p, Vec a) {
  __m256i r = _mm256_srli_epi32(bf16_rounded_u32(a), 16);
  __m256i packed = _mm256_packus_epi32(r, r);              // per 128-bit lane: [lo4 lo4 | hi4 hi4]
  packed = _mm256_permute4x64_epi64(packed, 0x08);         // [lo4 hi4 ...]
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}
// load2: a = elements 0-3 and 8-11, b = 4-7 and 12-15, each in the upper half of its lane.
inline void vload2(const bf16* p, Vec& a, Vec& b) {
  __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), z = _mm256_setzero_si256();
  a = {_mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v))};
  b = {_mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v))};
}
inline void vstore2(bf16* p, Vec a, Vec b) {  // packus per 128-bit lane restores load2's order
  __m256i ra = _mm256_srli_epi32(bf16_rounded_u32(a), 16), rb = _mm256_srli_epi32(bf16_rounded_u32(b), 16);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_packus_epi32(ra, rb));
}
inline Vec vquantize_bf16(Vec a) {
  return {_mm256_castsi256_ps(_mm256_and_si256(bf16_rounded_u32(a), _mm256_set1_epi32(static_cast<int>(0xffff0000u))))};
}
#else
// ---------------------------------------------------------------- portable: 1 lane
struct Vec {
  static constexpr int W = 1;
  float v;
};
inline Vec vzero() { return {0.f}; }
inline Vec vset1(float f) { return {f}; }
inline Vec vadd(Vec a, Vec b) { return {a.v + b.v}; }
inline Vec vmul(Vec a, Vec b) { return {a.v * b.v}; }
inline Vec vfma(Vec a, Vec b, Vec c) { return {std::fma(a.v, b.v, c.v)}; }
inline float vsum(Vec a) { return a.v; }
inline Vec vload(const float* p) { return {*p}; }
inline void vstore(float* p, Vec a) { *p = a.v; }
inline Vec vload(const bf16* p) { return {to_f32(*p)}; }
inline void vstore(bf16* p, Vec a) { *p = from_f32<bf16>(a.v); }
inline Vec vquantize_bf16(Vec a) { return {quantize_scalar<bf16>(a.v)}; }
#endif

#if !defined(__AVX2__)
inline void vload2(const bf16* p, Vec& a, Vec& b) {
  a = vload(p);
  b = vload(p + Vec::W);
}
inline void vstore2(bf16* p, Vec a, Vec b) {
  vstore(p, a);
  vstore(p + Vec::W, b);
}
#endif
inline void vload2(const float* p, Vec& a, Vec& b) {
  a = vload(p);
  b = vload(p + Vec::W);
}
inline void vstore2(float* p, Vec a, Vec b) {
  vstore(p, a);
  vstore(p + Vec::W, b);
}

template <typename T> inline Vec vquantize(Vec a);
template <> inline Vec vquantize<float>(Vec a) { return a; }
template <> inline Vec vquantize<bf16>(Vec a) { return vquantize_bf16(a); }

}  // namespace longcat::cpu::LONGCAT_ISA_NS
