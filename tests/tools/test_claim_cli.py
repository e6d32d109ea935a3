"""Claim by QR code with ecoin-provision against a real bank: ``new`` prints the claim URI
as a QR code and writes the sticker (PNG, SVG, 0600, kept off the device); ``claim URI``
pairs the device with another owner once (a second use exits 1, and the bank's log names
the refusal without the secret); ``transfer`` and ``decommission`` follow, all in the audit
chain, and the audit passes."""

from __future__ import annotations

import stat

import pytest

from ecoin.common.claim_uri import ClaimUri, ClaimUriError
from ecoin.tools.provisioning.bundle import flash_files


def test_claim_uri_round_trip_and_refusals():
    uri = ClaimUri("dev-1", "https://bank.lan:8443", "a" * 32)
    assert str(uri) == "ecoin:claim?v=1&device=dev-1&bank=https%3A%2F%2Fbank.lan%3A8443&secret=" + "a" * 32
    assert ClaimUri.parse(str(uri)) == uri
    for bad, why in (
        ("https://x/claim?v=1", "not an ecoin claim URI"),
        ("ecoin:claim?v=2&device=d&bank=https%3A%2F%2Fb&secret=" + "a" * 32, "version"),
        ("ecoin:claim?v=1&device=d&bank=https%3A%2F%2Fb", "no secret"),
        ("ecoin:claim?v=1&device=d%20x&bank=https%3A%2F%2Fb&secret=" + "a" * 32, "device id"),
        ("ecoin:claim?v=1&device=d&bank=http%3A%2F%2Fb&secret=" + "a" * 32, "https"),
        ("ecoin:claim?v=1&device=d&bank=https%3A%2F%2Fb&secret=short-secret", "secret is not"),
    ):
        with pytest.raises(ClaimUriError, match=why) as exc:
            ClaimUri.parse(bad)
        assert "short-secret" not in str(exc.value)


@pytest.mark.slow
def test_new_prints_a_sticker_and_owners_claim_transfer_and_decommission(bank_server, tmp_path, provision):
    admin = bank_server.admin
    admin.create_account("alice", "analyst", ["average"])
    for owner in ("olive", "oscar"):
        admin.create_account(owner, "owner")
        admin.fund(owner, 100)
    out, pki = tmp_path / "devices", str(bank_server.pki)
    as_oscar = ["--bank", bank_server.url, "--pki", pki, "--owner", "oscar"]
    as_olive = ["--bank", bank_server.url, "--pki", pki, "--owner", "olive"]
    made = provision(
        "new", "dev-q", "--service", "average", "--coins", "6", "--out", str(out), *as_oscar
    ).stdout
    bundle = out / "dev-q"
    text = (bundle / "sticker" / "claim.txt").read_text().strip()
    uri = ClaimUri.parse(text)
    assert (uri.device_id, uri.bank) == ("dev-q", bank_server.url)
    assert text in made and ("\u2580" in made or "\u2584" in made)  # the QR code in half blocks
    png, svg = (bundle / "sticker" / "claim.png").read_bytes(), (bundle / "sticker" / "claim.svg").read_text()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and "<svg" in svg and "<path" in svg
    for name in ("claim.png", "claim.svg", "claim.txt"):
        assert stat.S_IMODE((bundle / "sticker" / name).stat().st_mode) == 0o600
    assert "sticker" not in flash_files(bundle)  # the secret never goes onto the device
    again = provision("new", "dev-q", "--service", "average", "--coins", "6", "--out", str(out), *as_oscar)
    assert "ecoin:claim" not in again.stdout  # a finished bundle keeps its sticker

    claimed = provision("claim", text, "--pki", pki, "--owner", "olive").stdout  # the bank from the URI
    assert "dev-q: claimed; it is olive's now (was oscar's)" in claimed
    twice = provision("claim", text, "--pki", pki, "--owner", "oscar", check=False)
    assert twice.returncode == 1 and "used before" in twice.stderr
    bad = provision("claim", "ecoin:claim?v=9", "--pki", pki, "--owner", "oscar", check=False)
    assert bad.returncode == 2 and "version" in bad.stderr
    log = (bank_server.workdir / "bank.log").read_text()
    assert '"claim_refused"' in log and "already_claimed" in log and uri.secret not in log

    with bank_server.client("owner", "olive") as olive:
        assert [d["id"] for d in olive.overview()["devices"]] == ["dev-q"]
        assert olive.overview()["devices"][0]["coins_left"] == 6
    theft = provision("transfer", "dev-q", "--to", "olive", *as_oscar, check=False)
    assert theft.returncode == 1 and "no device dev-q of oscar" in theft.stderr
    provision("transfer", "dev-q", "--to", "oscar", *as_olive)
    refused = provision("decommission", "dev-q", *as_oscar, check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    done = provision("decommission", "dev-q", "--yes", *as_oscar).stdout
    assert "6 coins refunded" in done
    assert next(a["balance"] for a in admin.accounts() if a["id"] == "oscar") == 100  # paid 6, got 6
    audit = bank_server.cli("audit").stdout
    assert "audit passed" in audit
    figures = dict(line.split() for line in audit.splitlines() if len(line.split()) == 2)
    assert (figures["claims"], figures["transfers"], figures["decommissions"]) == ("1", "1", "1")
