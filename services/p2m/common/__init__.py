"""Code shared by every service: settings, logging, errors, gRPC bootstrap, artifacts, LLM."""
