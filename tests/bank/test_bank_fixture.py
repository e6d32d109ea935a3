"""The shared ``bank_server`` fixture other parts use starts a working bank."""

from __future__ import annotations


def test_bank_server_fixture(bank_server):
    bank_server.admin.create_account("olive", "owner")
    assert bank_server.admin.fund("olive", 3) == 3
    with bank_server.client("owner", "olive") as olive:
        assert olive.balance() == 3
    assert bank_server.url == f"https://127.0.0.1:{bank_server.port}"
