// mizzen-rls: the native in-memory rate-limit service (envoy.service.ratelimit.v3.RateLimitService) and its load
// client. Started and supervised by `mizzen ratelimit --engine native|auto` (src/mizzen/server/ratelimit_native.py),
// which compiles the RateLimit resources into a JSON table, writes it atomically and sends SIGHUP on change.
//
//   mizzen-rls --table FILE --listen ADDR [--listen ADDR] [--threads N] [--die-with-parent]
//       ADDR: HOST:PORT or unix:/path. SIGHUP: reload FILE (a bad file keeps the last table). SIGTERM/SIGINT: stop.
//       Also serves mizzen.rls.v1.Admin/Stats (the counters as JSON) on the same listeners.
//   mizzen-rls --replay --table FILE   (tests: stdin "<now> <hex request>" lines → stdout hex responses)
//   mizzen-rls --bench --target ADDR [--streams N] [--rate R] [--seconds S] [--max-requests N] [--limit ID] [--keys N]
//       N concurrent ShouldRateLimit calls on one HTTP/2 connection (closed loop), or with --rate one call every
//       1/R s (open loop, at most N in flight); prints one JSON line (count, p50, p99).
#include <absl/synchronization/mutex.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "engine.h"
#include "mizzen.grpc.pb.h"
#include "rls.grpc.pb.h"

namespace rl = envoy::service::ratelimit::v3;
namespace mz = mizzen::rls::v1;

static void logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf(const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "mizzen-rls: %s\n", buf);
  fflush(stderr);
}

// ------------------------------------------------------------------------------------------------ server

struct Tag {
  virtual ~Tag() = default;
  virtual void proceed(bool ok) = 0;
};

class RlsCall : public Tag {
 public:
  RlsCall(rl::RateLimitService::AsyncService* svc, grpc::ServerCompletionQueue* cq, mizzen::Engine* engine)
      : svc_(svc), cq_(cq), engine_(engine), responder_(&ctx_) {
    svc_->RequestShouldRateLimit(&ctx_, &req_, &responder_, cq_, cq_, this);
  }
  void proceed(bool ok) override {
    if (!answered_ && ok) {
      new RlsCall(svc_, cq_, engine_);
      engine_->handle(req_, &resp_);
      answered_ = true;
      responder_.Finish(resp_, grpc::Status::OK, this);
      return;
    }
    delete this;
  }

 private:
  rl::RateLimitService::AsyncService* svc_;
  grpc::ServerCompletionQueue* cq_;
  mizzen::Engine* engine_;
  grpc::ServerContext ctx_;
  rl::RateLimitRequest req_;
  rl::RateLimitResponse resp_;
  grpc::ServerAsyncResponseWriter<rl::RateLimitResponse> responder_;
  bool answered_ = false;
};

class StatsCall : public Tag {
 public:
  StatsCall(mz::Admin::AsyncService* svc, grpc::ServerCompletionQueue* cq, mizzen::Engine* engine)
      : svc_(svc), cq_(cq), engine_(engine), responder_(&ctx_) {
    svc_->RequestStats(&ctx_, &req_, &responder_, cq_, cq_, this);
  }
  void proceed(bool ok) override {
    if (!answered_ && ok) {
      new StatsCall(svc_, cq_, engine_);
      mz::StatsReply reply;
      reply.set_json(engine_->stats_json());
      answered_ = true;
      responder_.Finish(reply, grpc::Status::OK, this);
      return;
    }
    delete this;
  }

 private:
  mz::Admin::AsyncService* svc_;
  grpc::ServerCompletionQueue* cq_;
  mizzen::Engine* engine_;
  grpc::ServerContext ctx_;
  mz::StatsRequest req_;
  grpc::ServerAsyncResponseWriter<mz::StatsReply> responder_;
  bool answered_ = false;
};

