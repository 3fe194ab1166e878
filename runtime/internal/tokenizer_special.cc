#include "runtime/internal/tokenizer_special.h"

#include <algorithm>
#include <utility>

namespace exo::runtime::tokenizer_internal {

SpecialTokenMatcher::SpecialTokenMatcher(std::vector<Pattern> patterns)
    : patterns_(std::move(patterns)) {
  ends_any_.push_back(-1);
  ends_always_.push_back(-1);
  for (size_t rank = 0; rank < patterns_.size(); ++rank) {
    int32_t node = 0;
    for (char c : patterns_[rank].text) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
      auto [it, inserted] = children_.try_emplace(key, static_cast<int32_t>(ends_any_.size()));
      if (inserted) {
        ends_any_.push_back(-1);
        ends_always_.push_back(-1);
      }
      node = it->second;
    }
    // Patterns arrive in rank order, so the first one to claim a node has the best rank.
    if (ends_any_[node] < 0) ends_any_[node] = static_cast<int32_t>(rank);
    if (patterns_[rank].always && ends_always_[node] < 0) {
      ends_always_[node] = static_cast<int32_t>(rank);
    }
  }
}

std::vector<SpecialTokenMatcher::Match> SpecialTokenMatcher::Find(std::string_view text,
                                                                  bool parse_special) const {
  // Every occurrence of every enabled pattern (for a text that two patterns share, the better
  // ranked one: it is processed first and takes all of them).
  std::vector<Match> candidates;
  for (size_t start = 0; start < text.size(); ++start) {
    int32_t node = 0;
    for (size_t pos = start; pos < text.size(); ++pos) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[pos]);
      const auto it = children_.find(key);
      if (it == children_.end()) break;
      node = it->second;
      const int32_t rank = parse_special ? ends_any_[node] : ends_always_[node];
      if (rank >= 0) candidates.push_back(Match{start, pos + 1 - start, rank});
    }
  }
  if (candidates.empty()) return candidates;
  // Replay the priority order: pattern by pattern, leftmost first, an occurrence is cut when it
  // lies in uncut text and does not overlap the pattern's previous cut.
  std::sort(candidates.begin(), candidates.end(), [](const Match& a, const Match& b) {
    return a.pattern != b.pattern ? a.pattern < b.pattern : a.offset < b.offset;
  });
  std::vector<bool> cut(text.size(), false);
  std::vector<Match> matches;
  size_t previous_end = 0;
  int32_t previous_pattern = -1;
  for (const Match& candidate : candidates) {
    if (candidate.pattern != previous_pattern) {
      previous_pattern = candidate.pattern;
      previous_end = 0;
    }
    if (candidate.offset < previous_end) continue;
    const auto first = cut.begin() + static_cast<std::ptrdiff_t>(candidate.offset);
    const auto last = first + static_cast<std::ptrdiff_t>(candidate.length);
    if (std::find(first, last, true) != last) continue;
    std::fill(first, last, true);
    previous_end = candidate.offset + candidate.length;
    matches.push_back(candidate);
  }
  std::sort(matches.begin(), matches.end(),
            [](const Match& a, const Match& b) { return a.offset < b.offset; });
  return matches;
}

std::vector<SpecialTokenMatcher::Match> SpecialTokenMatcher::FindReference(
    std::string_view text, bool parse_special) const {
  // Raw stretches of text as (offset, length); matches collected on the side.
  std::vector<std::pair<size_t, size_t>> raw = {{0, text.size()}};
  std::vector<Match> matches;
  for (size_t rank = 0; rank < patterns_.size(); ++rank) {
    if (!Enabled(static_cast<int32_t>(rank), parse_special)) continue;
    const std::string_view pattern = patterns_[rank].text;
    std::vector<std::pair<size_t, size_t>> next;
    for (const auto& [offset, length] : raw) {
      std::string_view rest = text.substr(offset, length);
      size_t rest_offset = offset;
      while (true) {
        const size_t found = rest.find(pattern);
        if (found == std::string_view::npos) break;
        if (found > 0) next.emplace_back(rest_offset, found);
        matches.push_back(Match{rest_offset + found, pattern.size(), static_cast<int32_t>(rank)});
        rest.remove_prefix(found + pattern.size());
        rest_offset += found + pattern.size();
      }
      if (!rest.empty()) next.emplace_back(rest_offset, rest.size());
    }
    raw.swap(next);
  }
  std::sort(matches.begin(), matches.end(),
            [](const Match& a, const Match& b) { return a.offset < b.offset; });
  return matches;
}

}  // namespace exo::runtime::tokenizer_internal
