"""Operator tools: the PKI (``ecoin-pki``) and device provisioning (``ecoin-provision``)."""
