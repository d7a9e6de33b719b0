"""Faust's Kafka transport with one setting Faust does not expose: the fetch wait.

Faust creates its aiokafka consumer with `fetch_max_wait_ms=1500` written into the code.
A broker may hold a fetch that long when it has no new data; a broker that does not
answer a waiting fetch early when a message arrives (the embedded broker of earlier
versions did not) then delays every event by up to that long. A short wait bounds that
delay, whatever the broker, at the cost of more empty fetches while idle. The transport
is registered under the `nbakafka://` scheme (an entry point of the `faust.transports`
group, pyproject.toml), Faust's own extension point for transports.
"""

from __future__ import annotations

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

#: How long a fetch may wait at the broker for data: the worst added delay per message
#: when the broker holds fetches; ~20 empty fetches per second while idle.
FETCH_MAX_WAIT_MS = 50


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its fetcher; not yet started here
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport whose worker consumer waits at most FETCH_MAX_WAIT_MS."""

    Consumer = _Consumer
