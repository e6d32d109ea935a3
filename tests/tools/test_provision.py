"""ecoin-provision against a real bank process, the real mpremote and the simulated board
(ReplBoard), with in-doubt coins written by the firmware's own coin store."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ecoin.common.bank_client import RedeemItem
from ecoin.sim import SimDevice
from ecoin.sim.hardware import Hardware
from ecoin.sim.ntp import NtpResponder
from ecoin.sim.replboard import ReplBoard
from ecoin.testing.bank import operation_item
from ecoin.testing.servers import eventually
from ecoin.tools.provisioning import (
    BankParams,
    Broker,
    ProvisionError,
    SimTarget,
    claim_refunds,
    flash,
    install_bundle,
    provision_device,
)
from ecoin.tools.provisioning.deploy import find_tool

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
# The firmware's own coin store puts coins in doubt: two failed operations and one cut short.
MAKE_DOUBTS = (
    "import start\n"
    "s = start.open_store()\n"
    "s.take(b'\\x11' * 16); s.doubt(3)\n"  # the gateway's TIMEOUT
    "s.take(b'\\x22' * 16); s.doubt(10)\n"  # no answer at all
    "s.take(b'\\x33' * 16)\n"  # still pending (power lost mid-operation)
    "print('doubts', s.doubt_count(), 'left', s.left())\n"
)


def mpremote(port: str, *args: str) -> str:
    done = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def owner(bank_server):
    """Owner olive with 5,000 units, analyst alice (average); the owner's BankParams."""
    bank_server.admin.create_account("olive", "owner")
    bank_server.admin.fund("olive", 5000)
    bank_server.admin.create_account("alice", "analyst", ["average"])
    return BankParams.from_pki(bank_server.url, bank_server.pki, "olive")


def balance(bank_server, name: str) -> int:
    return next(a["balance"] for a in bank_server.admin.accounts() if a["id"] == name)


def coins_of(bundle: Path) -> list[bytes]:
    raw = (bundle / "coins.0.bin").read_bytes()
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def assert_no_secret(text: str, bundle: Path) -> None:
    key = (bundle / "device.key").read_bytes()
    for secret in [key, *coins_of(bundle)]:
        assert secret.hex() not in text and base64.b64encode(secret).decode() not in text


