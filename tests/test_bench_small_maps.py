"""The small-maps benchmark: its contenders compute one convolution, and its rows add up."""

import jax
import numpy as np

from tinyimagenet_jax.bench import common, small_maps


def test_both_contenders_compute_the_same_convolution_on_every_case():
  for _, batch, side, channels, features in small_maps.CASES:
    x = jax.random.normal(jax.random.key(0), (min(batch, 2), side, side, channels))
    w = jax.random.normal(jax.random.key(1), (3, 3, channels, features))
    want = small_maps.lax_conv(x, w)
    np.testing.assert_allclose(small_maps.product_conv(x, w), want, rtol=1e-4,
                               atol=1e-4 * float(np.abs(want).max()))


def test_a_row_per_case_with_each_ratio_of_its_times(monkeypatch):
  monkeypatch.setattr(small_maps, 'CASES', (('two', 2, 2, 3, 4), ('one', 2, 1, 3, 4)))
  rows = small_maps.small_maps(common.Args(batches=1, warmup=1, repeats=1))
  assert [row['case'] for row in rows] == ['two', 'one']
  assert rows[0]['shape'] == '2x2x2x3 -> 4'
  for row in rows:
    for part in ('forward', 'gradients'):
      assert row[f'lax_{part}_ms'] > 0 and row[f'product_{part}_ms'] > 0
      ratio = row[f'lax_{part}_ms'] / row[f'product_{part}_ms']  # of the rounded times
      np.testing.assert_allclose(row[f'{part}_lax_over_product'], ratio, rtol=0.2)
