#include "engine.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>

namespace mizzen {

namespace rl = envoy::service::ratelimit::v3;

static const char* DOMAIN = "mizzen";
static const char* LIMIT_ENTRY = "mizzen_limit";
static const char* DELAY_HEADER = "x-envoy-fault-delay-request";
static const char* DELAY_RESPONSE_HEADER = "x-mizzen-ratelimit-delay-ms";
static const double NEAR_LIMIT_RATIO = 0.8;

Engine::Engine() : table_(std::make_shared<Table>()), shards_(new Shard[SHARDS]) {}

std::string Engine::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "cannot read " + path;
  std::stringstream buf;
  buf << in.rdbuf();
  mizzen::rls::v1::Table t;
  auto st = google::protobuf::util::JsonStringToMessage(buf.str(), &t);
  if (!st.ok()) return "invalid table in " + path + ": " + st.ToString();
  auto table = std::make_shared<Table>();
  table->version = t.version();
  std::lock_guard<std::mutex> g(stats_mu_);
  for (const auto& l : t.limits()) {
    Limit lim;
    lim.id = l.id();
    auto kind = kind_of(l.state_kind());
    if (!kind) return "limit " + l.id() + ": unknown state kind '" + l.state_kind() + "'";
    if (l.limit() <= 0 || l.period() <= 0 || l.capacity() <= 0) return "limit " + l.id() + ": invalid rate";
    lim.kind = *kind;
    lim.state_kind = l.state_kind();
    lim.rate = Rate{l.limit(), l.period(), l.capacity()};
    lim.quota = l.quota();
    if (l.has_max_delay()) lim.max_delay = l.max_delay();
    lim.shadow = l.shadow();
    for (const auto& k : l.key()) {
      KeyPart kp;
      kp.constant = !k.has_entry();
      kp.value = k.has_entry() ? k.entry() : k.constant();
      lim.key.push_back(std::move(kp));
    }
    if (l.has_body()) lim.body = l.body();
    lim.current_limit_rpu = l.current_limit_rpu();
    lim.current_limit_unit = l.current_limit_unit();
    lim.window_seconds = l.window_seconds();
    auto& s = limit_stats_[lim.id];
    if (!s) s = std::make_shared<LimitStats>();
    lim.stats = s;
    table->limits.emplace(lim.id, std::move(lim));
  }
  std::atomic_store(&table_, std::shared_ptr<const Table>(table));
  return "";
}

size_t Engine::size() const {
  size_t n = 0;
  for (size_t i = 0; i < SHARDS; i++) {
    std::lock_guard<std::mutex> g(shards_[i].mu);
    n += shards_[i].states.size();
  }
  return n;
}

Decision Engine::decide(const Limit& lim, const std::string& key, double now, int64_t hits) {
  Shard& sh = shards_[std::hash<std::string>{}(key) % SHARDS];
  std::lock_guard<std::mutex> g(sh.mu);
  auto it = sh.states.find(key);
  bool has = it != sh.states.end();
  if (!has) it = sh.states.emplace(key, State{}).first;
  Decision d = mizzen::decide(lim.kind, lim.rate, has, it->second, now, hits, lim.max_delay);
  if (++sh.writes >= SWEEP_EVERY) {  // memory.py's sweep, one shard at a time: drop states back to a fresh key's
    sh.writes = 0;
    for (auto i = sh.states.begin(); i != sh.states.end();) {
      if (expires(i->second) <= now)
        i = sh.states.erase(i);
      else
        ++i;
    }
  }
  return d;
}

static std::string escape_part(const std::string& s) {  // p.replace("\\", "\\\\").replace("|", "\\|")
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '|') out += "\\|";
    else out += c;
  }
  return out;
}

// dict(entries).get(key): the last entry with that key wins
static const std::string* entry(const rl::RateLimitDescriptor& d, const std::string& key) {
  for (int i = d.entries_size() - 1; i >= 0; i--)
    if (d.entries(i).key() == key) return &d.entries(i).value();
  return nullptr;
}

static int64_t ceil_s(double x) { return x <= 0 ? 0 : static_cast<int64_t>(std::ceil(x - 1e-9)); }

static void set_header(rl::HeaderValue* h, const char* k, const std::string& v) {
  h->set_key(k);
  h->set_value(v);
}

