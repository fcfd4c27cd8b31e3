// Run-time choice among the per-ISA copies of a CPU kernel (internal header).
//
//   LONGCAT_DECLARE_ISA_FN(void, rms_norm, const NormArgs&);   declares isa_<level>::rms_norm
//   LONGCAT_ISA_CALL(rms_norm, args);                           calls the best copy for
//                                                               cpu_isa_active()
// Kernels without an AMX-specific copy run their AVX512-BF16 copy on AMX machines. Those with
// one (built by longcat_add_amx_kernels) also declare it and its emulated twin:
//   LONGCAT_DECLARE_AMX_FN(void, moe_grouped_swiglu, const MoeGemmArgs&);
//   LONGCAT_ISA_CALL_WITH_AMX(moe_grouped_swiglu, args);
// The tests also run the emulated AMX copy on any CPU (CpuCopy::AmxEmulated):
//   LONGCAT_ISA_CALL_COPY(copy, moe_grouped_swiglu, args);
#pragma once

#include "longcat/runtime.h"

namespace longcat {
// Which CPU code runs an op: the best copy for cpu_isa_active(), or the emulated AMX copy (tests).
enum class CpuCopy { Best, AmxEmulated };
}  // namespace longcat

#if defined(LONGCAT_X86_ISAS)
#define LONGCAT_DECLARE_ISA_FN(ret, name, ...)              \
  namespace isa_scalar { ret name(__VA_ARGS__); }           \
  namespace isa_avx2 { ret name(__VA_ARGS__); }             \
  namespace isa_avx512 { ret name(__VA_ARGS__); }           \
  namespace isa_avx512bf16 { ret name(__VA_ARGS__); }

#define LONGCAT_ISA_CALL(name, ...)                                      \
  do {                                                                   \
    switch (::longcat::cpu_isa_active()) {                               \
      case ::longcat::CpuIsa::AMX:                                       \
      case ::longcat::CpuIsa::AVX512_BF16:                               \
        ::longcat::cpu::isa_avx512bf16::name(__VA_ARGS__); break;                        \
      case ::longcat::CpuIsa::AVX512: ::longcat::cpu::isa_avx512::name(__VA_ARGS__); break; \
      case ::longcat::CpuIsa::AVX2: ::longcat::cpu::isa_avx2::name(__VA_ARGS__); break;  \
      default: ::longcat::cpu::isa_scalar::name(__VA_ARGS__); break;                     \
    }                                                                    \
  } while (0)

#define LONGCAT_DECLARE_AMX_FN(ret, name, ...)     \
  LONGCAT_DECLARE_ISA_FN(ret, name, __VA_ARGS__)   \
  namespace isa_amx { ret name(__VA_ARGS__); }     \
  namespace isa_amx_emulated { ret name(__VA_ARGS__); }

#define LONGCAT_ISA_CALL_WITH_AMX(name, ...)                              \
  do {                                                                    \
    if (::longcat::cpu_isa_active() == ::longcat::CpuIsa::AMX)            \
      ::longcat::cpu::isa_amx::name(__VA_ARGS__);                         \
    else                                                                  \
      LONGCAT_ISA_CALL(name, __VA_ARGS__);                                \
  } while (0)
#define LONGCAT_ISA_CALL_COPY(copy, name, ...)                            \
  do {                                                                    \
    if ((copy) == ::longcat::CpuCopy::AmxEmulated)                        \
      ::longcat::cpu::isa_amx_emulated::name(__VA_ARGS__);                \
    else                                                                  \
      LONGCAT_ISA_CALL_WITH_AMX(name, __VA_ARGS__);                       \
  } while (0)
#else
#define LONGCAT_DECLARE_ISA_FN(ret, name, ...) \
  namespace isa_scalar { ret name(__VA_ARGS__); }
#define LONGCAT_ISA_CALL(name, ...) ::longcat::cpu::isa_scalar::name(__VA_ARGS__)
#define LONGCAT_DECLARE_AMX_FN(ret, name, ...)   \
  LONGCAT_DECLARE_ISA_FN(ret, name, __VA_ARGS__) \
  namespace isa_amx_emulated { ret name(__VA_ARGS__); }
#define LONGCAT_ISA_CALL_WITH_AMX(name, ...) LONGCAT_ISA_CALL(name, __VA_ARGS__)
#define LONGCAT_ISA_CALL_COPY(copy, name, ...)                            \
  do {                                                                    \
    if ((copy) == ::longcat::CpuCopy::AmxEmulated)                        \
      ::longcat::cpu::isa_amx_emulated::name(__VA_ARGS__);                \
    else                                                                  \
      LONGCAT_ISA_CALL(name, __VA_ARGS__);                                \
  } while (0)
#endif
