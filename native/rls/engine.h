// The decision engine of src/mizzen/ratelimit/engine.py (plan + respond), memory.py (the counters) and
// stats.py (the counters of the service), for the in-memory backend, without priority classes.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "algorithms.h"
#include "mizzen.pb.h"
#include "rls.pb.h"

namespace mizzen {

struct LimitStats {  // stats.py LIMIT_COUNTERS (failure_mode_* stay 0: the memory backend cannot fail)
  std::atomic<bool> touched{false};
  std::atomic<uint64_t> total_hits{0}, within_limit{0}, over_limit{0}, near_limit{0}, shadow_mode{0}, delayed{0};
  std::atomic<double> delay_seconds{0.0};
};

struct KeyPart {
  bool constant = false;
  std::string value;  // the constant, or the descriptor entry key to read
};

struct Limit {
  std::string id;
  Kind kind;
  std::string state_kind;
  Rate rate;
  int64_t quota = 0;
  std::optional<double> max_delay;
  bool shadow = false;
  std::vector<KeyPart> key;
  std::optional<std::string> body;
  uint32_t current_limit_rpu = 0;
  int current_limit_unit = 0;
  int64_t window_seconds = 1;
  std::shared_ptr<LimitStats> stats;
};

struct Table {
  std::string version;
  std::unordered_map<std::string, Limit> limits;
};

class Engine {
 public:
  Engine();
  // Loads the JSON table written by mizzen.server.ratelimit_native; returns an error message or "".
  std::string load(const std::string& path);
  std::shared_ptr<const Table> table() const { return std::atomic_load(&table_); }
  // ShouldRateLimit: fills `resp` (cleared first).
  void handle(const envoy::service::ratelimit::v3::RateLimitRequest& req,
              envoy::service::ratelimit::v3::RateLimitResponse* resp);
  // The same at a given time (seconds since the epoch): --replay and the tests' clock-free comparisons.
  void handle_at(const envoy::service::ratelimit::v3::RateLimitRequest& req,
                 envoy::service::ratelimit::v3::RateLimitResponse* resp, double now);
  std::string stats_json() const;
  size_t size() const;

 private:
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, State> states;
    uint64_t writes = 0;
  };
  static constexpr size_t SHARDS = 64;
  static constexpr uint64_t SWEEP_EVERY = 4096 / SHARDS + 1;
  Decision decide(const Limit& lim, const std::string& state_key, double now, int64_t hits);

  std::shared_ptr<const Table> table_;
  std::unique_ptr<Shard[]> shards_;
  mutable std::mutex stats_mu_;  // guards limit_stats_ (the map, not the counters)
  std::unordered_map<std::string, std::shared_ptr<LimitStats>> limit_stats_;
  std::atomic<uint64_t> requests_{0}, unknown_{0};
};

}  // namespace mizzen
