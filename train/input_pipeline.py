"""Images in memory and the tf.data input pipeline with microscopy augmentation.

Images are decoded and resized once with the shared resize policy (``smearscope_core.manifest.load_images``),
so training sees exactly the pixels the app will feed the model. Augmentation models what changes
between clinics: slide orientation (flips, 90-degree turns), magnification (small scale/crop),
illumination (brightness/contrast), stain batches (hue/saturation), focus (blur) and camera
compression (JPEG re-encoding); its settings are ``train.config.Augmentation``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from train.config import Augmentation


def _gaussian_blur(image: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    offsets = tf.range(-2.0, 3.0)
    weights = tf.exp(-(offsets**2) / (2.0 * sigma**2))
    weights /= tf.reduce_sum(weights)
    kernel = tf.tile((weights[:, None] * weights[None, :])[:, :, None, None], [1, 1, 3, 1])
    blurred = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "SAME", data_format="NHWC")
    return blurred[0]


def augment_image(image: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """One random microscopy augmentation of a uint8 [H, W, 3] image -> float32 in [0, 255]."""
    size = tf.shape(image)[0]
    x = tf.image.convert_image_dtype(image, tf.float32)
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_flip_up_down(x)
    x = tf.image.rot90(x, tf.random.uniform([], 0, 4, dtype=tf.int32))
    scale = tf.random.uniform([], aug.min_scale, 1.0)
    if aug.deep_zoom_probability:
        deep = tf.random.uniform([], aug.deep_zoom_min_scale, aug.min_scale)
        scale = tf.where(tf.random.uniform([]) < aug.deep_zoom_probability, deep, scale)
    side = tf.cast(tf.cast(size, tf.float32) * scale, tf.int32)
    x = tf.image.random_crop(x, tf.stack([side, side, 3]))
    x = tf.image.resize(x, tf.stack([size, size]), method="bilinear", antialias=True)
    x = tf.image.random_brightness(x, aug.brightness)
    x = tf.image.random_contrast(x, *aug.contrast)
    x = tf.image.random_hue(tf.clip_by_value(x, 0.0, 1.0), aug.hue)
    x = tf.image.random_saturation(x, *aug.saturation)
    x = tf.clip_by_value(x, 0.0, 1.0)
    if aug.od_scale or aug.od_shift:  # another stain: optical density scaled and shifted per channel
        density = -tf.math.log((x * 255.0 + 1.0) / 256.0)
        density = density * tf.random.uniform([3], 1.0 - aug.od_scale, 1.0 + aug.od_scale)
        density += tf.random.uniform([3], -aug.od_shift, aug.od_shift)
        x = tf.clip_by_value((tf.exp(-tf.maximum(density, 0.0)) * 256.0 - 1.0) / 255.0, 0.0, 1.0)
    if aug.white_balance:
        x = tf.clip_by_value(x * tf.random.uniform([3], 1.0 - aug.white_balance, 1.0 + aug.white_balance), 0.0, 1.0)
    if aug.gamma != (1.0, 1.0):
        x = x ** tf.random.uniform([], *aug.gamma)
    sigma = tf.random.uniform([], *aug.blur_sigma)
    x = tf.cond(tf.random.uniform([]) < aug.blur_probability, lambda: _gaussian_blur(x, sigma), lambda: x)
    x = tf.cond(
        tf.random.uniform([]) < aug.jpeg_probability,
        lambda: tf.image.random_jpeg_quality(x, *aug.jpeg_quality),
        lambda: x,
    )
    x = tf.ensure_shape(tf.clip_by_value(x, 0.0, 1.0), image.shape)
    return x * 255.0


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    augmentation: Augmentation | None = None,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 raw RGB in [0, 255], label); augmented and shuffled when training."""
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        data = data.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    if augmentation is not None:
        data = data.map(lambda x, y: (augment_image(x, augmentation), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = data.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
