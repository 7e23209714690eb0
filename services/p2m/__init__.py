"""Prompt2Model: from a prompt to a small, deployed model."""

__version__ = "0.1.0"
