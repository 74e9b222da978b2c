"""`python -m sg_keras --flagfile=quick ...`: the training job, as `sg-keras-train` runs it."""

from sg_keras.job import cli

if __name__ == "__main__":
    cli.run()
