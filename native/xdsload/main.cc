// mizzen-xdsload: the native load worker of `mizzen bench xds --client native` (src/mizzen/bench/xds_native.py).
// A drop-in for the Python worker (`python -m mizzen.bench.xds_load worker`, class LoadStream): the same streams,
// subscriptions, ACKs, reconnects and JSON-lines protocol with the driver, in C++ so that the load client's own
// CPU (protobuf parsing, one asyncio task per stream) does not weigh on the figures it measures.
//
//   mizzen-xdsload XDS_ADDR delta|sotw START COUNT NODES_FILE
//     NODES_FILE: one line per stream START..START+COUNT-1, the hex of its serialized envoy.config.core.v3.Node
//     (id, cluster, metadata: written by the driver from the same Proxy(...).node_metadata() as the Python worker).
//
// Each stream: one gRPC channel (its own TCP connection: a local subchannel pool), one ADS stream (Delta or SotW);
// like Envoy it subscribes to CDS and LDS (wildcard), then to EDS / RDS by the names the clusters / listeners
// name, and ACKs every response. A broken stream is reopened on a new channel after a random wait below an
// interval that starts at 0.5 s and doubles up to 5 s (reset by a response); a Delta stream resumes with
// initial_resource_versions. Responses are read as raw bytes and summarized once per distinct response (the
// Python worker's _Summary: servers that share responses send every stream the same bytes), so the client's CPU
// goes to the protocol. Times are CLOCK_MONOTONIC (Python's time.monotonic), CPU is the process's.
//
// stdout (JSON lines): {"event":"started","t":T}, {"event":"progress",...} every 2 s until every stream is
// synced, {"event":"synced","t0":T,"times":[...],"cpu":S,"reconnects":R}; then per stdin command
// {"cmd":"expect","address":A,"timeout":S} one {"event":"seen","address":A,"times":[...],"attempts":[...],
// "missing":M,"reconnects":R,"cpu":S} (A: an endpoint address of the watched cluster, or a route marker
// mzbench-N found in an RDS response's bytes); {"cmd":"stop"} (or stdin closed) ends the process.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <regex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "resources.pb.h"
#include "xds.grpc.pb.h"

namespace ds = envoy::service::discovery::v3;
namespace mx = mizzen::xdsload;

static const char* const CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
static const char* const EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
static const char* const LDS = "type.googleapis.com/envoy.config.listener.v3.Listener";
static const char* const RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
static constexpr double RETRY_BASE = 0.5, RETRY_MAX = 5.0;  // the sidecar bootstrap's ADS retry_back_off
static const char* const WATCH_SUFFIX = "|svc-0.default.svc.cluster.local";  // xds_load.WATCH_SERVICE

static double mono() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_seconds() {  // Python's time.process_time()
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static std::mutex out_mu;
static void emit(const std::string& line) {
  std::lock_guard<std::mutex> g(out_mu);
  fwrite(line.data(), 1, line.size(), stdout);
  fputc('\n', stdout);
  fflush(stdout);
}

static std::string jstr(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += c;
    }
  }
  return o + "\"";
}

static std::string jnum(double v) {
  char b[64];
  snprintf(b, sizeof b, "%.9f", v);
  return b;
}

static std::string jlist(const std::vector<double>& xs) {
  std::string o = "[";
  for (size_t i = 0; i < xs.size(); i++) o += (i ? ", " : "") + jnum(xs[i]);
  return o + "]";
}

// The value of "key" in a flat JSON object line (string or number), or "" (the driver's commands only).
static std::string jget(const std::string& line, const std::string& key) {
  size_t p = line.find("\"" + key + "\"");
  if (p == std::string::npos) return "";
  p = line.find(':', p + key.size() + 2);
  if (p == std::string::npos) return "";
  p++;
  while (p < line.size() && isspace(static_cast<unsigned char>(line[p]))) p++;
  std::string v;
  if (p < line.size() && line[p] == '"') {
    for (p++; p < line.size() && line[p] != '"'; p++) {
      if (line[p] == '\\' && p + 1 < line.size()) p++;
      v += line[p];
    }
  } else {
    while (p < line.size() && line[p] != ',' && line[p] != '}' && !isspace(static_cast<unsigned char>(line[p])))
      v += line[p++];
  }
  return v;
}

