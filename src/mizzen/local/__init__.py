"""`mizzen up`: a whole mesh on one machine (docs/internals.md, "The runner").

runner.py wires the parts: table.py (state, lock, pure status_of) ← supervisor.py (observe, restart) and
operations.py (orderly stops, rollout, scale, upgrade; explicit collaborators typed in protocols.py:
launcher.py for processes, network.py for namespaces or loopback ports, mizzen.client for the control plane),
reconcile.py (follow the store's Workloads), control.py (runner.sock). commands.py holds the click commands.
"""
