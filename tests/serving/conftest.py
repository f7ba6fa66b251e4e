"""One exported model for every serving test."""

import pytest

from tests.serving.exported_model import make_exported_model


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    return make_exported_model(tmp_path_factory.mktemp("exported"))
