"""The PKI and the TLS contexts, checked with real handshakes over loopback sockets."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509

from ecoin.common import crypto, keyfiles, tls
from ecoin.protocol import session
from ecoin.testing.servers import Mosquitto
from ecoin.tools import pki as pki_tool

REPO = Path(__file__).resolve().parents[2]


def ctx_for(pki_dir: Path, role: str, name: str, *, server: bool) -> ssl.SSLContext:
    cert, key = keyfiles.leaf_paths(pki_dir, role, name)
    make = tls.server_context if server else tls.client_context
    return make(cert, key, pki_dir / "ca.crt")


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "localhost") -> dict:
    """One TLS exchange over loopback. Returns what each side saw: the peer (name, role) and
    the bytes the client received, or the error each side hit."""
    seen: dict = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            conn.settimeout(10)
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as s:
                    seen["server_peer"] = tls.peer_identity(s) if s.getpeercert() else None
                    s.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                seen["server_error"] = exc
                conn.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=hostname) as s:
                    # TLS 1.3: the server judges our certificate after our handshake ends,
                    # so a refusal shows up on the first read.
                    seen["client_peer"] = tls.peer_identity(s)
                    seen["data"] = s.recv(2)
        except (ssl.SSLError, OSError) as exc:
            seen["client_error"] = exc
        finally:
            thread.join(10)
    return seen


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("other-pki")
    pki_tool.init(path)
    pki_tool.issue(path, "analyst", "alice")
    return path


def test_client_certificate_accepted_and_both_identities_read(pki: Path) -> None:
    seen = handshake(
        ctx_for(pki, "bank", "bank", server=True), ctx_for(pki, "analyst", "alice", server=False)
    )
    assert seen.get("data") == b"ok", seen
    assert seen["server_peer"] == ("alice", "analyst")
    assert seen["client_peer"] == ("bank", "bank")


def test_no_client_certificate_refused(pki: Path) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(pki / "ca.crt")
    seen = handshake(ctx_for(pki, "bank", "bank", server=True), anonymous)
    assert "data" not in seen or seen["data"] == b""
    assert "certificate" in str(seen["server_error"]).lower()


def test_require_client_false_lets_anonymous_in(pki: Path) -> None:
    cert, key = keyfiles.leaf_paths(pki, "bank", "bank")
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(pki / "ca.crt")
    seen = handshake(tls.server_context(cert, key, pki / "ca.crt", require_client=False), anonymous)
    assert seen.get("data") == b"ok" and seen["server_peer"] is None


def test_client_from_another_ca_refused(pki: Path, other_pki: Path) -> None:
    cert, key = keyfiles.leaf_paths(other_pki, "analyst", "alice")
    impostor = tls.client_context(cert, key, pki / "ca.crt")  # trusts our CA, cert from theirs
    seen = handshake(ctx_for(pki, "bank", "bank", server=True), impostor)
    assert seen.get("data") in (None, b"")
    assert "certificate verify failed" in str(seen["server_error"])


def test_server_from_another_ca_refused(pki: Path, other_pki: Path) -> None:
    seen = handshake(
        ctx_for(other_pki, "bank", "bank", server=True), ctx_for(pki, "analyst", "alice", server=False)
    )
    assert "certificate verify failed" in str(seen["client_error"])


def test_hostname_is_checked(pki: Path) -> None:
    seen = handshake(
        ctx_for(pki, "bank", "bank", server=True),
        ctx_for(pki, "analyst", "alice", server=False),
        "bank.example",
    )
    assert "Hostname mismatch" in str(seen["client_error"])


def test_extra_host_in_san(tmp_path: Path) -> None:
    pki_tool.init(tmp_path, hosts=["bank.example", "10.0.0.7"])
    san = x509.load_pem_x509_certificate((tmp_path / "bank" / "bank.crt").read_bytes()).extensions
    names = san.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "bank.example"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.0.0.7"]
    seen = handshake(
        ctx_for(tmp_path, "bank", "bank", server=True),
        ctx_for(tmp_path, "admin", "admin", server=False),
        "bank.example",
    )
    assert seen.get("data") == b"ok", seen


def test_client_certificate_cannot_serve(pki: Path) -> None:
    client = ctx_for(pki, "analyst", "bob", server=False)
    client.check_hostname = False  # client certs have no SAN: isolate the key-usage check
    seen = handshake(ctx_for(pki, "analyst", "alice", server=True), client)
    assert "unsuitable certificate purpose" in str(seen["client_error"])


def test_server_certificate_cannot_log_in(pki: Path) -> None:
    seen = handshake(
        ctx_for(pki, "bank", "bank", server=True), ctx_for(pki, "broker", "broker", server=False)
    )
    assert "unsuitable certificate purpose" in str(seen["server_error"])


def test_peer_identity_from_dict_and_errors() -> None:
    cert = {"subject": ((("organizationalUnitName", "gateway"),), (("commonName", "gw1"),))}
    assert tls.peer_identity(cert) == ("gw1", "gateway")
    with pytest.raises(tls.PeerIdentityError):
        tls.peer_identity({})
    with pytest.raises(tls.PeerIdentityError):
        tls.peer_identity({"subject": ((("commonName", "gw1"),),)})


def test_certificate_profiles(pki: Path) -> None:
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > dt.timedelta(days=3649)
    for role, name in [("bank", "bank"), ("broker", "broker"), ("analyst", "alice"), ("owner", "oscar")]:
        cert = x509.load_pem_x509_certificate(keyfiles.leaf_paths(pki, role, name)[0].read_bytes())
        ext = cert.extensions
        assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
        assert not ext.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
        eku = list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value)
        server = role in pki_tool.SERVER_ROLES
        assert eku == [
            x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        ]
        has_san = any(isinstance(e.value, x509.SubjectAlternativeName) for e in ext)
        assert has_san == server
        assert (
            dt.timedelta(days=729)
            < cert.not_valid_after_utc - cert.not_valid_before_utc
            < dt.timedelta(days=731)
        )


def test_private_keys_are_0600(pki: Path) -> None:
    keys = sorted(pki.rglob("*.key"))
    assert len(keys) == 1 + 4 + 5 + 1  # CA, init parties, fixture parties, coin key
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_private_keys_are_0600_even_with_open_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        pki_tool.init(tmp_path)
    finally:
        os.umask(old)
    assert {stat.S_IMODE(k.stat().st_mode) for k in tmp_path.rglob("*.key")} == {0o600}


def snapshot(path: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_init_rerun_keeps_everything_and_fills_gaps(tmp_path: Path) -> None:
    pki_tool.init(tmp_path)
    before = snapshot(tmp_path)
    report = pki_tool.init(tmp_path)
    assert all(line.startswith("kept") for line in report), report
    assert snapshot(tmp_path) == before
    for f in keyfiles.leaf_paths(tmp_path, "auditor", "auditor"):
        f.unlink()
    report = pki_tool.init(tmp_path)
    assert "created auditor/auditor" in report and "kept bank/bank" in report
    after = snapshot(tmp_path)
    assert {p: b for p, b in after.items() if "auditor" not in p.parts} == {
        p: b for p, b in before.items() if "auditor" not in p.parts
    }


def test_init_refuses_half_a_ca(tmp_path: Path) -> None:
    pki_tool.init(tmp_path)
    (tmp_path / "ca.key").unlink()
    with pytest.raises(keyfiles.PKIError, match="only one of ca.crt and ca.key"):
        pki_tool.init(tmp_path)


def test_issue_refuses_overwrite_unless_forced(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(keyfiles.PKIError, match="already exists"):
        pki_tool.issue(pki, "analyst", "alice")
    pki_tool.init(tmp_path)
    cert, key = pki_tool.issue(tmp_path, "gateway", "gw9")
    old_key = key.read_bytes()
    pki_tool.issue(tmp_path, "gateway", "gw9", force=True)
    assert key.read_bytes() != old_key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_names_are_unique_across_roles(pki: Path) -> None:
    with pytest.raises(keyfiles.PKIError, match="already used by role analyst"):
        pki_tool.issue(pki, "owner", "alice")


@pytest.mark.parametrize("name", ["", "a" * 33, "../x", "a b", "é"])
def test_issue_validates_names(pki: Path, name: str) -> None:
    with pytest.raises(keyfiles.PKIError, match="invalid name"):
        pki_tool.issue(pki, "analyst", name)


def test_issue_rejects_unknown_role_and_client_hosts(pki: Path) -> None:
    with pytest.raises(keyfiles.PKIError, match="unknown role"):
        pki_tool.issue(pki, "root", "x")
    with pytest.raises(keyfiles.PKIError, match="server roles"):
        pki_tool.issue(pki, "analyst", "carol", hosts=["example.org"])


def test_coin_key_json_matches_session_key_id(pki: Path) -> None:
    kid, (n, e) = keyfiles.load_coin_public(pki)
    meta = json.loads((pki / "coin" / f"{kid.hex()}.json").read_text())
    assert kid == session.key_id(crypto, int(meta["n"], 16)) and meta["kid"] == kid.hex()
    assert (pki / "coin" / "current").read_text().strip() == kid.hex()
    assert (n.bit_length(), e, meta["bits"]) == (2048, 65537, 2048)
    private = keyfiles.load_coin_private(pki)[kid]
    header = crypto.oaep_encrypt((n, e), b"coin", session.HEADER_LABEL)
    assert private.decrypt(header, crypto.oaep(session.HEADER_LABEL)) == b"coin"


def test_coin_key_rotation_3072(tmp_path: Path) -> None:
    pki_tool.init(tmp_path, coin_key_bits=3072)
    first, (n, _) = keyfiles.load_coin_public(tmp_path)
    assert n.bit_length() == 3072
    second = pki_tool.new_coin_key(tmp_path, 2048)
    assert keyfiles.load_coin_public(tmp_path)[0].hex() == second
    assert keyfiles.load_coin_public(tmp_path, first)[1][0] == n  # old key still loadable
    assert set(keyfiles.load_coin_private(tmp_path)) == {first, bytes.fromhex(second)}
    with pytest.raises(keyfiles.PKIError, match="bits"):
        pki_tool.new_coin_key(tmp_path, 1024)


def test_coin_private_refuses_readable_key(tmp_path: Path) -> None:
    pki_tool.init(tmp_path)
    key = next((tmp_path / "coin").glob("*.key"))
    key.chmod(0o644)
    with pytest.raises(keyfiles.PKIError, match="must be 0600"):
        keyfiles.load_coin_private(tmp_path)


def test_coin_public_detects_tampered_json(tmp_path: Path) -> None:
    pki_tool.init(tmp_path)
    kid = keyfiles.current_kid(tmp_path)
    path = tmp_path / "coin" / f"{kid}.json"
    meta = json.loads(path.read_text())
    meta["n"] = format(int(meta["n"], 16) + 2, "x")
    path.write_text(json.dumps(meta))
    with pytest.raises(keyfiles.PKIError, match="does not match"):
        keyfiles.load_coin_public(tmp_path)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("ecoin-pki")
    # The console script once the project is installed; the same main() by module otherwise.
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "ecoin.tools.pki"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli(tmp_path: Path) -> None:
    out = cli("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in ("init", "issue", "coin-key", "show"))
    out = cli("init", str(tmp_path), "--coin-key-bits", "2048")
    assert out.returncode == 0, out.stderr
    assert "created ca" in out.stdout and (tmp_path / "broker" / "broker.key").exists()
    assert cli("issue", str(tmp_path), "--role", "analyst", "--name", "carol").returncode == 0
    out = cli("issue", str(tmp_path), "--role", "analyst", "--name", "carol")
    assert out.returncode == 2 and "already exists" in out.stderr and "Traceback" not in out.stderr
    out = cli("issue", str(tmp_path), "--role", "analyst", "--name", "carol", "--force")
    assert out.returncode == 0 and "replaced analyst/carol" in out.stdout
    out = cli("coin-key", str(tmp_path), "--bits", "3072")
    assert out.returncode == 0 and "now current" in out.stdout
    out = cli("show", str(tmp_path))
    assert "analyst/carol" in out.stdout and "3072 bits" in out.stdout and "(current)" in out.stdout


def test_cli_names_a_broken_pki_instead_of_a_traceback(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki_tool.init(pki)
    ca = (pki / "ca.crt").read_bytes()

    def refused(*args: str) -> str:
        out = cli(*args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        return out.stderr

    (pki / "ca.crt").write_bytes((pki / "bank" / "bank.crt").read_bytes())  # the wrong certificate
    assert "is not the CA certificate of" in refused("issue", str(pki), "--role", "analyst", "--name", "zed")
    (pki / "ca.crt").write_bytes(b"garbage")
    assert f"{pki / 'ca.crt'}: not a PEM certificate" in refused("show", str(pki))
    assert "not a PEM certificate" in refused("issue", str(pki), "--role", "analyst", "--name", "zed")
    (pki / "ca.crt").write_bytes(ca)
    (pki / "bank" / "bank.crt").write_bytes(b"garbage")
    assert f"{pki / 'bank' / 'bank.crt'}: not a PEM certificate" in refused("show", str(pki))
    (pki / "ca.key").write_bytes(b"garbage")
    error = refused("issue", str(pki), "--role", "analyst", "--name", "z")
    assert "not an unencrypted PEM private key" in error
    assert not (pki / "analyst" / "z.crt").exists()
    assert "is not a PKI directory" in refused("coin-key", str(tmp_path / "typo"))
    assert not (tmp_path / "typo").exists()
    (tmp_path / "afile").write_text("x")
    assert "is a file; a PKI is a directory" in refused("init", str(tmp_path / "afile"))


def test_mosquitto_fixture_carries_messages(mosquitto: Mosquitto) -> None:
    got = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda *_: got.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe("t")
    client.loop_start()
    try:
        client.publish("t", b"x").wait_for_publish(10)
        assert got.wait(10)
    finally:
        client.loop_stop()
        client.disconnect()


def test_tls_errors_name_their_files(pki: Path, tmp_path: Path) -> None:
    cert, key, ca = pki / "bank/bank.crt", pki / "analyst/alice.key", pki / "ca.crt"
    with pytest.raises(ssl.SSLError, match=f"certificate and key {cert}, {key}: .*KEY_VALUES_MISMATCH"):
        tls.server_context(cert, key, ca)
    with pytest.raises(FileNotFoundError, match=f"CA certificate: no such file: '{tmp_path / 'ca.crt'}'"):
        tls.client_context(cert, pki / "bank/bank.key", tmp_path / "ca.crt")
    (tmp_path / "ca.crt").write_text("garbage")
    with pytest.raises(ssl.SSLError, match=f"CA certificate {tmp_path / 'ca.crt'}: "):
        tls.server_auth_context(tmp_path / "ca.crt")
