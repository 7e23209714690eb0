"""The retriever: datasets and student models."""
