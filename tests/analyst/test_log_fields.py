"""No log call anywhere passes a field that ``logging`` reserves (``message``, ``name``,
``thread``...): such a call raises KeyError at run time, and once ended the analyst's only
redeemer thread (issue 13, finding 1). Checked on the source, so no path escapes it."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOMS = ("protocol", "common", "bank", "analyst", "gateway", "tools", "sim", "testing")
RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def test_no_log_call_uses_a_reserved_field() -> None:
    bad, seen = [], 0
    for room in ROOMS:
        for path in (REPO / room).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                for kw in node.keywords:
                    if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                        seen += 1
                        for key in kw.value.keys:
                            if isinstance(key, ast.Constant) and key.value in RESERVED:
                                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {key.value!r}")
    assert seen >= 40  # it did look at the log calls
    assert not bad, "reserved LogRecord fields: " + ", ".join(bad)
