// longcat._C: the nanobind module. One register_<area>() per area of the C++ API.
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "longcat/runtime.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace longcat::python {
void register_norm(nb::module_& m);
void register_linear(nb::module_& m);
void register_moe(nb::module_& m);
void register_moe_gemm(nb::module_& m);
void register_kv_cache(nb::module_& m);
void register_kv_copy_queue(nb::module_& m);
void register_mla(nb::module_& m);
void register_mla_decode(nb::module_& m);
void register_mla_prefill(nb::module_& m);
void register_mla_layer(nb::module_& m);
}

NB_MODULE(_C, m) {
  m.doc() = "longcat kernels (framework-free C++ behind DLPack). Use longcat.ops, not this module.";

  // longcat::Error -> the Python exception its kind names.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const longcat::Error& e) {
      switch (e.kind()) {
        case longcat::ErrorKind::Value: PyErr_SetString(PyExc_ValueError, e.what()); break;
        case longcat::ErrorKind::Type: PyErr_SetString(PyExc_TypeError, e.what()); break;
        default: PyErr_SetString(PyExc_RuntimeError, e.what()); break;
      }
    }
  });

  m.def("build_info", &longcat::build_info, "Build configuration as (key, value) pairs.");
  m.def("cpu_isa_detected", [] { return std::string(longcat::cpu_isa_name(longcat::cpu_isa_detected())); },
        "Best CPU ISA level this machine supports: scalar, avx2, avx512, avx512bf16 or amx.");
  m.def("cpu_isa_active", [] { return std::string(longcat::cpu_isa_name(longcat::cpu_isa_active())); },
        "CPU ISA level the kernels use now (LONGCAT_CPU_ISA or set_cpu_isa may lower it).");
  m.def("set_cpu_isa", [](const std::string& name) { longcat::set_cpu_isa(longcat::parse_cpu_isa(name)); },
        "name"_a, "Force a CPU ISA level (<= the detected one), for testing and benchmarking each path.");
  m.def("num_threads", &longcat::num_threads, "Threads the CPU kernels use.");
  m.def("set_num_threads", &longcat::set_num_threads, "n"_a, "Set the threads the CPU kernels use (>= 1).");
  m.def("set_thread_limit", &longcat::set_thread_limit, "n"_a,
        "Cap the threads of CPU kernels called from this thread (0: no cap).");
  m.def("thread_limit", &longcat::thread_limit, "This thread's cap on CPU kernel threads (0: none).");
  m.def("cpu_peak_gflops", &longcat::cpu_peak_gflops, "mix"_a,
        "Measured CPU peak GFLOP/s (all kernel threads, active ISA copy) for 'fma' or 'bf16dot'.");
  m.def("cuda_device_count", [] {
          std::string err;
          int n = longcat::cuda_device_count(&err);
          return std::make_pair(n, err);
        },
        "(count, message): CUDA devices seen by longcat's runtime; count -1 when built without CUDA.");

  longcat::python::register_norm(m);
  longcat::python::register_linear(m);
  longcat::python::register_moe(m);
  longcat::python::register_moe_gemm(m);
  longcat::python::register_kv_cache(m);
  longcat::python::register_kv_copy_queue(m);
  longcat::python::register_mla(m);
  longcat::python::register_mla_decode(m);
  longcat::python::register_mla_prefill(m);
  longcat::python::register_mla_layer(m);
}