static int serve(const std::string& table_path, const std::vector<std::string>& listens, int threads,
                 int calls_per_thread) {
  mizzen::Engine engine;
  std::string err = engine.load(table_path);
  if (!err.empty()) {
    logf("%s", err.c_str());
    return 2;
  }
  logf("table loaded: %zu limit(s), version %s", engine.table()->limits.size(), engine.table()->version.c_str());

  rl::RateLimitService::AsyncService rls;
  mz::Admin::AsyncService admin;
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 10000);
  for (const auto& l : listens) {
    if (l.rfind("unix:", 0) == 0) unlink(l.c_str() + 5);
    builder.AddListeningPort(l, grpc::InsecureServerCredentials());
  }
  builder.RegisterService(&rls);
  builder.RegisterService(&admin);
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;
  for (int i = 0; i < threads; i++) cqs.push_back(builder.AddCompletionQueue());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    logf("cannot listen on the given address(es)");
    return 3;
  }
  for (const auto& l : listens)
    if (l.rfind("unix:", 0) == 0) chmod(l.c_str() + 5, 0666);  // sidecars run Envoy as uid 1337
  std::string where;
  for (const auto& l : listens) where += (where.empty() ? "" : ", ") + l;
  logf("rate-limit service on %s (native, in memory, %d thread(s))", where.c_str(), threads);

  std::vector<std::thread> workers;
  for (int i = 0; i < threads; i++) {
    grpc::ServerCompletionQueue* cq = cqs[i].get();
    for (int k = 0; k < calls_per_thread; k++) new RlsCall(&rls, cq, &engine);
    new StatsCall(&admin, cq, &engine);
    workers.emplace_back([cq] {
      void* tag;
      bool ok;
      while (cq->Next(&tag, &ok)) static_cast<Tag*>(tag)->proceed(ok);
    });
  }

  // signals are blocked in every thread (main blocked them first); this one takes them
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      std::string e = engine.load(table_path);
      if (e.empty())
        logf("table reloaded: %zu limit(s), version %s", engine.table()->limits.size(),
             engine.table()->version.c_str());
      else
        logf("reload failed, keeping the last limits: %s", e.c_str());
      continue;
    }
    break;
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  for (auto& cq : cqs) cq->Shutdown();
  for (auto& w : workers) w.join();
  logf("rate-limit service stopped");
  return 0;
}

// ------------------------------------------------------------------------------------------------ bench client

struct BenchCall {
  grpc::ClientContext ctx;
  rl::RateLimitResponse resp;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<rl::RateLimitResponse>> rpc;
  std::chrono::steady_clock::time_point start;
};

static int bench(const std::string& target, int streams, double seconds, long max_requests, const std::string& limit,
                 int keys, double rate) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_MAX_CONCURRENT_STREAMS, 10000);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    logf("cannot connect to %s", target.c_str());
    return 2;
  }
  auto stub = rl::RateLimitService::NewStub(channel);
  std::vector<rl::RateLimitRequest> reqs(keys);
  for (int i = 0; i < keys; i++) {
    reqs[i].set_domain("mizzen");
    auto* d = reqs[i].add_descriptors();
    auto* e = d->add_entries();
    e->set_key("mizzen_limit");
    e->set_value(limit);
    e = d->add_entries();
    e->set_key("header:x-user");
    e->set_value("user-" + std::to_string(i));
  }
  grpc::CompletionQueue cq;
  long sent = 0, done = 0, errors = 0, over = 0;
  std::vector<float> lat;
  lat.reserve(1 << 20);
  auto t0 = std::chrono::steady_clock::now();
  auto end = t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
  auto launch = [&]() {
    auto* c = new BenchCall;
    c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    c->start = std::chrono::steady_clock::now();
    c->rpc = stub->PrepareAsyncShouldRateLimit(&c->ctx, reqs[sent % keys], &cq);
    c->rpc->StartCall();
    c->rpc->Finish(&c->resp, &c->status, c);
    sent++;
  };
  long inflight = 0, late = 0;
  void* tag;
  bool ok;
  auto complete = [&](void* t, bool k, std::chrono::steady_clock::time_point now) {
    auto* c = static_cast<BenchCall*>(t);
    inflight--;
    if (k && c->status.ok()) {
      done++;
      if (c->resp.overall_code() == rl::RateLimitResponse::OVER_LIMIT) over++;
      lat.push_back(std::chrono::duration<float>(now - c->start).count());
    } else {
      errors++;
    }
    delete c;
  };
  if (rate <= 0) {  // closed loop: `streams` calls in flight, a new one as each completes
    for (int i = 0; i < streams && sent < max_requests; i++, inflight++) launch();
    while (inflight > 0 && cq.Next(&tag, &ok)) {
      auto now = std::chrono::steady_clock::now();
      complete(tag, ok, now);
      if (now < end && sent < max_requests) {
        launch();
        inflight++;
      }
    }
  } else {  // open loop: one call every 1/rate s whatever the answers do (at most `streams` in flight)
    const auto step = std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(1.0 / rate));
    auto next = std::chrono::steady_clock::now();
    for (;;) {
      auto now = std::chrono::steady_clock::now();
      while (next <= now && now < end && sent < max_requests) {
        if (inflight < streams) {
          launch();
          inflight++;
        } else {
          late++;  // the service is behind: this call is not sent (counted)
        }
        next += step;
      }
      if ((now >= end || sent >= max_requests) && inflight == 0) break;
      auto deadline = (now >= end || sent >= max_requests) ? now + std::chrono::seconds(10) : std::min(next, end);
      auto r = cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + (deadline - now));
      if (r == grpc::CompletionQueue::GOT_EVENT) complete(tag, ok, std::chrono::steady_clock::now());
      else if (r == grpc::CompletionQueue::SHUTDOWN) break;
      else if (now >= end && inflight > 0) break;  // 10 s without an answer after the end
    }
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto pct = [&](double p) -> double {
    if (lat.empty()) return -1;
    size_t i = std::min(lat.size() - 1, static_cast<size_t>(p * lat.size()));
    std::nth_element(lat.begin(), lat.begin() + i, lat.end());
    return lat[i] * 1000.0;
  };
  double p50 = pct(0.5), p99 = pct(0.99);
  printf("{\"requests\": %ld, \"errors\": %ld, \"over_limit\": %ld, \"not_sent\": %ld, \"seconds\": %.6f, "
         "\"rate\": %.1f, \"p50_ms\": %.4f, \"p99_ms\": %.4f}\n",
         done, errors, over, late, elapsed, done / elapsed, p50, p99);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return 0;
}

