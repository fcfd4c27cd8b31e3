// Validation of the SSA window shared by decode and prefill (semantics: longcat/mla.h).
#include <string>

#include "core/mla_args.h"

namespace longcat {

WindowArgs window_args(const char* op, const SsaWindow* window) {
  WindowArgs w;
  if (!window) return w;
  auto bad = [&](const char* field, const char* expected, int64_t got) {
    fail(ErrorKind::Value, std::string(op) + ": argument 'window." + field + "' must be " +
                               expected + ", got " + std::to_string(got));
  };
  // Bounds keep sink * block_size and positions far from int64 overflow.
  constexpr int64_t kMax = int64_t{1} << 31;
  if (window->sink < 0 || window->sink > kMax) bad("sink", "in [0, 2^31]", window->sink);
  if (window->local < 1 || window->local > kMax) bad("local", "in [1, 2^31]", window->local);
  const bool blocks = window->unit == SsaWindow::Unit::Blocks;
  if (blocks && (window->block_size < 1 || window->block_size > (int64_t{1} << 20)))
    bad("block_size", "in [1, 2^20]", window->block_size);
  w.has_window = true;
  w.blocks = blocks;
  w.sink = window->sink;
  w.local = window->local;
  w.block_size = blocks ? window->block_size : 1;
  return w;
}

}  // namespace longcat
