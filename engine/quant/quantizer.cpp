#include "quant/quantizer.h"

#include <algorithm>
#include <charconv>
#include <optional>

namespace lowbit {

const char *linearKindName(LinearKind kind) {
    switch (kind) {
    case LinearKind::Q: return "q_proj";
    case LinearKind::K: return "k_proj";
    case LinearKind::V: return "v_proj";
    case LinearKind::O: return "o_proj";
    case LinearKind::Gate: return "gate_proj";
    case LinearKind::Up: return "up_proj";
    case LinearKind::Down: return "down_proj";
    }
    return "?";
}

LinearInput linearInputOf(LinearKind kind) {
    switch (kind) {
    case LinearKind::Q:
    case LinearKind::K:
    case LinearKind::V: return LinearInput::Attention;
    case LinearKind::O: return LinearInput::AttentionOutput;
    case LinearKind::Gate:
    case LinearKind::Up: return LinearInput::Mlp;
    case LinearKind::Down: return LinearInput::MlpDown;
    }
    return LinearInput::Attention;
}

std::string linearTensorName(int64_t layer, LinearKind kind) {
    const bool attention = kind == LinearKind::Q || kind == LinearKind::K ||
                           kind == LinearKind::V || kind == LinearKind::O;
    return "model.layers." + std::to_string(layer) + (attention ? ".self_attn." : ".mlp.") +
           linearKindName(kind) + ".weight";
}

namespace {

template <typename W> auto &pickLinear(W &w, LinearKind kind) {
    switch (kind) {
    case LinearKind::Q: return w.wq;
    case LinearKind::K: return w.wk;
    case LinearKind::V: return w.wv;
    case LinearKind::O: return w.wo;
    case LinearKind::Gate: return w.wGate;
    case LinearKind::Up: return w.wUp;
    case LinearKind::Down: return w.wDown;
    }
    return w.wq;
}

std::optional<LinearKind> kindFromName(std::string_view name) {
    if (name.size() > 5 && name.substr(name.size() - 5) == "_proj")
        name.remove_suffix(5);
    for (LinearKind kind : kAllLinearKinds) {
        std::string_view full = linearKindName(kind);
        if (full.substr(0, full.size() - 5) == name)
            return kind;
    }
    return std::nullopt;
}

std::optional<int64_t> parseIndex(std::string_view text) {
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < 0)
        return std::nullopt;
    return v;
}

} // namespace

const Tensor &linearWeight(const LayerWeights &weights, LinearKind kind) {
    return pickLinear(weights, kind);
}
Tensor &linearWeight(LayerWeights &weights, LinearKind kind) {
    return pickLinear(weights, kind);
}

Result<LayerSelection> LayerSelection::parse(std::string_view spec) {
    LayerSelection s;
    if (spec.empty() || spec == "all")
        return s;
    std::set<LinearKind> kinds;
    std::set<int64_t> layers;
    while (!spec.empty()) {
        const size_t comma = spec.find(',');
        const std::string_view item = spec.substr(0, comma);
        spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
        if (const auto kind = kindFromName(item)) {
            kinds.insert(*kind);
            continue;
        }
        const size_t dash = item.find('-');
        const auto first = parseIndex(item.substr(0, dash));
        const auto last =
            dash == std::string_view::npos ? first : parseIndex(item.substr(dash + 1));
        if (!first || !last || *last < *first || *last - *first > 100000)
            return makeError(ErrorCode::InvalidArgument,
                             "layer selection: '" + std::string(item) +
                                 "' is neither a linear (q, k, v, o, gate, up, down) nor a layer "
                                 "index or range like 0-3");
        for (int64_t i = *first; i <= *last; ++i)
            layers.insert(i);
    }
    if (!kinds.empty())
        s.kinds = kinds;
    s.layers = layers;
    return s;
}

