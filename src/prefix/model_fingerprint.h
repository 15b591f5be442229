// The model fingerprint that goes into every prefix-cache key: a hash of what determines the
// K/V a token produces — the architecture hyper-parameters, every tensor's name, type, shape and
// a sample of its bytes (all bytes of tensors up to 1 MiB; of larger ones the first and last
// 64 KiB and 16 evenly spaced 4 KiB pieces), plus the KV layout (element type, block size, heads).
// Sampling keeps it cheap for multi-GiB models while still telling apart two checkpoints of one
// architecture (fine-tunes change every tensor). Pure; any thread.
#pragma once

#include <string>

#include "core/hash.h"
#include "kv/kv_storage.h"
#include "model/model.h"

namespace kvserve {

// policy: the KV policy's name (kv_policy_name); K/V computed under a window or H2O differ from
// full attention, so they must not be shared across policies. Empty for full attention.
Digest model_fingerprint(const Model& model, const KvLayout& layout, HashKind kind,
                         const std::string& policy = "");

}  // namespace kvserve
