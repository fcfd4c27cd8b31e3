// longcat: the whole public C++ API. Link the CMake target longcat::kernels.
#pragma once

#include "longcat/build_config.h"
#include "longcat/common.h"
#include "longcat/kv_cache.h"
#include "longcat/kv_copy_queue.h"
#include "longcat/linear.h"
#include "longcat/mla.h"
#include "longcat/mla_layer.h"
#include "longcat/moe_gemm.h"
#include "longcat/moe_route.h"
#include "longcat/norm.h"
#include "longcat/runtime.h"
