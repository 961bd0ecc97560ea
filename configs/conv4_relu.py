"""First report, Krizhevsky 2012 Fig. 1: conv4 with ReLU on CIFAR-10.

    python launch.py --config=configs/conv4_relu.py

Setup as the report: pixels / 255, no regularisation, SGD batch 128 with the
learning rate chosen for ReLU (0.2), stop at <= 25% training error, at most 30
epochs. The report stopped at epoch 6 (tanh, lr 0.05: epoch 8).

Without TFDS data (offline), use the image-folder copy of CIFAR-10:

    tar xzf ../shared/data/cifar-10-images-jpg.tgz -C /tmp
    python launch.py --config=configs/conv4_relu.py \
        --config.data.name=image_folder \
        --config.data.root=/tmp/cifar-10-images-jpg

Measured here (2 CPU cores, image-folder JPEGs): 240.6 s per epoch (207 img/s);
after epoch 1, train error 0.762 and test top-1 0.386.
"""

from tinyimagenet_jax.config import base_config


def get_config(activation: str = 'relu', learning_rate: float = 0.2):
  config = base_config()
  config.data.name = 'cifar10'
  config.model.name = 'conv4'
  config.model.activation = activation
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = learning_rate
  config.batch_size = 128
  config.eval_batch_size = 500
  config.num_epochs = 30
  config.target_train_error = 0.25
  return config
