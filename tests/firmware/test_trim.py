"""The trim list firmware/start.py runs with is what the sources say the device never calls:
installing the firmware writes it in, the tree's copy is empty."""

from pathlib import Path

from ecoin.tools.provisioning import trim
from ecoin.tools.provisioning.deploy import install_firmware


def test_installed_start_py_has_the_trim_list_derived_from_the_sources(tmp_path: Path) -> None:
    install_firmware(tmp_path, "sim", mpy=False)
    installed = trim.start_py_list((tmp_path / "start.py").read_text())
    assert installed == trim.service_side() and any(names for _, names in installed)
    tree = Path(__file__).resolve().parents[2] / "firmware" / "start.py"
    assert trim.start_py_list(tree.read_text()) == ()  # nothing to keep in step by hand
    # the rest of the file is the tree's, line for line
    rest = (tmp_path / "start.py").read_text().replace(trim.render(), "_SERVICE_SIDE = ()")
    assert rest == tree.read_text()


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
