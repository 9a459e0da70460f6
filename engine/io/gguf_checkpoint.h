// GGUF (llama architecture) -> Checkpoint. loadGgufCheckpoint() (model/checkpoint.h) maps a file
// and calls checkpointFromGguf(); the fuzzer calls it directly on parsed bytes.
//
// Conventions bridged here:
//  - GGUF dims are innermost first: a linear weight with ne = [in, out] becomes shape {out, in}.
//  - llama.cpp stores attn_q/attn_k rows in the interleaved RoPE order; they are permuted to
//    rotate-half (permuteRopeRows) so the engine's HF-style RoPE gives llama.cpp's logits.
//  - F32/F16/BF16 tensors view the file; block-quantized ones are dequantized to owned F32.
//  - output.weight absent means the head is tied to token_embd.
//  - Llama 3 rope scaling is stored by llama.cpp as a rope_freqs.weight tensor of per-frequency
//    divisors; it is recognised when it matches the Llama 3 formula (else Unsupported).
#pragma once

#include "io/gguf.h"
#include "model/checkpoint.h"

namespace lowbit {

// Everything but Checkpoint::path/format. Errors name file.source() and the key or tensor.
Result<Checkpoint> checkpointFromGguf(const GgufFile &file, const LoadOptions &options);

} // namespace lowbit