std::string LayerSelection::toString() const {
    std::string out;
    if (kinds.size() == kAllLinearKinds.size() && layers.empty())
        return "all";
    for (LinearKind k : kinds)
        out += std::string(out.empty() ? "" : ",") + linearKindName(k);
    for (int64_t l : layers)
        out += (out.empty() ? "" : ",") + std::to_string(l);
    return out;
}

FloatLayer FloatLayer::fromWeights(const LayerWeights &weights) {
    FloatLayer f;
    f.attnNorm = tensorToFloats(weights.attnNorm);
    f.ffnNorm = tensorToFloats(weights.ffnNorm);
    for (LinearKind kind : kAllLinearKinds) {
        const Tensor &t = linearWeight(weights, kind);
        f.linears[size_t(kind)] = tensorToFloats(t);
        f.rows[size_t(kind)] = t.rows();
        f.cols[size_t(kind)] = t.cols();
    }
    return f;
}

namespace {

Tensor viewFloats(const std::vector<float> &values, std::vector<int64_t> shape) {
    Tensor t;
    t.dtype = DType::F32;
    t.shape = std::move(shape);
    t.data = reinterpret_cast<const std::byte *>(values.data());
    return t;
}

} // namespace

LayerWeights FloatLayer::view() const {
    LayerWeights w;
    w.attnNorm = viewFloats(attnNorm, {int64_t(attnNorm.size())});
    w.ffnNorm = viewFloats(ffnNorm, {int64_t(ffnNorm.size())});
    for (LinearKind kind : kAllLinearKinds)
        linearWeight(w, kind) =
            viewFloats(linears[size_t(kind)], {rows[size_t(kind)], cols[size_t(kind)]});
    return w;
}

Result<double> MethodOptions::number(const char *key, double fallback) {
    m_read.insert(key);
    const auto it = m_json.find(key);
    if (it == m_json.end() || it->is_null())
        return fallback;
    if (!it->is_number())
        return makeError(ErrorCode::InvalidArgument,
                         m_method + ": option '" + key + "' must be a number");
    return it->get<double>();
}

Result<int64_t> MethodOptions::integer(const char *key, int64_t fallback) {
    m_read.insert(key);
    const auto it = m_json.find(key);
    if (it == m_json.end() || it->is_null())
        return fallback;
    if (!it->is_number_integer())
        return makeError(ErrorCode::InvalidArgument,
                         m_method + ": option '" + key + "' must be an integer");
    return it->get<int64_t>();
}

Result<bool> MethodOptions::boolean(const char *key, bool fallback) {
    m_read.insert(key);
    const auto it = m_json.find(key);
    if (it == m_json.end() || it->is_null())
        return fallback;
    if (!it->is_boolean())
        return makeError(ErrorCode::InvalidArgument,
                         m_method + ": option '" + key + "' must be true or false");
    return it->get<bool>();
}

Status MethodOptions::finish() const {
    if (m_json.is_null())
        return {};
    if (!m_json.is_object())
        return makeError(ErrorCode::InvalidArgument,
                         m_method + ": method options must be a JSON object");
    for (const auto &[key, value] : m_json.items())
        if (!m_read.count(key)) {
            std::string known;
            for (const std::string &k : m_read)
                known += (known.empty() ? "" : ", ") + k;
            return makeError(ErrorCode::InvalidArgument,
                             m_method + ": unknown option '" + key +
                                 "' (known: " + (known.empty() ? "none" : known) + ")");
        }
    return {};
}

Result<std::unique_ptr<Quantizer>> makeQuantizer(const QuantizeOptions &options) {
    std::string names;
    for (const QuantizerInfo &info : quantizerRegistry()) {
        if (info.name == options.method)
            return info.factory(options);
        names += (names.empty() ? "" : ", ") + std::string(info.name);
    }
    return makeError(ErrorCode::NotFound,
                     "unknown quantization method '" + options.method + "' (known: " + names + ")");
}

} // namespace lowbit
