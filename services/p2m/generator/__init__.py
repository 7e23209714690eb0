"""The dataset generator: synthetic examples of a task from the teacher LLM."""
