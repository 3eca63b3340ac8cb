"""The chat websocket's parts: frame parsing and building (``frames``), who may connect
(``access``), and relaying one reply to every tab of a conversation (``relay``). The
consumer (``chatbot.consumers``) wires them together; README "The chat protocol"."""
