"""A fake LLM provider: a real HTTP server on 127.0.0.1 speaking the OpenAI, DashScope and
Zhipu wire formats (chat, streaming, embeddings and their failures), for development,
tests and benchmarks. ``server`` is the entry point; ``manage.py fake_llm`` runs it."""
