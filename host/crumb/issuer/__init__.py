"""The issuer: the gateway devices ask for tokens (``crumb issuer serve``).

Device authentication (protocol), a deny-by-default policy (policy), the
device registry (registry), admission of nonces and rates (gate), minting
(minting, issuing), signing keys and their rotation (keystore), the
hash-chained audit log (audit) and the ASGI app and its server (app,
server). Installed with the ``issuer`` extra:
``pip install 'crumb-auth[issuer]'``.
"""
