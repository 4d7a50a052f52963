"""The cluster's certificates verify as the components will check them (openssl)."""

import subprocess

from localcluster import pki


def test_serving_and_client_certificates_chain_to_the_cluster_ca(tmp_path):
    ca = pki.Authority(tmp_path / "pki")
    serving = ca.issue("apiserver", common_name="kube-apiserver", server_names=("10.201.0.1", "kubernetes.default.svc"), client=False)
    client = ca.issue("kubelet", common_name="system:node:node1", organization="system:nodes")
    for pair, purpose in ((serving, "sslserver"), (client, "sslclient")):
        result = subprocess.run(["openssl", "verify", "-purpose", purpose, "-CAfile", str(ca.pair.cert), str(pair.cert)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    # A client certificate is not a serving one: the API server's would be refused as a client's.
    wrong = subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(ca.pair.cert), str(client.cert)],
                           capture_output=True, text=True)
    assert wrong.returncode != 0
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(serving.cert)], capture_output=True, text=True).stdout
    assert "IP Address:10.201.0.1" in text and "DNS:kubernetes.default.svc" in text
    subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(client.cert)], capture_output=True, text=True).stdout
    assert "O = system:nodes" in subject and "CN = system:node:node1" in subject


def test_keys_are_owner_only_and_reissue_keeps_the_existing_pair(tmp_path):
    ca = pki.Authority(tmp_path / "pki")
    first = ca.issue("admin", common_name="admin", organization="system:masters")
    assert first.key.stat().st_mode & 0o077 == 0
    assert ca.pair.key.stat().st_mode & 0o077 == 0
    before = first.cert.read_bytes()
    again = ca.issue("admin", common_name="admin", organization="system:masters")
    assert again.cert.read_bytes() == before
    # A second Authority on the same directory is the same CA, not a new one.
    assert pki.Authority(tmp_path / "pki").pair.cert.read_bytes() == ca.pair.cert.read_bytes()
