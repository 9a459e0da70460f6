// The method registry: one row per quantization method (see engine/quant/quantizer.h, "How a
// method plugs in"). Rows are listed explicitly rather than self-registered, because objects of
// a static library that nothing references are dropped by the linker.
#include "quant/awq.h"
#include "quant/billm.h"
#include "quant/fdb.h"
#include "quant/gptq.h"
#include "quant/icq.h"
#include "quant/nf4.h"
#include "quant/pb_llm.h"
#include "quant/quantizer.h"
#include "quant/quip.h"
#include "quant/rtn.h"
#include "quant/slim_llm.h"
#include "quant/smoothquant.h"

namespace lowbit {

namespace {

const QuantizerInfo kMethods[] = {
    {"rtn", makeRtnQuantizer, "round-to-nearest min-max, 1-8 bits, per-channel or grouped"},
    {"gptq", makeGptqQuantizer, "GPTQ: Hessian-aware column sweep (damp, block, act_order)"},
    {"nf4", makeNf4Quantizer,
     "4-bit NormalFloat, 64-weight absmax blocks, double-quantized scales"},
    {"icq", makeIcqQuantizer,
     "IR-QLoRA ICQ: NF4 with a per-block entropy-maximizing shift tau (tau_range, tau_steps)"},
    {"fdb", makeFdbQuantizer,
     "DB-LLM dual binarization storage: RTN 2-bit as two {0,1} planes (finetune dbllm trains it)"},
    {"pb-llm", makePbLlmQuantizer,
     "PB-LLM: salient weights at 8 bits, the rest binarized, GPTQ compensation (target_bits)"},
    {"billm", makeBillmQuantizer,
     "BiLLM: residual-binarized salient columns, split binarization of the rest (--bits 1)"},
    {"slim-llm", makeSlimLlmQuantizer,
     "SliM-LLM: group-wise N-1/N/N+1 bits by salience, salience-weighted grids, GPTQ sweep"},
    {"awq", makeAwqQuantizer,
     "AWQ: activation-aware scales (grid of 20) folded into norms/linears, clip search, RTN"},
    {"smoothquant", makeSmoothQuantQuantizer,
     "SmoothQuant: alpha-smoothing folded into norms, W/A absmax per channel/token (W8A8)"},
    {"quip", makeQuipQuantizer,
     "QuIP: rescale + random orthogonal butterflies (seeded), LDLQ rounding, 2-4 bits"},
};

} // namespace

std::span<const QuantizerInfo> quantizerRegistry() {
    return kMethods;
}

} // namespace lowbit
