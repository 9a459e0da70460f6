// ModelWeights: the tensors of a LLaMA decoder in Hugging Face conventions.
// Linear weights are {outFeatures, inFeatures} (y = W x), Q/K rows in rotate-half order: loaders of
// formats that store the interleaved (Meta/GGUF) order permute rows on load (see permuteRopeRows).
// Tensors are F32, F16 or BF16; they usually view a memory-mapped file.
#pragma once

#include "core/tensor.h"
#include "model/config.h"

#include <vector>

namespace lowbit {

struct LayerWeights {
    Tensor attnNorm; // {hidden}
    Tensor wq;       // {heads*headDim, hidden}
    Tensor wk;       // {kvHeads*headDim, hidden}
    Tensor wv;       // {kvHeads*headDim, hidden}
    Tensor wo;       // {hidden, heads*headDim}
    Tensor ffnNorm;  // {hidden}
    Tensor wGate;    // {ffn, hidden}
    Tensor wUp;      // {ffn, hidden}
    Tensor wDown;    // {hidden, ffn}
};

struct ModelWeights {
    Tensor tokenEmbedding; // {vocab, hidden}
    std::vector<LayerWeights> layers;
    Tensor finalNorm; // {hidden}
    Tensor output;    // {vocab, hidden}; views tokenEmbedding when tied

    // Every tensor present with the shape `config` implies; errors name `source` and the tensor.
    Status validate(const ModelConfig &config, const std::string &source) const;
};

// Reorders the rows of a Q or K projection from the interleaved RoPE layout (pairs (2j, 2j+1),
// Meta / llama2.c / GGUF) to rotate-half (pairs (j, j+headDim/2), Hugging Face): within each
// head, HF row s*headDim/2 + j is interleaved row 2j + s. Works on any dtype (whole rows move).
Tensor permuteRopeRows(const Tensor &weight, int64_t numHeads, int64_t headDim);
// The inverse: rotate-half rows back to the interleaved order (for writers of GGUF / Meta files).
Tensor permuteRopeRowsInverse(const Tensor &weight, int64_t numHeads, int64_t headDim);

} // namespace lowbit
