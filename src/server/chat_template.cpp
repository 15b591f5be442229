#include "server/chat_template.h"

#include <algorithm>
#include <map>
#include <mutex>

namespace kvserve::server {

namespace {

// Checks that every role is one the formatters know.
Status check_roles(const std::vector<ChatMessage>& messages) {
  if (messages.empty()) return invalid_argument("messages must not be empty");
  for (const auto& m : messages) {
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      return invalid_argument("unsupported message role '" + m.role +
                              "' (expected system, user or assistant)");
    }
  }
  return Status::ok();
}

std::string render_chatml(const std::vector<ChatMessage>& ms) {
  std::string s;
  for (const auto& m : ms) s += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  return s + "<|im_start|>assistant\n";
}

std::string render_llama3(const std::vector<ChatMessage>& ms) {
  std::string s;
  for (const auto& m : ms) {
    s += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
  }
  return s + "<|start_header_id|>assistant<|end_header_id|>\n\n";
}

std::string render_zephyr(const std::vector<ChatMessage>& ms) {
  std::string s;
  for (const auto& m : ms) s += "<|" + m.role + "|>\n" + m.content + "</s>\n";
  return s + "<|assistant|>\n";
}

// llama-2 and mistral: [INST] blocks; llama-2 wraps the system prompt in <<SYS>>.
std::string render_inst(const std::vector<ChatMessage>& ms, bool sys_block) {
  std::string system, s;
  bool first_user = true;
  for (const auto& m : ms) {
    if (m.role == "system") {
      system += (system.empty() ? "" : "\n") + m.content;
    } else if (m.role == "user") {
      std::string content = m.content;
      if (first_user && !system.empty()) {
        content = sys_block ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content
                            : system + "\n\n" + content;
      }
      first_user = false;
      s += (s.empty() ? "" : "<s>") + std::string("[INST] ") + content + " [/INST]";
    } else {
      s += " " + m.content + " </s>";
    }
  }
  return s;
}

bool is_byte_piece(std::string_view p) {
  return p.size() == 6 && p.substr(0, 3) == "<0x" && p.back() == '>';
}

// Control-token pieces of a vocabulary, longest first per starting character.
const std::vector<std::pair<std::string, int32_t>>& special_pieces(const Tokenizer& tok) {
  static std::mutex mu;
  static std::map<const Tokenizer*, std::vector<std::pair<std::string, int32_t>>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(&tok);
  if (it != cache.end()) return it->second;
  std::vector<std::pair<std::string, int32_t>> v;
  for (int32_t i = 0; i < tok.n_vocab(); ++i) {
    const std::string_view p = tok.piece(i);
    const bool angle = p.size() > 4 && p.substr(0, 2) == "<|" && p.substr(p.size() - 2) == "|>";
    const bool bos_eos = (i == tok.bos() || i == tok.eos()) && p.size() > 2 && p[0] == '<' &&
                         p.back() == '>' && !is_byte_piece(p);
    if (angle || bos_eos) v.push_back({std::string(p), i});
  }
  std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.first.size() > b.first.size(); });
  return cache[&tok] = std::move(v);
}

}  // namespace

const std::vector<std::string>& chat_template_names() {
  static const std::vector<std::string> names = {"chatml", "llama-3", "llama-2", "mistral",
                                                 "zephyr"};
  return names;
}

bool is_chat_template_name(const std::string& name) {
  for (const auto& n : chat_template_names()) {
    if (n == name) return true;
  }
  return false;
}

std::optional<std::string> detect_chat_template(const std::string& t) {
  if (t.find("<|start_header_id|>") != std::string::npos) return "llama-3";
  if (t.find("<|im_start|>") != std::string::npos) return "chatml";
  if (t.find("<|user|>") != std::string::npos) return "zephyr";
  if (t.find("[INST]") != std::string::npos) {
    return t.find("<<SYS>>") != std::string::npos ? "llama-2" : "mistral";
  }
  return std::nullopt;
}

Result<std::string> render_chat(const std::string& name, const std::vector<ChatMessage>& ms) {
  KV_RETURN_IF_ERROR(check_roles(ms));
  if (name == "chatml") return render_chatml(ms);
  if (name == "llama-3") return render_llama3(ms);
  if (name == "zephyr") return render_zephyr(ms);
  if (name == "llama-2") return render_inst(ms, true);
  if (name == "mistral") return render_inst(ms, false);
  return invalid_argument("unknown chat template '" + name + "'");
}

std::vector<int32_t> encode_with_specials(const Tokenizer& tok, const std::string& text) {
  const auto& specials = special_pieces(tok);
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t best = std::string::npos;
    const std::pair<std::string, int32_t>* hit = nullptr;
    for (const auto& sp : specials) {
      const size_t at = text.find(sp.first, pos);
      if (at < best) {
        best = at;
        hit = &sp;
      }
    }
    const size_t end = hit ? best : text.size();
    if (end > pos) {
      auto seg = tok.encode(std::string_view(text).substr(pos, end - pos), false);
      ids.insert(ids.end(), seg.begin(), seg.end());
    }
    if (!hit) break;
    ids.push_back(hit->second);
    pos = best + hit->first.size();
  }
  if (tok.add_bos_default() && (ids.empty() || ids[0] != tok.bos()))
    ids.insert(ids.begin(), tok.bos());
  return ids;
}

}  // namespace kvserve::server
