"""The sidecar agent (`mizzen agent --config <state>/pods/<pod>/agent.json`).

config.py (agent.json) -> bootstrap.py (pure: Envoy bootstrap) -> envoy.py (process + admin client) ->
health.py (readiness, :15020/healthz/ready) -> registration.py (REST API) -> main.py (the loop, drain) ->
commands.py (the click command).
"""
