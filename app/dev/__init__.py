"""Development tooling: the embedded broker (real Apache Kafka from Maven Central jars), the
simulator, the demo and the parent-death helper their child processes use.
"""
