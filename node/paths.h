// Where exo-node keeps its files: $EXO_HOME (default ~/.cache/exo-node), models under models/.
#ifndef EXO_NODE_PATHS_H_
#define EXO_NODE_PATHS_H_

#include <string>

namespace exo::node {

// The name of the default model file the set-up script installs into the models directory.
inline constexpr char kDefaultModelFile[] = "gemma-3-270m-q4_k_m.gguf";

std::string ExoHome();
std::string ModelsDir();
// The default model's path (which may not exist yet).
std::string DefaultModelPath();

}  // namespace exo::node

#endif  // EXO_NODE_PATHS_H_
