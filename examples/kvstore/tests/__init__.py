"""
Tests of the kvstore example: commands through the protocol, real clients
over loopback, redis-benchmark, and twistd.
"""
