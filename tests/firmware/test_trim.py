"""The device's copy of the shared protocol modules is the source without what the sources
say the device never calls: installing the firmware writes it, line for line."""

import ast
from pathlib import Path

from ecoin.tools.provisioning import trim
from ecoin.tools.provisioning.deploy import install_firmware

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"


def _functions(text: str) -> set[str]:
    return {n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)}


def test_installed_protocol_modules_lack_the_service_side_line_for_line(tmp_path: Path) -> None:
    install_firmware(tmp_path, "sim", mpy=False)
    dropped = dict(trim.service_side())
    assert any(dropped.values())
    for mod in trim.SHARED:
        source = (PROTOCOL / f"{mod}.py").read_text()
        installed = (tmp_path / f"{mod}.py").read_text()
        assert installed == trim.trimmed(mod)
        assert _functions(installed) == _functions(source) - set(dropped[mod])
        src_lines, got = source.splitlines(), installed.splitlines()
        assert len(got) == len(src_lines)  # a traceback's line numbers are the source's
        assert all(g in ("", s) for g, s in zip(got, src_lines, strict=True))


def test_firmware_deletes_nothing_at_boot():
    start = (Path(__file__).resolve().parents[2] / "firmware" / "start.py").read_text()
    assert "delattr" not in start and "_SERVICE_SIDE" not in start


def test_what_the_device_calls_is_kept():
    dropped = dict(trim.service_side())
    # (decode_error is service side since v2: a device reads an ERROR's code byte itself)
    for name in ("encode_query", "frame_type", "decode_status", "service_name"):
        assert name not in dropped["wire"]
    for name in ("seal_header", "session_keys", "open_result"):
        assert name not in dropped["session"]
    # the collector seals in place (collector.seal): the copying recipe stays service side
    assert "seal_operation" in dropped["session"] and "encode_operation" in dropped["wire"]
    assert "seal_result" in dropped["session"]  # the service side goes
