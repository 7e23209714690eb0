"""The prompt parser: prompt text -> TaskSpec."""
