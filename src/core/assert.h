// Always-on invariant checks: a failed KV_ASSERT is a bug in kvserve, never bad input.
#pragma once

#include <cstdio>
#include <cstdlib>

#define KV_ASSERT(cond)                                                                 \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "kvserve: invariant failed: %s (%s:%d)\n", #cond, __FILE__, \
                   __LINE__);                                                           \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)