// Names are interned: every stream holds the same 1000s of cluster names, as ids.
using Id = uint32_t;
class Interner {
 public:
  Id id(const std::string& s) {
    {
      std::shared_lock<std::shared_mutex> g(mu_);
      auto it = ids_.find(s);
      if (it != ids_.end()) return it->second;
    }
    std::unique_lock<std::shared_mutex> g(mu_);
    auto it = ids_.find(s);
    if (it != ids_.end()) return it->second;
    Id i = static_cast<Id>(names_.size());
    names_.push_back(s);
    ids_.emplace(s, i);
    return i;
  }
  std::string name(Id i) {
    std::shared_lock<std::shared_mutex> g(mu_);
    return names_[i];
  }

 private:
  std::shared_mutex mu_;
  std::unordered_map<std::string, Id> ids_;
  std::deque<std::string> names_;
};
static Interner names;
static constexpr Id NONE = ~Id(0);

// Per-process caches: the same resource bytes arrive on every stream; parse them once (like xds_common._Parsers).
template <typename V>
class Cache {
 public:
  template <typename F>
  V get(const std::string& key, const std::string& bytes, F compute) {  // key: the bytes, or (name, version)
    {
      std::shared_lock<std::shared_mutex> g(mu_);
      auto it = m_.find(key);
      if (it != m_.end()) return it->second;
    }
    V v = compute(bytes);
    std::unique_lock<std::shared_mutex> g(mu_);
    if (m_.size() > 100000) m_.clear();
    m_.emplace(key, v);
    return v;
  }

 private:
  std::shared_mutex mu_;
  std::unordered_map<std::string, V> m_;
};

using IdSet = std::shared_ptr<const std::vector<Id>>;  // sorted, shared between streams
static Cache<Id> eds_cache, name_cache;
static Cache<IdSet> rds_cache;
static Cache<std::shared_ptr<const std::vector<std::string>>> addr_cache;

static Id eds_name_of(const std::string& key, const std::string& v) {  // EDS name a Cluster needs, NONE if not EDS
  return eds_cache.get(key, v, [](const std::string& b) {
    mx::Cluster c;
    c.ParseFromString(b);
    if (c.type() != 3) return NONE;
    const std::string& s = c.eds_cluster_config().service_name();
    return names.id(s.empty() ? c.name() : s);
  });
}

static IdSet rds_names_of(const std::string& key, const std::string& v) {
  return rds_cache.get(key, v, [](const std::string& b) {
    mx::Listener l;
    l.ParseFromString(b);
    std::vector<const mx::FilterChain*> chains;
    for (auto& fc : l.filter_chains()) chains.push_back(&fc);
    if (l.has_default_filter_chain()) chains.push_back(&l.default_filter_chain());
    std::set<Id> out;
    static const std::string hcm_suffix = "HttpConnectionManager";
    for (auto* fc : chains)
      for (auto& f : fc->filters()) {
        const std::string& t = f.typed_config().type_url();
        if (t.size() >= hcm_suffix.size() && t.compare(t.size() - hcm_suffix.size(), hcm_suffix.size(), hcm_suffix) == 0) {
          mx::HttpConnectionManager h;
          h.ParseFromString(f.typed_config().value());
          if (h.has_rds()) out.insert(names.id(h.rds().route_config_name()));
        }
      }
    return std::make_shared<const std::vector<Id>>(out.begin(), out.end());
  });
}

