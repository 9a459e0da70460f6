// The method registry: one row per quantization method (see engine/quant/quantizer.h, "How a
// method plugs in"). Rows are listed explicitly rather than self-registered, because objects of
// a static library that nothing references are dropped by the linker.
#include "quant/quantizer.h"
#include "quant/gptq.h"
#include "quant/nf4.h"
#include "quant/rtn.h"

namespace lowbit {

namespace {

const QuantizerInfo kMethods[] = {
    {"rtn", makeRtnQuantizer, "round-to-nearest min-max, 1-8 bits, per-channel or grouped"},
    {"gptq", makeGptqQuantizer, "GPTQ: Hessian-aware column sweep (damp, block, act_order)"},
    {"nf4", makeNf4Quantizer, "4-bit NormalFloat, 64-weight absmax blocks, double-quantized scales"},
};

} // namespace

std::span<const QuantizerInfo> quantizerRegistry() { return kMethods; }

} // namespace lowbit
