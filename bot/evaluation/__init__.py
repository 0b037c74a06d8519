"""Evaluation before trust: ``ooda eval`` over recorded incidents, recording suites from past
tasks, and the shadow-mode commands.
"""
