#include "runtime/kv_cache.h"

#include <algorithm>

namespace exo::runtime {
namespace {

std::vector<int32_t> Capacities(const ModelConfig& c, LayerRange layers, int32_t context,
                                int32_t max_batch) {
  std::vector<int32_t> caps;
  for (int32_t il = layers.begin; il < layers.end; ++il) {
    int32_t cap = context;
    if (c.layer_is_swa[il] && c.sliding_window > 0) {
      cap = std::min(context, c.sliding_window + max_batch - 1);
    }
    caps.push_back(cap);
  }
  return caps;
}

}  // namespace

KvCache::KvCache(const ModelConfig& c, LayerRange layers, int32_t context, int32_t max_batch,
                 int32_t num_slots)
    : context_(context),
      num_slots_(num_slots),
      k_width_(c.n_embd_k_gqa()),
      v_width_(c.n_embd_v_gqa()),
      capacity_(Capacities(c, layers, context, max_batch)) {
  const size_t n_layers = capacity_.size();
  keys_.resize(n_layers * num_slots);
  values_.resize(n_layers * num_slots);
  for (int32_t slot = 0; slot < num_slots; ++slot) {
    for (size_t l = 0; l < n_layers; ++l) {
      keys_[slot * n_layers + l].assign(size_t(capacity_[l]) * k_width_, 0);
      values_[slot * n_layers + l].assign(size_t(capacity_[l]) * v_width_, 0);
    }
  }
}

uint64_t KvCache::BytesFor(const ModelConfig& c, LayerRange layers, int32_t context,
                           int32_t max_batch, int32_t num_slots) {
  uint64_t rows = 0;
  for (int32_t cap : Capacities(c, layers, context, max_batch)) rows += cap;
  return rows * (c.n_embd_k_gqa() + c.n_embd_v_gqa()) * sizeof(uint16_t) * num_slots;
}

uint64_t KvCache::bytes() const {
  uint64_t total = 0;
  for (const auto& k : keys_) total += k.size() * sizeof(uint16_t);
  for (const auto& v : values_) total += v.size() * sizeof(uint16_t);
  return total;
}

int32_t KvCache::OldestHeld(int32_t layer, int32_t newest) const {
  return std::max(0, newest - capacity_[layer] + 1);
}

uint16_t* KvCache::Key(int32_t slot, int32_t layer, int32_t position) {
  return keys_[slot * capacity_.size() + layer].data() +
         size_t(position % capacity_[layer]) * k_width_;
}
uint16_t* KvCache::Value(int32_t slot, int32_t layer, int32_t position) {
  return values_[slot * capacity_.size() + layer].data() +
         size_t(position % capacity_[layer]) * v_width_;
}
const uint16_t* KvCache::Key(int32_t slot, int32_t layer, int32_t position) const {
  return const_cast<KvCache*>(this)->Key(slot, layer, position);
}
const uint16_t* KvCache::Value(int32_t slot, int32_t layer, int32_t position) const {
  return const_cast<KvCache*>(this)->Value(slot, layer, position);
}

}  // namespace exo::runtime
