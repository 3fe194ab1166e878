#include "node/paths.h"

#include <cstdlib>

namespace exo::node {

std::string ExoHome() {
  if (const char* home = std::getenv("EXO_HOME"); home != nullptr && home[0] != '\0') return home;
  const char* user_home = std::getenv("HOME");
  return std::string(user_home != nullptr ? user_home : ".") + "/.cache/exo-node";
}

std::string ModelsDir() { return ExoHome() + "/models"; }

std::string DefaultModelPath() { return ModelsDir() + "/" + kDefaultModelFile; }

}  // namespace exo::node
