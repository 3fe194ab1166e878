// The web UI's static files (node/webui/), compiled into the binary by a build step that writes
// their bytes into a generated source file (see node/CMakeLists.txt). No network access needed.
#ifndef EXO_NODE_API_WEBUI_H_
#define EXO_NODE_API_WEBUI_H_

#include <cstddef>
#include <string_view>

namespace exo::node {

struct WebAsset {
  std::string_view path;  // "/index.html", "/app.js", ...
  std::string_view content_type;
  std::string_view bytes;
};

// The asset served at `path` ("/" is "/index.html"); null when there is none.
const WebAsset* FindWebAsset(std::string_view path);

}  // namespace exo::node

#endif  // EXO_NODE_API_WEBUI_H_
