"""The command-line layer: the commands (train, evaluate, predict, export, convert, verify,
prepare), their flags, grouped --help and error lines (app.py).

Only this package touches absl flags (besides config.py's flag generation) or changes the
process (threading), when a command runs; importing it does neither. The commands' launcher
(pspnet_tf_launch) sets TensorFlow's start-up variables and catches its start-up lines before
it imports them.
"""
