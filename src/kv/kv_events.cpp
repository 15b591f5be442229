#include "kv/kv_events.h"

namespace kvserve {

const char* kv_tier_name(KvTier t) {
  switch (t) {
    case KvTier::kHost:
      return "host";
    case KvTier::kDisk:
      return "disk";
    case KvTier::kRemote:
      return "remote";
    default:
      return "pool";
  }
}

}  // namespace kvserve
