"""The training job behind `train.py`: flags, data, the loop, checkpoints, logs and plots.

Everything here uses the library (`sg_keras`) and nothing in the library
uses it.
"""
