"""A student decoded by llama.cpp.

Its GGUF export, the process that serves it, and the choice between llama.cpp and transformers;
shared by the deployer and the evaluator.
"""
