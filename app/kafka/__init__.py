"""Kafka plumbing: one connection config, one range reader, topics, the producer client and
replay. aiokafka lives here (and in ``agents``); nothing here knows Faust.
"""
