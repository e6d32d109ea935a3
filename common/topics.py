"""The MQTT topic tree (docs/PROTOCOL.md 7.1), built and parsed in one place for the
gateway, the analysts and the broker ACLs. (The firmware spells its own two topics,
``ecoin/dev/<id>/up`` and ``.../down``, to keep the board's heap small.)"""

from __future__ import annotations

import re

from ecoin.common import names
from ecoin.protocol import wire

DEVICE_UP_FILTER = "ecoin/dev/+/up"
DEVICE_DOWN_FILTER = "ecoin/dev/+/down"
SERVICE_OP_FILTER = "ecoin/svc/+/op"
ANNOUNCE_FILTER = "ecoin/svc/+/analyst/+"
REPLY_FILTER = "ecoin/gw/+/reply"
_REPLY = re.compile(rf"ecoin/gw/{names.ID}/reply")


def device_up(device: str) -> str:
    return f"ecoin/dev/{device}/up"


def device_down(device: str) -> str:
    return f"ecoin/dev/{device}/down"


def service_op(service: str) -> str:
    return f"ecoin/svc/{service}/op"


def shared_op(service: str) -> str:
    """The shared subscription through which the analysts of a service split its operations."""
    return f"$share/ecoin-{service}/{service_op(service)}"


def announcement(service: str, analyst: str) -> str:
    return f"ecoin/svc/{service}/analyst/{analyst}"


def gateway_reply(gateway: str) -> str:
    return f"ecoin/gw/{gateway}/reply"


def gateway_status(gateway: str) -> str:
    return f"ecoin/gw/{gateway}/status"


def gateway_tree(gateway: str) -> str:
    return f"ecoin/gw/{gateway}/#"


def device_of(topic: str) -> str | None:
    """The device id in ``ecoin/dev/<id>/up``, or None if the topic is anything else."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[:2] != ["ecoin", "dev"] or parts[3] != "up":
        return None
    try:
        wire.device_id(parts[2])
    except ValueError:
        return None
    return parts[2]


def announcement_of(topic: str) -> tuple[str, str] | None:
    """(service, analyst) of an announcement topic, or None if it is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[:2] != ["ecoin", "svc"] or parts[3] != "analyst":
        return None
    try:
        wire.service_name(parts[2])
        wire.device_id(parts[4])  # analyst ids share the device id alphabet
    except ValueError:
        return None
    return parts[2], parts[4]


def is_reply(topic: str) -> bool:
    return _REPLY.fullmatch(topic) is not None


# Client ids of the services. On the broker's service listener each is also the user name it
# logs in with (Mosquitto's ``use_username_as_clientid``), so the ACLs and the password file
# are keyed by them; they are stable across restarts, so the broker keeps each one's session.
CLIENT_PREFIX = "ecoin-"  # no device may be named so: Mosquitto shares ids across listeners
GATEWAY_LINKS = ("edge", "up")


def gateway_client(gateway: str, link: str) -> str:
    """The gateway's ``edge`` (devices' topics) or ``up`` (operations, replies) connection."""
    return f"{CLIENT_PREFIX}gw-{gateway}-{link}"


DEFAULT_INSTANCE = "1"  # an analyst's process when it runs only one (its MQTT session)


def analyst_client(analyst: str, instance: str, service: str) -> str:
    """One connection per analyst process and service (each has its own last will)."""
    return f"{CLIENT_PREFIX}analyst-{analyst}-{instance}-{service}"
