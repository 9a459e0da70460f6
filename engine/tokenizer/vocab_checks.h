// Shape checks shared by the tokenizer constructors: every per-token array has one entry per token
// and every named special id lies inside the vocabulary. Errors name `source`.
#pragma once

#include "core/result.h"

#include <climits>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace lowbit {

// `types` / `scores` of 0 mean "not given". Special ids may be -1 (none).
inline Status checkVocabShape(const std::string &source, size_t tokens, size_t types, size_t scores,
                              std::initializer_list<int32_t> specialIds) {
    if (tokens == 0)
        return makeError(ErrorCode::Format, source + ": the vocabulary is empty");
    if (tokens > INT32_MAX / 2)
        return makeError(ErrorCode::Format, source + ": the vocabulary is too large");
    const auto count = [&](size_t n, const char *what) -> Status {
        if (n != 0 && n != tokens)
            return makeError(ErrorCode::Format, source + ": " + std::to_string(n) + " " + what +
                                                    " for " + std::to_string(tokens) + " tokens");
        return {};
    };
    LOWBIT_CHECK(count(types, "token types"));
    LOWBIT_CHECK(count(scores, "scores"));
    for (int32_t id : specialIds) {
        if (id < -1 || static_cast<int64_t>(id) >= static_cast<int64_t>(tokens))
            return makeError(ErrorCode::Format, source + ": special token id " +
                                                    std::to_string(id) +
                                                    " is outside the vocabulary");
    }
    return {};
}

} // namespace lowbit
