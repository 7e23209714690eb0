"""The embedded OpenAI-compatible LLM endpoint (llama.cpp through xllamacpp)."""