void Engine::handle(const rl::RateLimitRequest& req, rl::RateLimitResponse* resp) {
  handle_at(req, resp, std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
}

void Engine::handle_at(const rl::RateLimitRequest& req, rl::RateLimitResponse* resp, const double now) {
  resp->Clear();
  auto table = this->table();
  const int64_t default_hits = req.hits_addend() ? req.hits_addend() : 1;
  const bool our_domain = req.domain() == DOMAIN;
  static const std::string empty;

  const Limit* worst_lim = nullptr;
  Decision worst;
  const Limit* over_lim = nullptr;  // the rejection with the longest retry (first of equals, as max() picks)
  Decision over;
  double delay = 0.0;
  requests_.fetch_add(1, std::memory_order_relaxed);
  std::string key;
  for (const auto& d : req.descriptors()) {
    const int64_t hits = d.has_hits_addend() ? static_cast<int64_t>(d.hits_addend().value()) : default_hits;
    const Limit* lim = nullptr;
    if (our_domain) {
      const std::string* lid = entry(d, LIMIT_ENTRY);
      auto it = table->limits.find(lid ? *lid : empty);
      if (it != table->limits.end()) lim = &it->second;
    }
    auto* st = resp->add_statuses();
    if (lim == nullptr) {
      st->set_code(rl::RateLimitResponse::OK);
      unknown_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    key = lim->state_kind;
    key += ':';
    key += escape_part(lim->id);
    for (const auto& kp : lim->key) {
      key += '|';
      if (kp.constant) {
        key += escape_part(kp.value);
      } else {
        const std::string* v = entry(d, kp.value);
        key += escape_part(v ? *v : empty);
      }
    }
    Decision dec = decide(*lim, key, now, hits);
    const bool rejected = !dec.allowed && !lim->shadow;
    // stats.record
    LimitStats& m = *lim->stats;
    m.touched.store(true, std::memory_order_relaxed);
    m.total_hits.fetch_add(hits, std::memory_order_relaxed);
    if (!dec.allowed) {
      (lim->shadow ? m.shadow_mode : m.over_limit).fetch_add(hits, std::memory_order_relaxed);
    } else {
      m.within_limit.fetch_add(hits, std::memory_order_relaxed);
      if (static_cast<double>(dec.remaining) < static_cast<double>(dec.limit) * (1 - NEAR_LIMIT_RATIO))
        m.near_limit.fetch_add(hits, std::memory_order_relaxed);
      if (dec.delay > 0 && !lim->shadow) {
        m.delayed.fetch_add(hits, std::memory_order_relaxed);
        double cur = m.delay_seconds.load(std::memory_order_relaxed);
        while (!m.delay_seconds.compare_exchange_weak(cur, cur + dec.delay, std::memory_order_relaxed)) {
        }
      }
    }
    if (lim->shadow) {  // counted, never rejects nor sets headers
      st->set_code(rl::RateLimitResponse::OK);
      continue;
    }
    st->set_code(rejected ? rl::RateLimitResponse::OVER_LIMIT : rl::RateLimitResponse::OK);
    auto* cl = st->mutable_current_limit();
    cl->set_requests_per_unit(lim->current_limit_rpu);
    cl->set_unit(static_cast<rl::RateLimitResponse::RateLimit::Unit>(lim->current_limit_unit));
    cl->set_name(lim->id);
    st->set_limit_remaining(static_cast<uint32_t>(std::max<int64_t>(0, dec.remaining)));
    auto* dur = st->mutable_duration_until_reset();
    if (std::isfinite(dec.reset_after)) {
      int64_t ns = static_cast<int64_t>(std::max(0.0, dec.reset_after) * 1e9);
      dur->set_seconds(ns / 1000000000);
      dur->set_nanos(static_cast<int32_t>(ns % 1000000000));
    } else {
      dur->set_seconds(86400);
    }
    if (rejected) {
      if (over_lim == nullptr || dec.retry_after > over.retry_after) {
        over_lim = lim;
        over = dec;
      }
    } else {
      delay = std::max(delay, dec.delay);
    }
    if (worst_lim == nullptr || dec.remaining < worst.remaining) {
      worst_lim = lim;
      worst = dec;
    }
  }
  const bool ok = over_lim == nullptr;
  resp->set_overall_code(ok ? rl::RateLimitResponse::OK : rl::RateLimitResponse::OVER_LIMIT);
  if (!ok) {
    worst_lim = over_lim;
    worst = over;
  }
  if (worst_lim != nullptr) {
    const std::string q = std::to_string(worst.limit);
    set_header(resp->add_response_headers_to_add(), "x-ratelimit-limit",
               q + ", " + q + ";w=" + std::to_string(worst_lim->window_seconds));
    set_header(resp->add_response_headers_to_add(), "x-ratelimit-remaining",
               std::to_string(std::max<int64_t>(0, worst.remaining)));
    set_header(resp->add_response_headers_to_add(), "x-ratelimit-reset", std::to_string(ceil_s(worst.reset_after)));
  }
  if (!ok) {
    const double retry = over.retry_after;
    set_header(resp->add_response_headers_to_add(), "retry-after",
               std::isfinite(retry) ? std::to_string(std::max<int64_t>(1, ceil_s(retry))) : std::string("86400"));
    if (over_lim->body && !over_lim->body->empty()) resp->set_raw_body(*over_lim->body);
  }
  if (ok && delay > 0) {
    const std::string ms = std::to_string(std::max<int64_t>(1, static_cast<int64_t>(std::ceil(delay * 1000 - 1e-6))));
    set_header(resp->add_request_headers_to_add(), DELAY_HEADER, ms);
    set_header(resp->add_response_headers_to_add(), DELAY_RESPONSE_HEADER, ms);
  }
}

static void json_str(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20) {
      char b[8];
      snprintf(b, sizeof b, "\\u%04x", c);
      out += b;
    } else out += static_cast<char>(c);
  }
  out += '"';
}

std::string Engine::stats_json() const {
  std::string out = "{\"service\": {\"backend_up\": 1, \"requests\": " + std::to_string(requests_.load()) +
                    ", \"unknown_descriptors\": " + std::to_string(unknown_.load()) + "}, \"limits\": {";
  std::lock_guard<std::mutex> g(stats_mu_);
  bool first = true;
  for (const auto& [id, m] : limit_stats_) {
    if (!m->touched.load()) continue;
    if (!first) out += ", ";
    first = false;
    json_str(out, id);
    char b[64];
    snprintf(b, sizeof b, "%.17g", m->delay_seconds.load());
    out += ": {\"total_hits\": " + std::to_string(m->total_hits.load()) +
           ", \"within_limit\": " + std::to_string(m->within_limit.load()) +
           ", \"over_limit\": " + std::to_string(m->over_limit.load()) +
           ", \"near_limit\": " + std::to_string(m->near_limit.load()) +
           ", \"shadow_mode\": " + std::to_string(m->shadow_mode.load()) +
           ", \"delayed\": " + std::to_string(m->delayed.load()) + ", \"delay_seconds\": " + b +
           ", \"failure_mode_allowed\": 0, \"failure_mode_denied\": 0}";
  }
  out += "}}";
  return out;
}

}  // namespace mizzen
