// libFuzzer target: bytes -> GGUF parse; when that succeeds, re-encode the metadata with the writer
// and parse it again (it must round-trip), then build the llama checkpoint (dequantizing every
// tensor, tokenizer included) and exercise the tokenizer. Any crash, sanitizer report or trap
// is a bug; error results are the expected outcome for most inputs.
#include "io/gguf.h"
#include "io/gguf_checkpoint.h"
#include "io/gguf_writer.h"

#include <cstddef>
#include <cstdint>
#include <span>

namespace {

// The writer must reproduce every metadata value the reader accepted.
void checkMetadataRoundTrip(const lowbit::GgufFile &file) {
    const lowbit::GgufValue *alignment = file.find("general.alignment");
    if (alignment && alignment->type != lowbit::GgufValueType::U32)
        return; // the writer only writes the spec's u32 form
    if (file.alignment() > 65536)
        return; // valid, but the writer would honestly pad the data section to up to 1 GiB
    lowbit::GgufWriter writer(uint32_t(file.alignment()));
    for (const auto &[key, value] : file.metadata())
        writer.set(key, value);
    auto bytes = writer.toBytes();
    if (!bytes.ok())
        __builtin_trap();
    auto again = lowbit::GgufFile::parse(*bytes, "fuzz-rewritten.gguf");
    if (!again.ok() || again->metadata().size() != file.metadata().size() + (alignment ? 0 : 1))
        __builtin_trap();
    for (size_t i = 0; i < file.metadata().size(); ++i)
        if (again->metadata()[i].first != file.metadata()[i].first ||
            again->metadata()[i].second.type != file.metadata()[i].second.type)
            __builtin_trap();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte *>(data), size);
    auto file = lowbit::GgufFile::parse(bytes, "fuzz.gguf");
    if (!file.ok())
        return 0;
    checkMetadataRoundTrip(*file);
    auto ckpt = lowbit::checkpointFromGguf(*file, {});
    if (!ckpt.ok() || !ckpt->tokenizer)
        return 0;
    lowbit::EncodeOptions options;
    options.addBos = true;
    options.parseSpecial = true;
    const std::vector<int32_t> ids = ckpt->tokenizer->encode("Once upon a time, <s> 42\n", options);
    (void)ckpt->tokenizer->decode(ids);
    return 0;
}
