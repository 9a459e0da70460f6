// Result<T>: an error-or-value type for module boundaries (C++20 has no std::expected).
// Errors carry a code and a message that names the file, tensor or field and what was wrong.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace lowbit {

enum class ErrorCode {
    InvalidArgument, // a caller passed something unusable (bad option, bad shape)
    NotFound,        // a file, tensor or key that must exist does not
    Io,              // the OS refused (open, read, mmap, write)
    Format,          // a file's content is malformed
    Unsupported,     // well-formed but not handled (dtype, architecture, version)
    OutOfMemory,
    Cancelled,
    Internal,
};

const char *errorCodeName(ErrorCode code);

struct Error {
    ErrorCode code = ErrorCode::Internal;
    std::string message;

    // "format: model.safetensors: tensor 'x' ends past the end of the file"
    std::string toString() const { return std::string(errorCodeName(code)) + ": " + message; }
};

inline Error makeError(ErrorCode code, std::string message) { return Error{code, std::move(message)}; }

template <typename T> class [[nodiscard]] Result {
public:
    Result(T value) : m_state(std::in_place_index<0>, std::move(value)) {}
    Result(Error error) : m_state(std::in_place_index<1>, std::move(error)) {}

    bool ok() const { return m_state.index() == 0; }
    explicit operator bool() const { return ok(); }

    T &value() & { assert(ok()); return std::get<0>(m_state); }
    const T &value() const & { assert(ok()); return std::get<0>(m_state); }
    // By value, not T&&: `for (auto &x : makeResult().value())` must not dangle.
    T value() && { assert(ok()); return std::get<0>(std::move(m_state)); }
    T &operator*() & { return value(); }
    const T &operator*() const & { return value(); }
    T *operator->() { return &value(); }
    const T *operator->() const { return &value(); }

    const Error &error() const { assert(!ok()); return std::get<1>(m_state); }

private:
    std::variant<T, Error> m_state;
};

template <> class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : m_error(std::move(error)), m_ok(false) {}
    bool ok() const { return m_ok; }
    explicit operator bool() const { return m_ok; }
    const Error &error() const { assert(!m_ok); return m_error; }

private:
    Error m_error;
    bool m_ok = true;
};

using Status = Result<void>;

} // namespace lowbit

// Propagate an error: LOWBIT_TRY(auto header, parseHeader(file));
#define LOWBIT_CONCAT_INNER(a, b) a##b
#define LOWBIT_CONCAT(a, b) LOWBIT_CONCAT_INNER(a, b)
#define LOWBIT_TRY_IMPL(tmp, decl, expr)                                                           \
    auto tmp = (expr);                                                                             \
    if (!tmp.ok())                                                                                 \
        return tmp.error();                                                                        \
    decl = std::move(tmp).value()
#define LOWBIT_TRY(decl, expr) LOWBIT_TRY_IMPL(LOWBIT_CONCAT(lowbitTry_, __LINE__), decl, expr)
// Propagate the error of a Status.
#define LOWBIT_CHECK(expr)                                                                         \
    do {                                                                                           \
        auto lowbitStatus_ = (expr);                                                               \
        if (!lowbitStatus_.ok())                                                                   \
            return lowbitStatus_.error();                                                          \
    } while (0)