static std::shared_ptr<const std::vector<std::string>> addresses_of(const std::string& v) {
  return addr_cache.get(v, v, [](const std::string& b) {
    mx::ClusterLoadAssignment cla;
    cla.ParseFromString(b);
    std::set<std::string> out;
    for (auto& le : cla.endpoints())
      for (auto& lb : le.lb_endpoints()) out.insert(lb.endpoint().address().socket_address().address());
    return std::make_shared<const std::vector<std::string>>(out.begin(), out.end());
  });
}

static Id name_of(const std::string& type, const std::string& v) {  // SotW: a resource's name from its bytes
  return name_cache.get(v, v, [&type](const std::string& b) {
    std::string n;
    if (type == CDS) {
      mx::Cluster c;
      c.ParseFromString(b);
      n = c.name();
    } else if (type == EDS) {
      mx::ClusterLoadAssignment c;
      c.ParseFromString(b);
      n = c.cluster_name();
    } else if (type == LDS) {
      mx::Listener c;
      c.ParseFromString(b);
      n = c.name();
    } else {
      mx::RouteConfiguration c;
      c.ParseFromString(b);
      n = c.name();
    }
    return names.id(n);
  });
}

static std::vector<std::string> markers_in(const std::string& v) {  // route markers: mzbench-[0-9]+
  std::vector<std::string> out;
  static const std::string pre = "mzbench-";
  for (size_t p = v.find(pre); p != std::string::npos; p = v.find(pre, p + 1)) {
    size_t e = p + pre.size();
    while (e < v.size() && isdigit(static_cast<unsigned char>(v[e]))) e++;
    if (e > p + pre.size()) out.push_back(v.substr(p, e - p));
  }
  return out;
}

// A one-shot timer thread (reconnect back-off).
class Timers {
 public:
  Timers() : th_([this] { loop(); }) {}
  void after(double s, std::function<void()> f) {
    std::lock_guard<std::mutex> g(mu_);
    q_.push({mono() + s, seq_++, std::move(f)});
    cv_.notify_one();
  }

