"""
Runnable examples of txstateproto handlers, one directory each, with its own
README and tests. A package so that C{twistd stateproto --protocol
examples.<name>.<Class>} resolves from the checkout root.
"""
