// Relays an HTTP API request to the node that answers it (node/api_routing.h) and streams the
// answer back as it arrives, so server-sent events pass through token by token. A client that
// goes away ends the upstream request too, which cancels the sequence on the coordinator.
#ifndef EXO_NODE_API_PROXY_H_
#define EXO_NODE_API_PROXY_H_

#include <httplib.h>

#include <optional>
#include <string>

#include "node/api_routing.h"

namespace exo::node {

// Marks a request one node proxied to another; a request carrying it is never proxied again,
// so nodes whose views of the cluster disagree cannot bounce a request between them.
inline constexpr char kForwardedByHeader[] = "X-Exo-Forwarded-By";

// Sends `req` (method, target, body, and the Authorization, Content-Type and Accept headers) to
// `target`'s API with `forwarded_by` in kForwardedByHeader, and fills `res` with the answer's
// status and headers and a body streamed from it. Returns false, `res` untouched and `error`
// set, when the target gave no answer (refused, unreachable, timed out).
bool ProxyRequest(const httplib::Request& req, httplib::Response& res, const ApiEndpoint& target,
                  const std::string& forwarded_by, std::string* error);

// GETs `req`'s target from `target` (a short call, for small answers such as the cluster view),
// with its Authorization header; the body when the answer is 200, else nullopt.
std::optional<std::string> FetchFrom(const ApiEndpoint& target, const httplib::Request& req,
                                     const std::string& forwarded_by);

}  // namespace exo::node

#endif  // EXO_NODE_API_PROXY_H_
