"""The evaluator: scores a trained student, or the teacher LLM, on held-out examples."""
