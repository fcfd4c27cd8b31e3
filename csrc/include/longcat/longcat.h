// longcat: the whole public C++ API. Link the CMake target longcat::kernels.
#pragma once

#include "longcat/attention.h"
#include "longcat/build_config.h"
#include "longcat/common.h"
#include "longcat/moe.h"
#include "longcat/moe_gemm.h"
#include "longcat/norm.h"
#include "longcat/runtime.h"
