"""kombu's Redis transport, with one race closed: a worker must outlive a Redis restart.

When the broker connection drops while a job runs in a thread of the worker's process (the
``threads`` pool, ``hycas worker``'s default for one process), Celery closes the connection
while the job's message is still unacknowledged. Closing the channel tries to put that message
back through a connection whose client kombu has already cleared, and the ``AttributeError``
this raises (``'NoneType' object has no attribute 'hostname'``) is not a connection error:
Celery calls it unrecoverable and the worker exits, with status 0. Here the channel reports
that state as the connection error it is; Celery ignores it while closing, reconnects, and
the message stays in Redis's unacknowledged set, where the visibility timeout restores it if
the job does not end first (the job store makes a second run of a finished job a no-op).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

TRANSPORT = "workers.broker:Transport"
"""The value of Celery's ``broker_transport`` that selects it (the URL still gives the rest)."""


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
