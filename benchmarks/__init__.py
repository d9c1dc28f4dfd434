"""Timed comparisons, printed as one table and measured side by side in one run (`python -m benchmarks`).

throughput.py        training / inference runners on the PyTorch side and the interleaved scheduler
keras_peer.py        the Keras 3 / TensorFlow peer: its own venv and a worker process spoken to in JSON lines
time_to_accuracy.py  cnnarena's `fast` preset through train_run, test accuracy after every epoch
table.py             targets judged met / missed, and the table (pure functions)
serve_load.py        load test of `cnnarena serve` (a separate script)
"""
