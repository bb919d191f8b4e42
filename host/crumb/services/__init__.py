"""Verifying services: the layer between the token core and an application.

ASGI and WSGI middleware (``crumb.services.middleware``), the MQTT consumer
(``mqtt``), the issuer's key set fetched and refreshed (``keyfetch``,
``keyset``), the Redis replay store for replicas (``replay_redis``), the MQTT
envelope (``envelope``) and what a handler is given (``grant``). Installed
with the ``services`` extra: ``pip install 'crumb-auth[services]'``.
"""
