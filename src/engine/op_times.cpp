#include "engine/op_times.h"

namespace kvserve {

const char* op_name(Op op) {
  switch (op) {
    case Op::kNorm:
      return "norm";
    case Op::kQkv:
      return "qkv";
    case Op::kRope:
      return "rope";
    case Op::kAttention:
      return "attention";
    case Op::kOutProj:
      return "out_proj";
    case Op::kGateUp:
      return "gate_up";
    case Op::kSwiGlu:
      return "swiglu";
    case Op::kDown:
      return "down";
    case Op::kLmHead:
      return "lm_head";
    case Op::kCount:
      break;
  }
  return "?";
}

}  // namespace kvserve