 private:
  struct Item {
    double at;
    uint64_t seq;
    std::function<void()> f;
    bool operator<(const Item& o) const { return at > o.at || (at == o.at && seq > o.seq); }
  };
  void loop() {
    std::unique_lock<std::mutex> g(mu_);
    for (;;) {
      if (q_.empty()) {
        cv_.wait(g);
        continue;
      }
      double wait = q_.top().at - mono();
      if (wait > 0) {
        cv_.wait_for(g, std::chrono::duration<double>(wait));
        continue;
      }
      auto f = q_.top().f;
      q_.pop();
      g.unlock();
      f();
      g.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Item> q_;
  uint64_t seq_ = 0;
  std::thread th_;
};

struct Worker;
static Worker* the_worker = nullptr;
static bool w_is_watched(const std::string& n);

// One simulated Envoy (xds_load.LoadStream).
struct Stream {
  Worker* w;
  int index;
  std::string node;  // serialized envoy.config.core.v3.Node
  std::mutex mu;
  std::map<std::string, std::unordered_map<Id, Id>> versions;  // Delta: type -> name -> version held
  std::unordered_map<Id, Id> clusters;                         // cluster name -> eds name (NONE: not EDS)
  std::unordered_map<Id, IdSet> listeners;                     // listener name -> rds names
  std::vector<Id> eds_names, rds_names;                        // sorted
  std::unordered_set<Id> have_eds, have_rds;
  std::set<std::string> got;
  std::map<std::string, std::pair<std::string, std::string>> sotw_state;  // type -> (version_info, nonce)
  double synced_at = -1;
  std::unordered_set<std::string> seen;
  std::atomic<long> responses{0};
  double attempt_at = 0;
  double interval = RETRY_BASE;
  bool resume = false;
  std::shared_ptr<grpc::Channel> channel;
  std::shared_ptr<void> stub;  // a grpc::TemplatedGenericStub of the channel (requests as protos, responses raw)

  void reset() {
    versions.clear();
    clusters.clear();
    listeners.clear();
    eds_names.clear();
    rds_names.clear();
    have_eds.clear();
    have_rds.clear();
    got.clear();
    sotw_state.clear();
  }
  void open();
  void on_done(const grpc::Status& st);
  template <typename C>
  void on_response(C* call, const struct Summary& resp);
};

struct Worker {
  std::string xds;
  bool delta = true;
  std::vector<std::unique_ptr<Stream>> streams;
  Timers timers;
  std::mutex mu;
  std::condition_variable cv;
  int synced = 0;
  std::atomic<int> reconnects{0};
  std::map<std::string, std::vector<double>> seen_times, seen_attempts;
  std::mutex watch_mu;
  std::string watch_name;
  std::mt19937_64 rng{std::random_device{}()};
  std::mutex rng_mu;

  void on_synced() {
    std::lock_guard<std::mutex> g(mu);
    synced++;
    cv.notify_all();
  }
  void saw(const std::string& a, double now, double attempt_at) {
    std::lock_guard<std::mutex> g(mu);
    auto& lst = seen_times[a];
    lst.push_back(now);
    seen_attempts[a].push_back(attempt_at);
    if (lst.size() == streams.size()) cv.notify_all();
  }
  bool is_watched(const std::string& n) {
    std::lock_guard<std::mutex> g(watch_mu);
    if (!watch_name.empty()) return n == watch_name;
    size_t k = strlen(WATCH_SUFFIX);
    if (n.size() >= k && n.compare(n.size() - k, k, WATCH_SUFFIX) == 0) {
      watch_name = n;
      return true;
    }
    return false;
  }
  double random01() {
    std::lock_guard<std::mutex> g(rng_mu);
    return std::uniform_real_distribution<double>(0, 1)(rng);
  }
};

// One ADS call (one attempt of a Stream): a callback reactor with a write queue (one write in flight).
template <typename Req, typename Resp>
class Call : public grpc::ClientBidiReactor<Req, grpc::ByteBuffer> {
 public:
  explicit Call(Stream* s) : s_(s) {}
  grpc::ClientContext ctx;
  grpc::ByteBuffer resp;  // raw: parsed once per distinct response (summary_of)

  void Write(Req r) {
    Req* next = nullptr;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (failed_) return;
      q_.push_back(std::move(r));
      if (writing_) return;
      writing_ = true;
      next = &q_.front();
    }
    this->StartWrite(next);
  }
  void Begin() {
    this->StartRead(&resp);
    this->StartCall();
  }
  void OnWriteDone(bool ok) override {
    Req* next = nullptr;
    {
      std::lock_guard<std::mutex> g(mu_);
      q_.pop_front();
      if (!ok) {
        failed_ = true;
        q_.clear();
        writing_ = false;
        return;
      }
      if (q_.empty()) {
        writing_ = false;
        return;
      }
      next = &q_.front();
    }
    this->StartWrite(next);
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    on_read(this);
    this->StartRead(&resp);
  }
  static void on_read(Call* c);
  void OnDone(const grpc::Status& st) override {
    Stream* s = s_;
    delete this;
    s->on_done(st);
  }

 private:
  Stream* s_;
  std::mutex mu_;
  std::deque<Req> q_;
  bool writing_ = false, failed_ = false;
};

using DeltaCall = Call<ds::DeltaDiscoveryRequest, ds::DeltaDiscoveryResponse>;
using SotwCall = Call<ds::DiscoveryRequest, ds::DiscoveryResponse>;
static bool w_is_watched(const std::string& n) { return the_worker->is_watched(n); }

static ds::DeltaDiscoveryRequest delta_req(const std::string& type, const std::vector<Id>& sub = {},
                                           const std::vector<Id>& unsub = {}, const std::string& nonce = "",
                                           const std::unordered_map<Id, Id>* initial = nullptr,
                                           const std::vector<Id>* only = nullptr) {
  ds::DeltaDiscoveryRequest r;
  r.set_type_url(type);
  for (Id i : sub) r.add_resource_names_subscribe(names.name(i));
  for (Id i : unsub) r.add_resource_names_unsubscribe(names.name(i));
  r.set_response_nonce(nonce);
  if (initial)
    for (auto& [n, v] : *initial)
      if (!only || std::binary_search(only->begin(), only->end(), n))
        (*r.mutable_initial_resource_versions())[names.name(n)] = names.name(v);
  return r;
}

static ds::DiscoveryRequest sotw_req(const std::string& type, const std::vector<Id>& ns, const std::string& nonce,
                                     const std::string& version) {
  ds::DiscoveryRequest r;
  r.set_type_url(type);
  std::vector<std::string> sorted;
  for (Id i : ns) sorted.push_back(names.name(i));
  std::sort(sorted.begin(), sorted.end());
  for (auto& n : sorted) r.add_resource_names(n);
  r.set_response_nonce(nonce);
  r.set_version_info(version);
  return r;
}

void Stream::open() {
  std::lock_guard<std::mutex> g(mu);
  if (!(resume && w->delta)) reset();
  if (!channel) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // its own subchannel: its own TCP connection
    args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, -1);
    channel = grpc::CreateCustomChannel(w->xds, grpc::InsecureChannelCredentials(), args);
  }
  attempt_at = mono();
  if (w->delta) {
    auto* c = new DeltaCall(this);
    auto st = std::make_shared<grpc::TemplatedGenericStub<ds::DeltaDiscoveryRequest, grpc::ByteBuffer>>(channel);
    stub = st;
    st->PrepareBidiStreamingCall(&c->ctx, "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
                                 grpc::StubOptions(), c);
    if (resume) {  // keep the config; subscribe again to everything held, with the versions held
      auto r = delta_req(CDS, {}, {}, "", &versions[CDS]);
      r.set_node(node);
      c->Write(std::move(r));
      c->Write(delta_req(LDS, {}, {}, "", &versions[LDS]));
      if (!eds_names.empty()) c->Write(delta_req(EDS, eds_names, {}, "", &versions[EDS], &eds_names));
      if (!rds_names.empty()) c->Write(delta_req(RDS, rds_names, {}, "", &versions[RDS], &rds_names));
    } else {
      auto r = delta_req(CDS);
      r.set_node(node);
      c->Write(std::move(r));
      c->Write(delta_req(LDS));
    }
    resume = true;
    c->Begin();
  } else {
    auto* c = new SotwCall(this);
    auto st = std::make_shared<grpc::TemplatedGenericStub<ds::DiscoveryRequest, grpc::ByteBuffer>>(channel);
    stub = st;
    st->PrepareBidiStreamingCall(&c->ctx, "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                                 grpc::StubOptions(), c);
    auto r = sotw_req(CDS, {}, "", "");
    r.set_node(node);
    c->Write(std::move(r));
    c->Write(sotw_req(LDS, {}, "", ""));
    resume = true;
    c->Begin();
  }
}

