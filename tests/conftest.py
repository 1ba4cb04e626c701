import os

import pytest

# The processes tests start (a mesh's runner, agents, control planes) run in other working directories: with a
# relative PYTHONPATH (`PYTHONPATH=src pytest ...` from a worktree) they would import the mizzen the venv has
# installed -- another checkout's -- and test its agent, not this tree's. Make it absolute for every child.
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) if p else p
                                               for p in os.environ["PYTHONPATH"].split(os.pathsep))


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*/out/*.yaml from the current translator output")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")
