#include "kv/kv_policy_impl.h"

#include <type_traits>

#include "kv/kv_policy_full.h"
#include "kv/kv_policy_h2o.h"
#include "kv/kv_policy_window.h"

namespace kvserve {

std::unique_ptr<KvPolicyImpl> make_kv_policy(const KvPolicy& config) {
  return std::visit(
      [](const auto& c) -> std::unique_ptr<KvPolicyImpl> {
        using C = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<C, WindowKv>) return std::make_unique<WindowKvPolicy>(c);
        if constexpr (std::is_same_v<C, HeavyHitterKv>) {
          return std::make_unique<HeavyHitterKvPolicy>(c);
        }
        if constexpr (std::is_same_v<C, FullKv>) return std::make_unique<FullKvPolicy>();
      },
      config);
}

}  // namespace kvserve
