// Chat templates: hand-written formatters for the common families (no Jinja). The family is
// detected from the GGUF's tokenizer.chat_template text, or named with --chat-template.
//
//   chatml   <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n
//   llama-3  <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> ... (BOS from tokenizer)
//   llama-2  [INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] answer </s><s>[INST] ...
//   mistral  [INST] user [/INST] answer</s>[INST] ... (system text prefixed to the first user turn)
//   zephyr   <|system|>\ncontent</s>\n<|user|>\ncontent</s>\n<|assistant|>\n
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/tokenizer.h"

namespace kvserve::server {

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

// "chatml", "llama-3", "llama-2", "mistral", "zephyr".
const std::vector<std::string>& chat_template_names();
bool is_chat_template_name(const std::string& name);
// The family whose markers appear in a Jinja template text; nullopt when none is recognised.
std::optional<std::string> detect_chat_template(const std::string& jinja);

// Renders the conversation followed by the assistant's generation prompt. invalid_argument for
// an unknown role or template name.
Result<std::string> render_chat(const std::string& name, const std::vector<ChatMessage>& messages);

// Tokenizes text, turning control tokens written as text ("<|im_start|>", "</s>", "<s>") into
// their ids instead of spelling them out. BOS is prepended when the tokenizer wants one and the
// text does not already start with it.
std::vector<int32_t> encode_with_specials(const Tokenizer& tok, const std::string& text);

}  // namespace kvserve::server
