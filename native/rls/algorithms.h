// The rate-limit algorithms of src/mizzen/ratelimit/algorithms.py, ported line by line: the same state per key,
// the same arithmetic in IEEE doubles (Python floats are doubles), the same EPS, the same decisions. Keep the two
// in step: tests/ratelimit/test_native.py sends the same requests to both services and compares the answers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <utility>

namespace mizzen {

constexpr double EPS = 1e-9;
constexpr double INF = std::numeric_limits<double>::infinity();

struct Rate {
  int64_t limit = 1;
  double period = 1.0;
  int64_t capacity = 1;  // burst or limit
  double per_second() const { return static_cast<double>(limit) / period; }
  double interval() const { return period / static_cast<double>(limit); }
};

struct Decision {
  bool allowed = true;
  int64_t limit = 0;
  int64_t remaining = 0;
  double reset_after = 0.0;
  double retry_after = 0.0;
  double delay = 0.0;
};

enum class Kind : uint8_t { FixedWindow, SlidingWindow, SlidingLog, TokenBucket, LeakyBucket, LeakyBucketQueue, Gcra };

// One key's state. Which fields mean what depends on the kind (the Python tuple in brackets):
// fixed_window (start a, count c); sliding_window (start a, previous c, current d); sliding_log (log);
// token_bucket (tokens a, last b); leaky_bucket (level a, last b); leaky_bucket_queue (next a); gcra (tat a).
// `rate` is the rate of the last write (Python keeps the algorithm object next to the state; sweeping uses it).
struct State {
  double a = 0.0, b = 0.0;
  int64_t c = 0, d = 0;
  std::deque<std::pair<double, int64_t>> log;
  Rate rate;
  Kind kind = Kind::FixedWindow;  // fixed per key (the key starts with the state kind)
};

inline int64_t floor0(double x) {  // _floor
  double f = std::floor(x + EPS);
  return f > 0 ? static_cast<int64_t>(f) : 0;
}

inline std::optional<Kind> kind_of(const std::string& state_kind) {
  if (state_kind == "fixed_window") return Kind::FixedWindow;
  if (state_kind == "sliding_window") return Kind::SlidingWindow;
  if (state_kind == "sliding_log") return Kind::SlidingLog;
  if (state_kind == "token_bucket") return Kind::TokenBucket;
  if (state_kind == "leaky_bucket") return Kind::LeakyBucket;
  if (state_kind == "leaky_bucket_queue") return Kind::LeakyBucketQueue;
  if (state_kind == "gcra") return Kind::Gcra;
  return std::nullopt;
}

// decide(state, now, hits, max_delay) with force=False (priority classes, the only users of force, are not
// supported natively). `has` false: a key never seen (Python's None). Updates `s` in place.
inline Decision decide(Kind kind, const Rate& rate, bool has, State& s, double now, int64_t hits,
                       std::optional<double> max_delay) {
  const int64_t lim = rate.limit;
  const double p = rate.period;
  s.rate = rate;
  s.kind = kind;
  switch (kind) {
    case Kind::FixedWindow: {
      double start = std::floor(now / p) * p;
      int64_t count = (has && s.a == start) ? s.c : 0;
      double reset = start + p - now;
      s.a = start;
      if (count + hits <= lim) {
        count += hits;
        s.c = count;
        return {true, lim, std::max<int64_t>(0, lim - count), reset, 0.0, 0.0};
      }
      s.c = count;
      double retry = hits <= lim ? reset : INF;
      return {false, lim, std::max<int64_t>(0, lim - count), reset, retry, 0.0};
    }
    case Kind::SlidingWindow: {
      double start = std::floor(now / p) * p;
      int64_t prev = 0, cur = 0;
      if (has) {
        if (s.a == start) {
          prev = s.c;
          cur = s.d;
        } else if (s.a == start - p) {
          prev = s.d;
          cur = 0;
        }
      }
      double elapsed = now - start;
      double weight = 1.0 - elapsed / p;
      double used = static_cast<double>(prev) * weight + static_cast<double>(cur);
      auto reset_of = [&](int64_t pv, int64_t cu) {
        if (cu > 0) return 2 * p - elapsed;
        return pv > 0 ? (p - elapsed) : 0.0;
      };
      s.a = start;
      s.c = prev;
      if (used + static_cast<double>(hits) <= static_cast<double>(lim) + EPS) {
        cur += hits;
        used += static_cast<double>(hits);
        s.d = cur;
        return {true, lim, floor0(static_cast<double>(lim) - used), reset_of(prev, cur), 0.0, 0.0};
      }
      s.d = cur;
      double retry;
      if (hits > lim) {
        retry = INF;
      } else if (cur + hits <= lim && prev > 0) {
        double t = p * (1.0 - static_cast<double>(lim - cur - hits) / static_cast<double>(prev)) - elapsed;
        retry = std::max(t, 0.0);
      } else {
        double t_next = cur > 0 ? p * (1.0 - static_cast<double>(lim - hits) / static_cast<double>(cur)) : 0.0;
        retry = (p - elapsed) + std::max(t_next, 0.0);
      }
      return {false, lim, floor0(static_cast<double>(lim) - used), reset_of(prev, cur), retry, 0.0};
    }
    case Kind::SlidingLog: {
      if (!has) s.log.clear();
      {  // log = tuple(e for e in log if e[0] > now - p)
        std::deque<std::pair<double, int64_t>> kept;
        for (auto& e : s.log)
          if (e.first > now - p) kept.push_back(e);
        s.log.swap(kept);
      }
      int64_t used = 0;
      for (auto& e : s.log) used += e.second;
      if (used + hits <= lim) {
        s.log.emplace_back(now, hits);
        used += hits;
        return {true, lim, std::max<int64_t>(0, lim - used), s.log.front().first + p - now, 0.0, 0.0};
      }
      int64_t need = used + hits - lim, freed = 0;
      double retry = INF;
      if (hits <= lim) {
        for (auto& e : s.log) {
          freed += e.second;
          if (freed >= need) {
            retry = e.first + p - now;
            break;
          }
        }
      }
      return {false, lim, std::max<int64_t>(0, lim - used), s.log.empty() ? 0.0 : s.log.front().first + p - now,
              retry, 0.0};
    }
    case Kind::TokenBucket: {
      const double r = rate.per_second();
      const int64_t cap = rate.capacity;
      const double capd = static_cast<double>(cap);
      double tokens = has ? std::min(capd, s.a + std::max(0.0, now - s.b) * r) : capd;
      s.b = now;
      const double h = static_cast<double>(hits);
      if (tokens + EPS >= h) {
        tokens -= h;
        s.a = tokens;
        return {true, cap, floor0(tokens), (capd - tokens) / r, 0.0, 0.0};
      }
      double wait = (h - tokens) / r;
      if (max_delay && wait <= *max_delay + EPS && hits <= cap) {
        tokens -= h;
        s.a = tokens;
        return {true, cap, 0, (capd - tokens) / r, 0.0, wait};
      }
      if (hits > cap)
        wait = INF;
      else if (max_delay)
        wait -= *max_delay;
      s.a = tokens;
      return {false, cap, floor0(tokens), (capd - tokens) / r, wait, 0.0};
    }
    case Kind::LeakyBucket: {
      const double r = rate.per_second();
      const int64_t cap = rate.capacity;
      const double capd = static_cast<double>(cap);
      double level = has ? std::max(0.0, s.a - std::max(0.0, now - s.b) * r) : 0.0;
      s.b = now;
      const double h = static_cast<double>(hits);
      if (level + h <= capd + EPS) {
        level = std::min(level + h, 2.0 * capd);
        s.a = level;
        return {true, cap, floor0(capd - level), level / r, 0.0, 0.0};
      }
      double retry = hits <= cap ? (level + h - capd) / r : INF;
      s.a = level;
      return {false, cap, floor0(capd - level), level / r, retry, 0.0};
    }
    case Kind::LeakyBucketQueue: {
      const double t = rate.interval();
      const double bound = max_delay ? *max_delay : 0.0;  // `max_delay or 0.0`
      double start = std::max(now, has ? s.a : now);
      double delay = start - now;
      if (delay <= bound + EPS) {
        double nxt = start + static_cast<double>(hits) * t;
        s.a = nxt;
        int64_t free = (nxt - now <= bound + EPS) ? floor0((bound - (nxt - now)) / t + 1) : 0;
        return {true, lim, free, nxt - now, 0.0, delay};
      }
      s.a = start;
      return {false, lim, 0, start - now, delay - bound, 0.0};
    }
    case Kind::Gcra: {
      const double t = rate.interval();
      const int64_t cap = rate.capacity;
      const double capd = static_cast<double>(cap);
      double tat = has ? std::max(s.a, now) : now;
      double new_tat = tat + static_cast<double>(hits) * t;
      double allow_at = new_tat - capd * t;
      double wait = allow_at - now;
      if (wait <= EPS || (max_delay && wait <= *max_delay + EPS && hits <= cap)) {
        double delay = max_delay ? std::max(0.0, wait) : 0.0;
        int64_t remaining = floor0((capd * t - (new_tat - now)) / t);
        s.a = new_tat;
        return {true, cap, remaining, new_tat - now, 0.0, delay};
      }
      double retry = hits > cap ? INF : wait - (max_delay ? *max_delay : 0.0);
      int64_t remaining = floor0((capd * t - (tat - now)) / t);
      s.a = tat;
      return {false, cap, remaining, tat - now, retry, 0.0};
    }
  }
  return {};
}

// expires(state): the time after which the state equals a fresh key's and can be dropped.
inline double expires(const State& s) {
  const Rate& rate = s.rate;
  switch (s.kind) {
    case Kind::FixedWindow: return s.a + rate.period;
    case Kind::SlidingWindow: return s.a + 2 * rate.period;
    case Kind::SlidingLog: return s.log.empty() ? -INF : s.log.back().first + rate.period;
    case Kind::TokenBucket: return s.b + (static_cast<double>(rate.capacity) - s.a) / rate.per_second();
    case Kind::LeakyBucket: return s.b + s.a / rate.per_second();
    case Kind::LeakyBucketQueue: return s.a;
    case Kind::Gcra: return s.a;
  }
  return -INF;
}

}  // namespace mizzen
