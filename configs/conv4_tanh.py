"""First report, Krizhevsky 2012 Fig. 1: conv4 with tanh on CIFAR-10.

    python launch.py --config=configs/conv4_tanh.py

The same setup as configs/conv4_relu.py (see there for the offline
image-folder override), with tanh and the learning rate the report chose for
it (0.05). The report stopped at epoch 8, ReLU at epoch 6.

Measured here (2 CPU cores, image-folder JPEGs): 253.4 s per epoch (197 img/s);
after epoch 1, train error 0.590 and test top-1 0.506.
"""

from configs import conv4_relu


def get_config():
  return conv4_relu.get_config(activation='tanh', learning_rate=0.05)
