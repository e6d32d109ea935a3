"""The trim list in firmware/start.py is what the sources say the device never calls."""

from ecoin.tools.provisioning import trim


def test_start_py_trim_list_is_derived_from_the_sources():
    assert trim.start_py_list() == trim.service_side(), "regenerate: python -m ecoin.tools.provisioning.trim"


def test_what_the_device_calls_is_kept():
    dropped = dict(trim.service_side())
    # (decode_error is service side since v2: a device reads an ERROR's code byte itself)
    for name in ("encode_query", "frame_type", "decode_status", "service_name"):
        assert name not in dropped["wire"]
    assert "seal_operation" not in dropped["session"] and "open_result" not in dropped["session"]
    assert "seal_result" in dropped["session"]  # the service side goes
