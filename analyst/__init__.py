"""The analyst service: paid analyses over MQTT, redeemed at the bank (docs/ANALYSTS.md).

``plugins`` (the Analyser type, discovery, payload checks), ``builtin`` (average, stats,
size, anomaly), ``workers`` (analysers in child processes, with a time limit), ``redeemer``
(batched redemption at the bank), ``service`` (the MQTT side), ``cli`` (``ecoin-analyst``).
"""
