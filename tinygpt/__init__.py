"""tinygpt: build, train, run and look inside a GPT-style language model written from scratch."""
__version__ = "0.1.0"
