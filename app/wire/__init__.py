"""The wire contract: what PSO reads and writes on Kafka, as pydantic models, and the codec
that turns bytes into samples or dead letters. Imports nothing of PSO but ``app.core.types``.
"""
