// Small UTF-8 helpers shared by the tokenizers. Decoding is lenient: a byte that does not start a
// well-formed sequence decodes as a one-byte "character" (flagged invalid) so that callers can
// always reproduce the original bytes exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvserve {

// Length of the sequence announced by a lead byte: 1 for ASCII and for bytes that cannot lead a
// sequence (continuation bytes, 0xF8..0xFF), else 2..4.
size_t utf8_lead_len(uint8_t lead);

struct Utf8Char {
  uint32_t cp = 0;    // code point; the raw byte value when !valid
  size_t len = 1;     // bytes consumed (>= 1)
  bool valid = true;  // false: a lone byte that is not well-formed UTF-8
};

// Decodes the character starting at s[pos] (pos < s.size()). Rejects overlong forms, surrogates
// and values above U+10FFFF (each such byte decodes as an invalid one-byte character).
Utf8Char utf8_next(std::string_view s, size_t pos);

// Appends the UTF-8 encoding of cp (cp <= 0x10FFFF).
void utf8_append(std::string& out, uint32_t cp);

// True when s is entirely well-formed UTF-8.
bool utf8_valid(std::string_view s);

// Bytes at the end of s that begin a character whose remaining bytes have not arrived yet (0 to
// 3): what a stream must hold back so that no character is split across two messages.
size_t utf8_incomplete_tail(std::string_view s);

}  // namespace kvserve

namespace kvserve {

// Unicode classes used by the BPE pre-tokenizers (\p{L}, \p{N}, \s in their regexes). The tables
// cover the common scripts (Latin, Greek, Cyrillic, Armenian, Hebrew, Arabic, Devanagari, Thai,
// Georgian, CJK, kana, Hangul, fullwidth forms); other code points count as neither.
bool unicode_is_letter(uint32_t cp);
bool unicode_is_number(uint32_t cp);
bool unicode_is_space(uint32_t cp);

}  // namespace kvserve
