"""`python -m mizzen.agent --config agent.json` (same as `mizzen agent`)."""
from .commands import agent

if __name__ == "__main__":
    agent(prog_name="mizzen agent")
