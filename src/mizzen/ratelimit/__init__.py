"""Rate limiting: pure algorithms with an injected clock (algorithms.py, priority.py), the table of global
limits and the descriptor scheme (table.py), the decision engine (engine.py), the in-memory counters
(memory.py), stats and the Lua mirror of the algorithms for Redis (lua.py). The gRPC service that uses them
is `server/ratelimit.py` (`mizzen ratelimit`)."""
