"""The company's documents as knowledge: sources (files, pages, sitemaps, crawls), their
text split into passages, and the passages' retrieval for the LLM's prompt."""
