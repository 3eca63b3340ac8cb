"""The chat websocket's parts: frame parsing and building (``frames``), who may connect and
how fast they may send (``access``), who a connection speaks for and its welcome
(``session``), the visitor's other tabs (``tabs``), the wait for a person (``handoff_wait``),
and relaying one message and its reply to every connection concerned (``relay``). The
consumer (``chatbot.consumers``) wires them together; docs/chat-protocol.md."""
