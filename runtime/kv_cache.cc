#include "runtime/kv_cache.h"

#include <algorithm>
#include <vector>

#include "kernels/attention.h"
#include "kernels/quants.h"

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
    // Whole key blocks: the ring of a sliding-window layer just holds a few more positions.
    caps.push_back((cap + kernels::kKeyBlockRows - 1) / kernels::kKeyBlockRows *
                   kernels::kKeyBlockRows);
  }
  return caps;
}

}  // namespace

KvCache::KvCache(const ModelConfig& c, LayerRange layers, int32_t context, int32_t max_batch,
                 int32_t num_slots)
    : context_(context),
      num_slots_(num_slots),
      head_dim_(c.head_dim),
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

void KvCache::Write(int32_t slot, int32_t layer, int32_t position, const float* keys,
                    const float* values) {
  const size_t index = slot * capacity_.size() + layer;
  const int32_t cap = capacity_[layer];
  const int32_t row = position % cap;
  thread_local std::vector<uint16_t> halves;
  halves.resize(k_width_);
  kernels::QuantizeRow(kernels::TensorType::kF16, keys, halves.data(), k_width_);
  // Element d of kv head h goes to lane row % 16 of element d in the row's block of head h.
  uint16_t* base = keys_[index].data();
  const int64_t head_stride = int64_t{cap} * head_dim_;
  const int64_t block_offset =
      int64_t{row / kernels::kKeyBlockRows} * kernels::kKeyBlockRows * head_dim_ +
      row % kernels::kKeyBlockRows;
  for (int32_t e = 0; e < k_width_; ++e) {
    const int32_t h = e / head_dim_;
    const int32_t d = e % head_dim_;
    base[h * head_stride + block_offset + int64_t{d} * kernels::kKeyBlockRows] = halves[e];
  }
  kernels::QuantizeRow(kernels::TensorType::kF16, values,
                       values_[index].data() + size_t(row) * v_width_, v_width_);
}

const uint16_t* KvCache::KeyBlocks(int32_t slot, int32_t layer, int32_t kv_head) const {
  return keys_[slot * capacity_.size() + layer].data() +
         int64_t{kv_head} * capacity_[layer] * head_dim_;
}

const uint16_t* KvCache::ValueRows(int32_t slot, int32_t layer) const {
  return values_[slot * capacity_.size() + layer].data();
}

}  // namespace exo::runtime
