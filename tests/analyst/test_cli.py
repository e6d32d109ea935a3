"""``ecoin-analyst`` configuration: what is accepted, and the clear errors for the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w

from ecoin.analyst import builtin, cli
from ecoin.analyst.settings import load


def write(tmp_path: Path, table: dict[str, Any]) -> Path:
    path = tmp_path / "analyst.toml"
    path.write_text(tomli_w.dumps({"analyst": table}))
    return path


def good(pki_dir: Path | str, /, **changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "id": "alice",
        "services": ["average", "anomaly"],
        "pki": str(pki_dir),
        "broker": {"password_file": "mqtt/alice.password"},  # from the file's directory
    }
    table.update(changes)
    return table


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_accepts_a_good_configuration(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mqtt").mkdir()
    (tmp_path / "mqtt" / "alice.password").write_text("secret\n")
    path = write(tmp_path, good(pki, options={"anomaly": {"k": 2}}, bank={"batch_max": 128}))
    code, out, _ = run(capsys, "check", "--config", str(path), "--instance", "7")
    assert code == 0 and "ok: analyst alice (instance 7) offers average, anomaly" in out
    s = load(path)
    assert s.tls_paths() == (
        str(pki / "analyst/alice.crt"),
        str(pki / "analyst/alice.key"),
        str(pki / "ca.crt"),
    )
    assert s.client_id("average") == "ecoin-analyst-alice-1-average" and s.bank.batch_max == 128
    assert s.broker.password_file == str(tmp_path / "mqtt" / "alice.password")
    assert s.broker_password() == "secret"


def test_offers_set_price_description_and_version(tmp_path: Path, pki: Path) -> None:
    offer = {"price": 3, "description": "the mean, priced", "version": "2.1"}
    s = load(write(tmp_path, good(pki, offers={"average": offer})))
    assert s.offer("average").price == 3 and s.offer("anomaly").price == 1  # default: 1 coin
    a = builtin.AVERAGE.announcement("alice", 3, "2.1", "the mean, priced")
    assert (a["price"], a["version"], a["description"]) == (3, "2.1", "the mean, priced")
    assert builtin.AVERAGE.announcement("alice")["description"] == builtin.AVERAGE.description


def test_relative_paths_are_taken_from_the_file(tmp_path: Path, pki: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "pki").symlink_to(pki)
    s = load(write(tmp_path / "etc", good("pki")))
    assert s.tls_paths()[2] == str(tmp_path / "etc" / "pki" / "ca.crt")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "blue"}, "unknown key"),
        ({"services": []}, "offer at least one service"),
        ({"services": ["Average"]}, "character outside"),
        ({"services": ["average", "average"]}, "listed twice"),
        ({"id": ""}, "device id must be 1 to 32"),
        ({"services": ["nosuch"]}, "no analyser installed for nosuch"),
        ({"options": {"anomaly": {"q": 1}}}, "unknown option 'q'"),
        ({"options": {"anomaly": {"k": "x"}}}, "option k must be float"),
        ({"options": {"stats": {"k": 1.0}}}, "options for services not offered: stats"),
        ({"options": {"anomaly": 3}}, "one table per analyser"),
        ({"bank": {"batch_max": 500}}, "batch_max: must be 1 to 256"),
        ({"limits": {"max_input_bytes": 5000}}, "max_input_bytes: must be 1 to 4096"),
        ({"broker": {"port": "8884"}}, "analyst.broker.port: expected int, got str"),
        ({"bank": {"url": "https://bank:99999"}}, "analyst.bank.url: bank url must be https://host:port"),
        ({"broker": {"port": True}}, "analyst.broker.port: expected int, got bool"),
        ({"broker": {"tls": True}}, "analyst.broker.password_file: the broker's service listener"),
        ({"pki": ""}, "set pki"),
        ({"offers": {"average": {"price": 5}}}, "offers.average.price: must be 1 to 4 coins"),
        ({"offers": {"average": {"price": 0}}}, "offers.average.price: must be 1 to 4 coins"),
        ({"offers": {"average": {"price": "3"}}}, "offers.average.price: must be an integer"),
        ({"offers": {"average": {"cost": 3}}}, "unknown key 'cost'"),
        ({"offers": {"stats": {"price": 2}}}, "stats is not in analyst.services"),
        ({"offers": {"average": {"version": ""}}}, "version 1 to 32"),
        ({"offers": {"average": 3}}, "must be a table"),
    ],
)
def test_check_refuses_bad_configurations(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], message: str
) -> None:
    code, _, err = run(capsys, "check", "--config", str(write(tmp_path, good(pki, **changes))))
    assert code == 2 and message in err and "Traceback" not in err


def test_check_reads_the_certificate_as_serve_will(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mqtt").mkdir()
    (tmp_path / "mqtt" / "alice.password").write_text("secret\n")
    theirs = {"cert": str(pki / "bank/bank.crt"), "key": str(pki / "bank/bank.key")}  # a pair, not alice's
    code, _, err = run(capsys, "check", "--config", str(write(tmp_path, good(pki, **theirs))))
    assert code == 2 and "not analyst alice's certificate (its CN is 'bank', its role 'bank')" in err
    mismatched = {"cert": str(pki / "analyst/alice.crt"), "key": str(pki / "bank/bank.key")}
    code, _, err = run(capsys, "check", "--config", str(write(tmp_path, good(pki, **mismatched))))
    assert code == 2 and "not a certificate, its key and the CA" in err and "Traceback" not in err
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate")
    code, _, err = run(capsys, "check", "--config", str(write(tmp_path, good(pki, cert=str(garbage)))))
    assert code == 2 and "not a certificate, its key and the CA" in err and "Traceback" not in err


def test_missing_files_are_named(tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "serve", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "nope.toml: no such configuration file" in err
    code, _, err = run(capsys, "check", "--config", str(write(tmp_path, good(pki, id="zed"))))
    assert code == 2 and "zed.crt: no such file" in err
    code, _, err = run(capsys, "check", "--config", str(write(tmp_path, good(pki))))
    assert code == 2 and "alice.password: no such file" in err
    code, _, err = run(capsys, "check", "--config", str(write(tmp_path, good(pki))), "--instance", "a b")
    assert code == 2 and "device id has a character outside" in err