void Stream::on_done(const grpc::Status& st) {
  int n = ++w->reconnects;
  if (n <= 3)
    fprintf(stderr, "stream %d: %s; reconnecting\n", index,
            st.ok() ? "ended by the server" : ("status " + std::to_string(st.error_code()) + ": " + st.error_message()).c_str());
  double wait;
  std::shared_ptr<grpc::Channel> old_channel;
  std::shared_ptr<void> old_stub;
  {
    std::lock_guard<std::mutex> g(mu);
    old_stub = std::move(stub);
    old_channel = std::move(channel);
    wait = w->random01() * interval;
    interval = std::min(2 * interval, RETRY_MAX);
  }
  // The old channel is released on the timer thread, not here: this runs on a thread of the channel's callback
  // completion queue, and the last channel's release shuts that queue down (done on its own thread, grpc 1.51
  // frees it twice: ASan saw it when every stream of a worker broke at once, a control-plane restart).
  w->timers.after(wait, [this, old_channel, old_stub]() mutable {
    old_stub.reset();
    old_channel.reset();
    open();
  });
}

static bool subset(const std::vector<Id>& want, const std::unordered_set<Id>& have) {
  for (Id i : want)
    if (!have.count(i)) return false;
  return true;
}

static std::vector<Id> minus(const std::vector<Id>& a, const std::vector<Id>& b) {
  std::vector<Id> o;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(o));
  return o;
}

