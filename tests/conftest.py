import pytest


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*/out/*.yaml from the current translator output")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")
