"""TLS from an SSLConfig file, with a self-signed certificate made by the openssl CLI."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from google.protobuf import text_format

from serving import errors
from serving.client import Client
from serving.config_files import SSLConfig
from serving.server import ServerProcess
from tests.serving.exported_model import MODEL_NAME, assert_same_top5, expected_top5

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "server.key", directory / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    config = directory / "ssl_config.txt"
    config.write_text(text_format.MessageToString(
        SSLConfig(server_key=key.read_text(), server_cert=cert.read_text())))
    return cert, config


@pytest.fixture(scope="module")
def tls_server(exported, certificate):
    _, config = certificate
    with ServerProcess(exported.model_dir, MODEL_NAME, f"--ssl_config_file={config}",
                       "--file_system_poll_wait_seconds=0") as process:
        yield process


def test_tls_client_gets_the_top5_and_plaintext_is_refused(tls_server, certificate, exported):
    cert, _ = certificate
    image = next(iter(exported.images.values()))
    with Client(tls_server.address, MODEL_NAME, root_certificates=cert, timeout=60) as client:
        assert_same_top5(client.classify([image]),
                         expected_top5(exported.model, [image]))
        assert client.health() == "SERVING"
    with Client(tls_server.address, MODEL_NAME, retries=0, timeout=10) as plaintext, \
            pytest.raises(errors.UnavailableError):
        plaintext.classify([image])