// What a stream needs from one response, computed once per distinct response bytes in the process (like the
// Python worker's _Summary): servers that share responses send the same bytes to every stream, so the client's
// CPU goes to the protocol, not to parsing identical messages again.
struct Summary {
  struct Item {
    Id name;
    Id version;    // Delta; NONE in SotW
    Id eds;        // CDS: the EDS name it needs (NONE: not EDS)
    IdSet rds;     // LDS: the route names its HTTP connection managers name
  };
  bool delta = true;
  std::string type_url, nonce, version_info;
  std::vector<Item> items;
  std::vector<Id> removed;
  std::vector<std::string> watched;  // EDS: the watched cluster's addresses; RDS: route markers
};
using SummaryPtr = std::shared_ptr<const Summary>;

template <typename R>
static SummaryPtr summarize(const std::string& bytes) {
  constexpr bool delta = std::is_same<R, ds::DeltaDiscoveryResponse>::value;
  R resp;
  resp.ParseFromString(bytes);
  auto s = std::make_shared<Summary>();
  s->delta = delta;
  s->type_url = resp.type_url();
  s->nonce = resp.nonce();
  const std::string& t = s->type_url;
  std::vector<std::pair<Summary::Item, const std::string*>> items;
  if constexpr (delta) {
    for (auto& r : resp.resources())
      items.push_back({{names.id(r.name()), names.id(r.version()), NONE, nullptr}, &r.resource().value()});
    for (auto& n : resp.removed_resources()) s->removed.push_back(names.id(n));
  } else {
    s->version_info = resp.version_info();
    for (auto& a : resp.resources()) items.push_back({{name_of(t, a.value()), NONE, NONE, nullptr}, &a.value()});
  }
  std::set<std::string> watched;
  for (auto& [it, value] : items) {
    if (t == CDS) {
      it.eds = eds_name_of(*value, *value);
    } else if (t == LDS) {
      it.rds = rds_names_of(*value, *value);
    } else if (t == EDS) {
      if (w_is_watched(names.name(it.name))) {
        auto addrs = addresses_of(*value);
        watched.insert(addrs->begin(), addrs->end());
      }
    } else if (t == RDS) {
      for (auto& m : markers_in(*value)) watched.insert(m);
    }
    s->items.push_back(it);
  }
  s->watched.assign(watched.begin(), watched.end());
  return s;
}

static std::mutex summaries_mu;
static std::unordered_map<std::string, SummaryPtr> summaries;  // response bytes -> summary (bounded)

template <typename R>
static SummaryPtr summary_of(const grpc::ByteBuffer& buf) {
  grpc::Slice slice;
  buf.DumpToSingleSlice(&slice);
  std::string bytes(reinterpret_cast<const char*>(slice.begin()), slice.size());
  {
    std::lock_guard<std::mutex> g(summaries_mu);
    auto it = summaries.find(bytes);
    if (it != summaries.end()) return it->second;
  }
  SummaryPtr s = summarize<R>(bytes);
  std::lock_guard<std::mutex> g(summaries_mu);
  if (summaries.size() > 64) summaries.clear();
  summaries.emplace(std::move(bytes), s);
  return s;
}

