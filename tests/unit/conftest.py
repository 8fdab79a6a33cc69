import pytest

from llmcanary.builders import Owner


@pytest.fixture
def owner() -> Owner:
    return Owner(name="tiny", namespace="ml", uid="0000-uid")
