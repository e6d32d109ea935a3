"""The gateway's metrics: labels bound from their source of truth, read as a scraper does."""

from ecoin.gateway.metrics import IN_KINDS, Metrics
from ecoin.testing.metrics import metric


def test_a_frame_kind_not_listed_yet_is_counted_not_a_key_error() -> None:
    m = Metrics()
    m.frames_in["newtype"].inc()  # what a router counting a new frame type does
    m.frames_in["newtype"].inc()
    assert metric(m, 'ecoin_gateway_ops_in_total{kind="newtype"}') == 2
    text_keys = [f'ecoin_gateway_ops_in_total{{kind="{k}"}}' for k in IN_KINDS]
    assert [metric(m, k) for k in text_keys] == [0] * len(IN_KINDS)  # listed ones exported at 0


def test_two_gateways_in_one_process_count_apart() -> None:
    a, b = Metrics(), Metrics()
    a.forwarded.inc()
    assert (metric(a, "ecoin_gateway_forwarded_total"), metric(b, "ecoin_gateway_forwarded_total")) == (1, 0)