template <typename C>
void Stream::on_response(C* call, const Summary& resp) {
  constexpr bool delta = std::is_same<C, DeltaCall>::value;
  double now = mono();
  responses++;
  std::lock_guard<std::mutex> g(mu);
  interval = RETRY_BASE;
  const std::string& t = resp.type_url;
  got.insert(t);
  bool full = !delta;  // SotW: CDS/LDS carry the full set
  if constexpr (delta) {
    auto& held = versions[t];
    for (auto& it : resp.items) held[it.name] = it.version;
    for (Id n : resp.removed) held.erase(n);
  }
  const std::vector<Id>& removed = resp.removed;
  if (t == CDS || t == LDS) {
    bool cds = t == CDS;
    if (cds) {
      if (full) clusters.clear();
      for (Id n : removed) clusters.erase(n);
      for (auto& it : resp.items) clusters[it.name] = it.eds;
    } else {
      if (full) listeners.clear();
      for (Id n : removed) listeners.erase(n);
      for (auto& it : resp.items) listeners[it.name] = it.rds;
    }
    std::set<Id> want_set;
    if (cds) {
      for (auto& [n, e] : clusters)
        if (e != NONE) want_set.insert(e);
    } else {
      for (auto& [n, rs] : listeners) want_set.insert(rs->begin(), rs->end());
    }
    std::vector<Id> want(want_set.begin(), want_set.end());
    std::vector<Id>& old = cds ? eds_names : rds_names;
    const char* sub_type = cds ? EDS : RDS;
    if (want != old) {
      if constexpr (delta) {
        call->Write(delta_req(sub_type, minus(want, old), minus(old, want)));
      } else {
        auto st = sotw_state.count(sub_type) ? sotw_state[sub_type] : std::make_pair(std::string(), std::string());
        call->Write(sotw_req(sub_type, want, st.second, st.first));
      }
    }
    old = want;
    auto& have = cds ? have_eds : have_rds;
    for (auto it = have.begin(); it != have.end();)
      it = std::binary_search(want.begin(), want.end(), *it) ? std::next(it) : have.erase(it);
  } else if (t == EDS || t == RDS) {
    auto& have = t == EDS ? have_eds : have_rds;
    for (auto& it : resp.items) have.insert(it.name);
    for (auto& a : resp.watched)
      if (seen.insert(a).second) w->saw(a, now, attempt_at);
    if (t == EDS)
      for (Id n : removed) have_eds.erase(n);
  }
  // ACK
  if constexpr (delta) {
    call->Write(delta_req(t, {}, {}, resp.nonce));
  } else {
    sotw_state[t] = {resp.version_info, resp.nonce};
    static const std::vector<Id> none;
    const std::vector<Id>& ns = t == EDS ? eds_names : t == RDS ? rds_names : none;
    call->Write(sotw_req(t, ns, resp.nonce, resp.version_info));
  }
  if (synced_at < 0 && got.count(CDS) && got.count(LDS) && subset(eds_names, have_eds) && subset(rds_names, have_rds)) {
    synced_at = now;
    w->on_synced();
  }
}

template <typename Req, typename Resp>
void Call<Req, Resp>::on_read(Call* c) {
  SummaryPtr s = summary_of<Resp>(c->resp);
  c->s_->on_response(c, *s);
}

static std::string unhex(const std::string& h) {
  std::string o;
  for (size_t i = 0; i + 1 < h.size(); i += 2) o += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return o;
}

static const char* state_name(grpc_connectivity_state s) {
  switch (s) {
    case GRPC_CHANNEL_IDLE: return "ChannelConnectivity.IDLE";
    case GRPC_CHANNEL_CONNECTING: return "ChannelConnectivity.CONNECTING";
    case GRPC_CHANNEL_READY: return "ChannelConnectivity.READY";
    case GRPC_CHANNEL_TRANSIENT_FAILURE: return "ChannelConnectivity.TRANSIENT_FAILURE";
    default: return "ChannelConnectivity.SHUTDOWN";
  }
}

