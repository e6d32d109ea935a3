"""The edge gateway ("the director"): routes device frames to analysts and the bank.

It is untrusted by design (docs/PROTOCOL.md section 1): it reads frame prefixes and names to
route, and never decrypts, never holds a coin key and never logs a payload.
"""
