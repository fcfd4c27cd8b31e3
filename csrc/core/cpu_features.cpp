// Run-time CPU feature detection (cpuid + xgetbv) and the active ISA level.
#include <atomic>
#include <cstdlib>
#include <mutex>

#include "longcat/runtime.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace longcat {

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Scalar: return "scalar";
    case CpuIsa::AVX2: return "avx2";
    case CpuIsa::AVX512: return "avx512";
    case CpuIsa::AVX512_BF16: return "avx512bf16";
    case CpuIsa::AMX: return "amx";
  }
  return "?";
}

CpuIsa parse_cpu_isa(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(CpuIsa::AMX); ++i)
    if (name == cpu_isa_name(static_cast<CpuIsa>(i))) return static_cast<CpuIsa>(i);
  fail(ErrorKind::Value, "cpu isa: expected one of scalar, avx2, avx512, avx512bf16, amx; got '" +
                             name + "'");
}

#if defined(__x86_64__) || defined(_M_X64)
static uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

static CpuIsa detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return CpuIsa::Scalar;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!osxsave) return CpuIsa::Scalar;
  const uint64_t xcr0 = xgetbv0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;             // XMM + YMM state
  const bool os_avx512 = (xcr0 & 0xE6) == 0xE6;        // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;     // XTILECFG + XTILEDATA
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return CpuIsa::Scalar;
  const bool avx2 = b & (1u << 5);
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));  // F DQ BW VL
  const bool amx = (d & (1u << 24)) && (d & (1u << 25));  // AMX-TILE + AMX-BF16
  unsigned a1 = 0, b1, c1, d1;
  __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
  const bool avx512bf16 = a1 & (1u << 5);

  if (!(os_avx && avx2 && fma && f16c)) return CpuIsa::Scalar;
  if (!(os_avx512 && avx512)) return CpuIsa::AVX2;
  if (!avx512bf16) return CpuIsa::AVX512;
  if (!(amx && os_amx)) return CpuIsa::AVX512_BF16;
#if defined(__linux__)
  // Linux hands out the AMX tile state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE 18).
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) return CpuIsa::AVX512_BF16;
#endif
  return CpuIsa::AMX;
}
#else
static CpuIsa detect() { return CpuIsa::Scalar; }
#endif

CpuIsa cpu_isa_detected() {
  static const CpuIsa isa = detect();
  return isa;
}

static std::atomic<int> g_active{-1};

CpuIsa cpu_isa_active() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v >= 0) return static_cast<CpuIsa>(v);
  static std::once_flag once;
  std::call_once(once, [] {
    CpuIsa isa = cpu_isa_detected();
    if (const char* env = std::getenv("LONGCAT_CPU_ISA"); env && *env) {
      CpuIsa want = CpuIsa::Scalar;
      try {
        want = parse_cpu_isa(env);
      } catch (const Error&) {
        want = isa;  // unknown names are reported by `longcat info`; keep the detected level
      }
      if (want < isa) isa = want;
    }
    int expected = -1;
    g_active.compare_exchange_strong(expected, static_cast<int>(isa));
  });
  return static_cast<CpuIsa>(g_active.load());
}

void set_cpu_isa(CpuIsa isa) {
  if (isa > cpu_isa_detected())
    fail(ErrorKind::Value, std::string("set_cpu_isa: this CPU supports up to '") +
                               cpu_isa_name(cpu_isa_detected()) + "', got '" + cpu_isa_name(isa) + "'");
  cpu_isa_active();  // settle the environment default first
  g_active.store(static_cast<int>(isa));
}

}  // namespace longcat