int main(int argc, char** argv) {
  if (argc != 6 || (strcmp(argv[2], "delta") && strcmp(argv[2], "sotw"))) {
    fprintf(stderr, "usage: mizzen-xdsload XDS_ADDR delta|sotw START COUNT NODES_FILE\n");
    return 2;
  }
  Worker w;
  the_worker = &w;
  w.xds = argv[1];
  w.delta = !strcmp(argv[2], "delta");
  int start = atoi(argv[3]), count = atoi(argv[4]);
  FILE* f = fopen(argv[5], "r");
  if (!f) {
    perror(argv[5]);
    return 2;
  }
  std::vector<std::string> nodes;
  {
    std::string line;
    int c;
    while ((c = fgetc(f)) != EOF) {
      if (c == '\n') {
        nodes.push_back(unhex(line));
        line.clear();
      } else {
        line += static_cast<char>(c);
      }
    }
    if (!line.empty()) nodes.push_back(unhex(line));
    fclose(f);
  }
  if (static_cast<int>(nodes.size()) != count) {
    fprintf(stderr, "%s: %zu nodes for %d streams\n", argv[5], nodes.size(), count);
    return 2;
  }
  for (int i = 0; i < count; i++) {
    auto s = std::make_unique<Stream>();
    s->w = &w;
    s->index = start + i;
    s->node = nodes[i];
    w.streams.push_back(std::move(s));
  }
  double t_start = mono();
  double cpu0 = cpu_seconds();
  for (auto& s : w.streams) s->open();
  emit("{\"event\": \"started\", \"t\": " + jnum(t_start) + "}");
  size_t n = w.streams.size();
  {
    std::unique_lock<std::mutex> g(w.mu);
    while (static_cast<size_t>(w.synced) < n) {
      if (w.cv.wait_for(g, std::chrono::seconds(2), [&] { return static_cast<size_t>(w.synced) >= n; })) break;
      long responses = 0, silent = 0;
      std::set<std::string> states;
      int synced = w.synced;
      g.unlock();
      for (auto& s : w.streams) {
        long r = s->responses;
        responses += r;
        if (r == 0) {
          silent++;
          std::lock_guard<std::mutex> sg(s->mu);
          if (s->channel) states.insert(state_name(s->channel->GetState(false)));
        }
      }
      std::string st = "[";
      for (auto& x : states) st += (st.size() > 1 ? ", " : "") + jstr(x);
      emit("{\"event\": \"progress\", \"synced\": " + std::to_string(synced) + ", \"streams\": " + std::to_string(n) +
           ", \"responses\": " + std::to_string(responses) + ", \"reconnects\": " + std::to_string(w.reconnects.load()) +
           ", \"silent\": " + std::to_string(silent) + ", \"states\": " + st + "]}");
      g.lock();
    }
  }
  std::vector<double> times;
  for (auto& s : w.streams) {
    std::lock_guard<std::mutex> g(s->mu);
    times.push_back(s->synced_at);
  }
  emit("{\"event\": \"synced\", \"t0\": " + jnum(t_start) + ", \"times\": " + jlist(times) +
       ", \"cpu\": " + jnum(cpu_seconds() - cpu0) + ", \"reconnects\": " + std::to_string(w.reconnects.load()) + "}");
  std::string line;
  while (std::getline(std::cin, line)) {
    std::string cmd = jget(line, "cmd");
    if (cmd == "stop") break;
    if (cmd != "expect") continue;
    std::string addr = jget(line, "address");
    std::string to = jget(line, "timeout");
    double timeout = to.empty() ? 30 : atof(to.c_str());
    std::vector<double> ts, at;
    {
      std::unique_lock<std::mutex> g(w.mu);
      w.cv.wait_for(g, std::chrono::duration<double>(timeout), [&] { return w.seen_times[addr].size() >= n; });
      ts = w.seen_times[addr];
      at = w.seen_attempts[addr];
    }
    emit("{\"event\": \"seen\", \"address\": " + jstr(addr) + ", \"times\": " + jlist(ts) + ", \"attempts\": " +
         jlist(at) + ", \"missing\": " + std::to_string(static_cast<long>(n) - static_cast<long>(ts.size())) +
         ", \"reconnects\": " + std::to_string(w.reconnects.load()) + ", \"cpu\": " + jnum(cpu_seconds() - cpu0) + "}");
  }
  fflush(stdout);
  fflush(stderr);
  _exit(0);  // the server sees the connections close; nothing to tear down in this process
}
