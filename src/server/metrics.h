// Prometheus text exposition (format 0.0.4) of the engine's statistics, for GET /metrics.
#pragma once

#include <string>

#include "engine/engine_loop.h"

namespace kvserve::server {

// Every metric has HELP and TYPE lines; histograms have _bucket{le=...}, _sum and _count.
// A null engine (still loading) renders the counters and gauges as 0.
std::string render_metrics(const EngineLoop* engine);

}  // namespace kvserve::server
