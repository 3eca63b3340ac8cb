from __future__ import annotations

import pprint

from autobahn.websocket import protocol

from chatbot import autobahn_tuning


def test_the_config_dump_is_only_formatted_when_written() -> None:
    config = [("openHandshakeTimeout", 5, "Factory"), ("maxMessagePayloadSize", 0, "Factory")]
    autobahn_tuning.install()
    assert protocol.pformat is autobahn_tuning.LazyPretty
    lazy = protocol.pformat(config)
    assert isinstance(lazy, autobahn_tuning.LazyPretty)  # nothing formatted yet
    # What a log line would have printed is unchanged.
    assert f"\n{lazy}" == "\n" + pprint.pformat(config)
    autobahn_tuning.install()  # idempotent
    assert protocol.pformat is autobahn_tuning.LazyPretty
