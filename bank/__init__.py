"""The ecoin bank: a durable one-time coin ledger behind mutual TLS.

Layers: ``server`` (HTTPS, mTLS) -> ``router`` (routes, roles, body checks) -> ``ledger``
(business rules) -> ``store`` (interface and shared SQL) -> ``sqlite`` / ``postgres``.
``keys`` opens coin headers, ``vault`` guards the master key, ``audit`` reconciles,
``client`` is the API client every other part uses, ``cli`` is ``ecoin-bank``.
"""
