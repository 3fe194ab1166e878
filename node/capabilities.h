// What this machine offers the cluster: memory, cores, memory bandwidth, device kind, load.
#ifndef EXO_NODE_CAPABILITIES_H_
#define EXO_NODE_CAPABILITIES_H_

#include <string>

#include "node/membership.h"

namespace exo::node {

// Total memory, cores, device kind and memory bandwidth. The bandwidth is measured once (a
// ~0.1 s copy test) and cached in `state_dir`/bandwidth so later starts are instant; an empty
// `state_dir` measures without caching.
NodeCapabilities LocalCapabilities(const std::string& state_dir);

// Free memory (MemAvailable) and utilisation (1-minute load average per core, capped at 1).
NodeLoad LocalLoad();

}  // namespace exo::node

#endif  // EXO_NODE_CAPABILITIES_H_
