"""The command-line layer: the commands (train, evaluate, predict, export, convert, verify,
prepare), their flags, grouped --help and start-up (startup.py, app.py).

Only this package touches absl flags (besides config.py's flag generation) or changes the
process (environment variables, file descriptor 2, threading); importing the package itself
does neither: each command module calls `startup.start()` before it imports TensorFlow.
"""
