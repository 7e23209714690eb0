"""Kubernetes: the custom-objects API p2m talks to, and the RayJob and InferenceService it builds.

Only the trainer's ``rayjob`` backend and the deployer's ``kserve`` backend import this package.
"""