// ------------------------------------------------------------------------------------------------ replay

// --replay: the engine on a given clock, for tests. Each stdin line: "<now> <hex RateLimitRequest>"; each stdout
// line: the hex RateLimitResponse (or "ERR <why>"). The counters persist across lines, as in the service.
static int replay(const std::string& table_path) {
  mizzen::Engine engine;
  std::string err = engine.load(table_path);
  if (!err.empty()) {
    logf("%s", err.c_str());
    return 2;
  }
  auto unhex = [](const std::string& h, std::string* out) {
    if (h.size() % 2) return false;
    out->clear();
    for (size_t i = 0; i < h.size(); i += 2) {
      char b[3] = {h[i], h[i + 1], 0};
      char* end;
      long v = strtol(b, &end, 16);
      if (*end) return false;
      out->push_back(static_cast<char>(v));
    }
    return true;
  };
  static const char* digits = "0123456789abcdef";
  char* line = nullptr;
  size_t cap = 0;
  ssize_t n;
  rl::RateLimitRequest req;
  rl::RateLimitResponse resp;
  std::string bytes, out;
  while ((n = getline(&line, &cap, stdin)) > 0) {
    std::string l(line, n);
    while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
    size_t sp = l.find(' ');
    char* end = nullptr;
    double now = strtod(l.c_str(), &end);
    if (sp == std::string::npos || end != l.c_str() + sp || !unhex(l.substr(sp + 1), &bytes) ||
        !req.ParseFromString(bytes)) {
      printf("ERR bad line\n");
      continue;
    }
    engine.handle_at(req, &resp, now);
    bytes = resp.SerializeAsString();
    out.clear();
    for (unsigned char c : bytes) {
      out += digits[c >> 4];
      out += digits[c & 15];
    }
    printf("%s\n", out.c_str());
  }
  free(line);
  fflush(stdout);
  return 0;
}

// ------------------------------------------------------------------------------------------------ main

static void usage() {
  fprintf(stderr,
          "usage: mizzen-rls --table FILE --listen ADDR [--listen ADDR] [--threads N] [--die-with-parent]\n"
          "       mizzen-rls --bench --target ADDR [--streams N] [--seconds S] [--max-requests N] [--limit ID] "
          "[--keys N] [--rate R]\n");
}

int main(int argc, char** argv) {
  // block before any thread exists: every thread inherits the mask, the serving loop takes them with sigwait
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // Debian's abseil checks every Mutex acquisition for lock-order cycles (~3% of the serving CPU): off
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  std::string table, target, limit = "b/bench/tb";
  std::vector<std::string> listens;
  int threads = 1, streams = 64, keys = 1000, calls = 256;
  double seconds = 5, rate = 0;
  long max_requests = 10000000;
  bool is_bench = false, is_replay = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        exit(64);
      }
      return argv[++i];
    };
    if (a == "--table") table = next();
    else if (a == "--listen") listens.push_back(next());
    else if (a == "--threads") threads = std::max(1, atoi(next().c_str()));
    else if (a == "--calls") calls = std::max(1, atoi(next().c_str()));
    else if (a == "--die-with-parent") prctl(PR_SET_PDEATHSIG, SIGTERM);
    else if (a == "--bench") is_bench = true;
    else if (a == "--replay") is_replay = true;
    else if (a == "--target") target = next();
    else if (a == "--streams") streams = std::max(1, atoi(next().c_str()));
    else if (a == "--seconds") seconds = atof(next().c_str());
    else if (a == "--max-requests") max_requests = atol(next().c_str());
    else if (a == "--limit") limit = next();
    else if (a == "--rate") rate = atof(next().c_str());
    else if (a == "--keys") keys = std::max(1, atoi(next().c_str()));
    else if (a == "--version") {
      printf("mizzen-rls 1 (grpc %s)\n", grpc::Version().c_str());
      return 0;
    } else {
      usage();
      return 64;
    }
  }
  if (is_bench) {
    if (target.empty()) {
      usage();
      return 64;
    }
    return bench(target, streams, seconds, max_requests, limit, keys, rate);
  }
  if (is_replay && !table.empty()) return replay(table);
  if (table.empty() || listens.empty()) {
    usage();
    return 64;
  }
  return serve(table, listens, threads, calls);
}