def test_help_texts(provision):
    top = provision("--help").stdout
    for command in ("new", "flash", "deploy-sim", "refund", "status"):
        assert command in top
    assert (
        "--owner-cert" in provision("new", "--help").stdout
        and "--broker-credentials" in provision("new", "--help").stdout
    )
    flash_help = provision("flash", "--help").stdout
    assert "--port" in flash_help and "--yes" in flash_help and "--device" in flash_help
    assert "--flash" in provision("deploy-sim", "--help").stdout
    assert "redeemed" in provision("refund", "--help").stdout
    assert "in doubt" in provision("status", "--help").stdout
    missing = provision("refund", "dev-1", check=False)  # neither --port nor --flash
    assert missing.returncode == 2 and "--port" in missing.stderr


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8443", "https://127.0.0.1:abc", "https://127.0.0.1:99999", "https://[::1"]
)
def test_a_malformed_bank_url_is_a_usage_error(provision, tmp_path, url):
    run = provision("statement", "--bank", url, "--pki", str(tmp_path), "--owner", "olive", check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert f"bank url must be https://host:port, not {url!r}" in run.stderr


def test_a_broker_credentials_file_that_cannot_work_is_refused_before_any_coin_moves(
    bank_server, owner, tmp_path, provision
):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[devices]\n")
    common = ("new", "dev-c", "--bank", bank_server.url, "--pki", str(bank_server.pki), "--owner", "olive",
              "--service", "average", "--out", str(tmp_path / "devices"), "--coins", "5")  # fmt: skip
    for creds, error in (
        (tmp_path / "nowhere" / "credentials.toml", f"{tmp_path / 'nowhere'} does not exist"),
        (binary, f"{binary}: not a credentials.toml of broker-config"),
    ):
        run = provision(*common, "--broker-credentials", str(creds), check=False)
        assert run.returncode != 0 and error in run.stderr and "Traceback" not in run.stderr, run.stderr
    run = provision(*common, "--broker-port", "99999", check=False)
    assert run.returncode != 0 and "broker port 99999: must be 1 to 65535" in run.stderr
    assert balance(bank_server, "olive") == 5000  # nothing withdrawn
    assert not (tmp_path / "devices" / "dev-c").exists()  # not even a device key made


def test_the_config_file_follows_the_services_conventions(
    bank_server, owner, tmp_path, provision, monkeypatch
):
    """Relative paths from the file's directory, $ECOIN_PROVISION_CONFIG, a [provision] table."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "pki").symlink_to(bank_server.pki)
    config = etc / "provision.toml"
    config.write_text(f'[provision]\nbank = "{bank_server.url}"\npki = "pki"\nowner = "olive"\n')
    monkeypatch.chdir(tmp_path)  # not the file's directory
    assert json.loads(provision("statement", "-c", str(config)).stdout)["owner"] == "olive"
    monkeypatch.setenv("ECOIN_PROVISION_CONFIG", str(config))
    assert json.loads(provision("statement").stdout)["owner"] == "olive"
    config.write_text(f'bank = "{bank_server.url}"\n')  # outside any table: not silently ignored
    run = provision("statement", check=False)
    assert run.returncode == 2 and f"{config}: no [provision] table (found bank outside it)" in run.stderr
    config.write_text("[provision]\nbank = 3\n")
    run = provision("statement", check=False)
    assert run.returncode == 2 and f"{config}: provision.bank: expected str, got int" in run.stderr


def test_new_withdraws_once_and_reruns_are_safe(bank_server, owner, tmp_path, provision):
    out = tmp_path / "devices"
    creds = tmp_path / "credentials.toml"
    creds.write_text('[devices]\ndev-1 = "from-broker-config"\n')
    config = tmp_path / "provision.toml"
    pki = bank_server.pki
    config.write_text(
        f'[provision]\nbank = "{bank_server.url}"\npki = "{pki}"\nowner = "olive"\nservice = "average"\n'
        f'out = "{out}"\ncoins = 7\n[provision.device]\nbatch_max = 16\n'
    )
    first = provision("new", "dev-1", "--config", str(config), "--coins", "1000", "--broker-port", "8883",
                      "--broker-credentials", str(creds))  # fmt: skip
    bundle = out / "dev-1"
    assert_no_secret(first.stdout + first.stderr, bundle)
    assert balance(bank_server, "olive") == 4000  # 1,000 coins paid for
    coins = coins_of(bundle)
    assert len(coins) == 1000 and len(set(coins)) == 1000
    state = flash.read_state(bundle)
    assert (state.next, state.count, state.counter) == (0, 1000, 0)
    cfg = json.loads((bundle / "config.json").read_text())
    assert (cfg["device_id"], cfg["service"], cfg["broker_port"], cfg["batch_max"]) == (
        "dev-1",
        "average",
        8883,
        16,
    )
    assert (bundle / "broker.pass").read_text() == "from-broker-config"
    for name in ("device.key", "broker.pass", "coins.0.bin"):
        assert stat.S_IMODE((bundle / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    with bank_server.client("owner", "olive") as olive:  # the bank knows them as dev-1's, unspent
        assert {r["state"] for r in olive.claim("dev-1", coins[:5], refund=False)} == {"outstanding"}

    again = provision("new", "dev-1", "--config", str(config), "--coins", "1000")
    assert "nothing withdrawn" in again.stdout
    assert balance(bank_server, "olive") == 4000 and coins_of(bundle) == coins

    # A crash after the withdrawal, before the bundle was finished: the same coins come back.
    meta = json.loads((bundle / "provision.json").read_text())
    (bundle / "provision.json").write_text(json.dumps({**meta, "state": "registered"}))
    (bundle / "state.bin").unlink()
    provision("new", "dev-1", "--config", str(config), "--coins", "1000")
    assert balance(bank_server, "olive") == 4000 and coins_of(bundle) == coins
    assert flash.read_state(bundle).count == 1000

    refused = provision("new", "dev-1", "--config", str(config), "--coins", "1000", "--renew", check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr and balance(bank_server, "olive") == 4000
    renewed = provision("new", "dev-1", "--config", str(config), "--coins", "1000", "--renew", "--yes")
    assert "generation 2" in renewed.stdout and balance(bank_server, "olive") == 3000
    assert coins_of(bundle) != coins and (bundle / "archive" / "g1" / "coins.0.bin").read_bytes() == b"".join(
        coins
    )

    # Not enough money: the device stays registered; funding and running again finishes it.
    with pytest.raises(ProvisionError, match="cannot pay 4000 coins"):
        provision_device(owner, "dev-9", "average", coins=4000, out_dir=out)
    assert json.loads((out / "dev-9" / "provision.json").read_text())["state"] == "registered"
    bank_server.admin.fund("olive", 1000)
    provision_device(owner, "dev-9", "average", coins=4000, out_dir=out)
    assert balance(bank_server, "olive") == 0 and len(coins_of(out / "dev-9")) == 4000

    taken = provision("new", "dev-1", "--config", str(config), "--out", str(tmp_path / "other"), check=False)
    assert taken.returncode == 1 and "already registered" in taken.stderr
    assert not (tmp_path / "other" / "dev-1").exists() and balance(bank_server, "olive") == 0


def test_a_service_no_analyst_offers_is_refused_before_any_coin_moves(
    owner, bank_server, tmp_path, provision
):
    out = tmp_path / "devices"
    with pytest.raises(ProvisionError, match=r"offers the service 'nosuch' \(offered: average\)"):
        provision_device(owner, "dev-7", "nosuch", out_dir=out)
    assert not (out / "dev-7").exists() and balance(bank_server, "olive") == 5000
    bank = ("--bank", bank_server.url, "--pki", str(bank_server.pki), "--owner", "olive", "--out", str(out))
    refused = provision("new", "dev-7", "--service", "nosuch", *bank, check=False)
    assert (
        refused.returncode == 1 and "offered: average" in refused.stderr and "Traceback" not in refused.stderr
    )
    assert balance(bank_server, "olive") == 5000


def test_mpremote_flashes_the_bundle_onto_the_simulated_board(owner, tmp_path, provision):
    out = tmp_path / "devices"
    bundle = provision_device(owner, "dev-2", "average", out_dir=out, broker=Broker(port=1884))
    board_flash = tmp_path / "board"
    board_flash.mkdir()
    with ReplBoard(board_flash) as board:
        # The form `make flash BOARD=sim PORT=...` runs: the only bundle in --out.
        done = provision("flash", "--board", "sim", "--port", board.port, "--out", str(out))
        assert "sizes and coin store checked" in done.stdout
        assert_no_secret(done.stdout + done.stderr, bundle)
        names = sorted(p.name for p in bundle.iterdir() if p.name != "provision.json")
        assert sorted(os.listdir(board_flash)) == names
        for name in names:
            assert (board_flash / name).read_bytes() == (bundle / name).read_bytes(), name
        listing = mpremote(board.port, "fs", "ls", ":")  # the real tool lists what it copied
        assert "32000 coins.0.bin" in listing and "69 state.bin" in listing and "main.py" in listing

        # The device spends a coin and tops up once; a second flash must not silently undo that.
        mpremote(board.port, "exec", "import start\ns = start.open_store()\ns.take(b'1' * 16)\ns.spent()\n"
                 "s.counter = 7\ns.save()")  # fmt: skip
        refused = provision("flash", "dev-2", "--port", board.port, "--out", str(out), check=False)
        assert refused.returncode == 1 and "already holds a coin store" in refused.stderr
        assert "999 coins left" in refused.stderr
        assert flash.read_state(board_flash).next == 1  # untouched
        wrong = provision("flash", "--board", "esp32", "--port", board.port, "--out", str(out), check=False)
        assert wrong.returncode == 1 and "for board 'sim'" in wrong.stderr

        provision("flash", "--device", "dev-2", "--port", board.port, "--out", str(out), "--yes")
        state = flash.read_state(board_flash)
        assert (state.next, state.count, state.counter) == (0, 1000, 7)  # the top-up counter carried over
        status = provision("status", "dev-2", "--port", board.port).stdout
        assert "1000 coins left" in status and "top-up counter 7" in status

        # New settings reach the device without touching its coins.
        mpremote(board.port, "exec", "import start\ns = start.open_store()\ns.take(b'2' * 16)\ns.spent()")
        provision_device(owner, "dev-2", "average", out_dir=out, broker=Broker(port=1999))
        assert (
            json.loads((bundle / "config.json").read_text())["broker_port"] == 1884
        )  # a re-run changes nothing
        provision_device(owner, "dev-2", "average", out_dir=out, broker=Broker(port=1999), reconfigure=True)
        provision("flash", "dev-2", "--port", board.port, "--out", str(out), "--firmware-only")
        assert json.loads((board_flash / "config.json").read_text())["broker_port"] == 1999
        assert flash.read_state(board_flash).next == 1  # the coin store stayed


def test_refund_of_in_doubt_coins_from_a_board(bank_server, owner, tmp_path, provision):
    out = tmp_path / "devices"
    bundle = provision_device(owner, "dev-3", "average", out_dir=out)
    coins = coins_of(bundle)
    key = json.loads((bundle / "bank.json").read_text())
    public = (int(key["n"], 16), int(key["e"]))
    # Analyst alice did redeem the second coin: its operation's answer was lost on the way back.
    with bank_server.client("analyst", "alice") as alice:
        item = operation_item(public, bytes.fromhex(key["kid"]), coins[1], "average", b"\x22" * 16)
        assert alice.redeem([RedeemItem(*item)])[0].ok
    board_flash = tmp_path / "board"
    board_flash.mkdir()
    with ReplBoard(board_flash) as board:
        provision("flash", "dev-3", "--port", board.port, "--out", str(out))
        assert "doubts 2 left 997" in mpremote(board.port, "exec", MAKE_DOUBTS)
        status = provision("status", "dev-3", "--port", board.port).stdout
        assert "997 coins left" in status and "2 in doubt" in status and "pending" in status

        before = balance(bank_server, "olive")
        bank = ["--bank", bank_server.url, "--pki", str(bank_server.pki), "--owner", "olive"]
        done = provision("refund", "dev-3", "--port", board.port, *bank)
        assert_no_secret(done.stdout + done.stderr, bundle)
        lines = done.stdout.splitlines()
        assert lines[0].endswith("[in doubt: timeout (gateway)]") and "refunded (+1" in lines[0]
        assert "redeemed by alice at 20" in lines[1] and "no answer" in lines[1]
        assert "refunded (+1" in lines[2] and "operation still pending" in lines[2]
        assert "3 coins claimed (1 redeemed, 2 refunded)" in done.stdout
        # The firmware keeps a settled list: the two finished records are marked there.
        assert "marked 2 settled on the device" in done.stdout
        assert balance(bank_server, "olive") == before + 2

        again = json.loads(provision("refund", "dev-3", "--port", board.port, *bank, "--json").stdout)
        # Only the coin whose operation is still pending stays listed; claiming it again pays nothing.
        assert [(c["state"], c["pending"]) for c in again["claims"]] == [("already_refunded", True)]
        assert balance(bank_server, "olive") == before + 2


def test_deploy_sim_and_refund_from_a_flash_directory(bank_server, owner, mosquitto, tmp_path, provision):
    out = tmp_path / "devices"
    provision_device(owner, "dev-4", "average", out_dir=out, broker=Broker(port=mosquitto.port))
    sim = tmp_path / "sim" / "dev-4"
    provision("deploy-sim", "dev-4", "--flash", str(sim), "--out", str(out))
    # The real firmware boots from what was deployed: settings, bank key, device key, coins.
    device = SimDevice(sim, runtime="micropython").start()
    try:
        assert device.wait_for("mqtt: connected", timeout=20), device.output()
    finally:
        device.stop()
    assert "collector dev-4: service average via mqtt" in device.output()
    assert "1000 coins left, 0 in doubt" in device.output()
    refused = provision("deploy-sim", "dev-4", "--flash", str(sim), "--out", str(out), check=False)
    assert refused.returncode == 1 and "already holds a coin store" in refused.stderr
    elsewhere = provision(
        "deploy-sim", "dev-4", "--flash", str(tmp_path / "sim2"), "--out", str(out), check=False
    )
    assert elsewhere.returncode == 1 and "already deployed" in elsewhere.stderr
    # On a terminal it asks: "no" keeps the store, "yes" replaces it.
    code, seen = provision.on_a_terminal("no", "deploy-sim", "dev-4", "--flash", str(sim), "--out", str(out))
    assert code == 1 and "already holds a coin store" in seen and "Type yes" in seen
    code, seen = provision.on_a_terminal("yes", "deploy-sim", "dev-4", "--flash", str(sim), "--out", str(out))
    assert code == 0, seen

    micropython = find_tool("micropython")
    assert micropython, "the MicroPython unix port is missing: run `make setup`"
    env = {"PATH": os.environ.get("PATH", ""), "MICROPYPATH": str(sim)}
    run = subprocess.run([micropython, "-c", MAKE_DOUBTS], cwd=sim, env=env, capture_output=True, text=True)
    assert "doubts 2 left 997" in run.stdout, run.stdout + run.stderr

    with pytest.raises(ProvisionError, match="holds device 'dev-4', not 'dev-9'"):
        claim_refunds(owner, "dev-9", flash_dir=sim)
    check = claim_refunds(owner, "dev-4", flash_dir=sim, refund=False)
    assert check.counts() == {"outstanding": 3} and check.settled.startswith("not settled")

    # A firmware that declares settled.bin gets the settled op_ids appended (the contract).
    (sim / "coinstore.py").write_text('SETTLED = "settled.bin"\n')
    before = balance(bank_server, "olive")
    report = claim_refunds(owner, "dev-4", flash_dir=sim)
    assert report.counts() == {"refunded": 3} and balance(bank_server, "olive") == before + 3
    assert report.settled == "marked 2 settled on the device"
    assert (sim / "settled.bin").read_bytes() == b"\x11" * 16 + b"\x22" * 16
    assert [c.state for c in claim_refunds(owner, "dev-4", flash_dir=sim).claims] == ["already_refunded"]

    # A real board's bundle: its board file, WiFi settings; it is not for the simulator.
    with pytest.raises(ProvisionError, match="needs WiFi"):
        provision_device(owner, "esp-1", "average", out_dir=out, board="esp32", coins=10)
    esp = provision_device(owner, "esp-1", "average", out_dir=out, board="esp32", coins=10,
                           config={"wifi_ssid": "home"}, wifi_password="secret")  # fmt: skip
    assert (esp / "wifi.pass").read_text() == "secret" and stat.S_IMODE(
        (esp / "wifi.pass").stat().st_mode
    ) == 0o600
    assert (esp / "board.mpy").exists() and not (esp / "simuart.mpy").exists()
    wrong = provision(
        "deploy-sim", "esp-1", "--flash", str(tmp_path / "sim5"), "--out", str(out), check=False
    )
    assert wrong.returncode == 1 and "for board 'esp32'" in wrong.stderr

    # A bundle a simulator has run in has spent coins: it never goes onto a device.
    bundle = out / "dev-4"
    env["MICROPYPATH"] = str(bundle)
    subprocess.run([micropython, "-c", MAKE_DOUBTS], cwd=bundle, env=env, capture_output=True, check=True)
    with pytest.raises(ProvisionError, match="have been used"):
        install_bundle(bundle, SimTarget(tmp_path / "sim4", create=True), yes=True)


def test_maintenance_on_a_board_whose_watchdog_runs(bank_server, owner, tmp_path, provision):
    """Issue 10, defect 6: a Pico W running its firmware, watchdog at 8.4 s (it cannot be
    stopped and survives soft resets). status, refund and flash --firmware-only still work,
    and a board left at the REPL is not reset under the owner's hands."""
    out = tmp_path / "devices"
    ntp = NtpResponder().start()
    cfg = {"wifi_ssid": "home", "ntp_host": "127.0.0.1", "ntp_port": ntp.port, "watchdog_ms": 60000}
    provision_device(owner, "dev-5", "average", out_dir=out, broker=Broker(port=1), config=cfg)
    board_flash = tmp_path / "board"
    board_flash.mkdir()
    with ReplBoard(board_flash) as board:
        provision("flash", "dev-5", "--port", board.port, "--out", str(out))
    pico = Hardware(board="pico_w", assoc_s=0.02)
    try:
        with ReplBoard(board_flash, hardware=pico, run_main=True) as board:
            wdt = board.watchdog
            assert wdt and eventually(lambda: wdt.timeout_ms == 8388, 20)  # the firmware runs, watchdog armed
            assert "1000 coins left" in provision("status", "dev-5", "--port", board.port).stdout
            assert "doubts 2 left 997" in mpremote(board.port, "exec", MAKE_DOUBTS)
            bank = ["--bank", bank_server.url, "--pki", str(bank_server.pki), "--owner", "olive"]
            assert "3 coins claimed" in provision("refund", "dev-5", "--port", board.port, *bank).stdout
            # A maintenance step longer than the watchdog (a slow copy over a real UART).
            slow = "import time\ntime.sleep(10)\nprint('still here')"
            assert "still here" in mpremote(board.port, "exec", slow)
            provision("flash", "dev-5", "--port", board.port, "--out", str(out), "--firmware-only")
            status = provision("status", "dev-5", "--port", board.port).stdout
            assert "997 coins left" in status, status
            assert board.watchdog_resets == 0 and board.error == ""
    finally:
        ntp.stop()
