"""The sidecar agent (`mizzen agent --config <state>/pods/<pod>/agent.json`).

config.py (agent.json: the `AgentConfig` the runner writes) -> bootstrap.py (pure: Envoy bootstrap) ->
envoy.py (the Envoy process) -> health.py (readiness, :15020/healthz/ready) -> registration.py (the
instance it registers; waiting for the app) -> main.py (the loop, control socket, drain) -> commands.py
(the click command). It talks to the control plane and to Envoy's admin through `mizzen.client.aio`.
"""
