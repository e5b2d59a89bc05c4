"""
The daemon: options, the twistd service, workers, the reactor, descriptor limits, the demo origin.
"""
