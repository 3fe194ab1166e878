// exo-node: parses flags and wires objects. The subcommands live in node/.
#include <cstdio>

int main(int argc, char** argv) {
  std::fprintf(stderr, "exo-node: not yet wired\n");
  return 1;
}
