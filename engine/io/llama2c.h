// llama2.c checkpoint (.bin, the "legacy" export of karpathy/llama2.c, as read by its run.c):
//   7 x int32  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//              (vocab_size < 0: the classifier is stored separately at the end)
//   float32    token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim],
//              wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim],
//              w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
//              freq_cis_real [seq_len, head_size/2], freq_cis_imag [same], wcls [vocab, dim]?
// The file size must match these exactly. wq/wk rows are stored in the interleaved RoPE order and
// are permuted to rotate-half on load (private copies); every other weight views the bytes.
// loadLlama2cCheckpoint() (model/checkpoint.h) maps the file and adds the tokenizer.
#pragma once

#include "core/result.h"
#include "model/config.h"
#include "model/weights.h"

#include <cstddef>
#include <memory>
#include <span>
#include <string>

namespace lowbit {

struct Llama2cModel {
    ModelConfig config;
    ModelWeights weights;
};

// Parses a whole llama2.c image. `name` prefixes every error message; `owner` keeps `bytes` alive
// and becomes the tensors' owner. `bytes` must be 4-byte aligned (any mapping or malloc is).
Result<Llama2cModel> parseLlama2c(std::span<const std::byte> bytes, const std::string &name,
                                  std::shared_ptr<const void> owner = {});

} // namespace lowbit
