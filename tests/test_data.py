"""Minibatches: epoch orders, stored and computed permutations (vi_ext.orders), the
prefetcher, host buffers, .npy files (vi_ext.data)."""


import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vi_ext as vx
from vi_ext.data import Prefetcher, as_dataset, open_npy
from vi_ext.orders import permute, round_keys


def test_every_row_once_per_epoch_and_the_order_is_reproducible(small):
    ds = as_dataset({"X": small[0]}, 32, True, jax.random.PRNGKey(1))
    assert ds.steps_per_epoch == 6  # 200 // 32: the last 8 rows of each order wait
    epoch0 = np.concatenate([ds.rows(t) for t in range(6)])
    assert len(np.unique(epoch0)) == 192
    assert not np.array_equal(epoch0, np.concatenate([ds.rows(t) for t in range(6, 12)]))
    again = as_dataset({"X": small[0]}, 32, True, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(ds.chunk_rows(5, 4, 6), again.chunk_rows(5, 4, 6))
    in_order = as_dataset({"X": small[0]}, 32, False, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(in_order.rows(7), np.arange(32, 64))


def test_the_prefetcher_hands_over_the_batches_asked_for():
    ds = as_dataset({"a": np.arange(40.0)}, 4, True, jax.random.PRNGKey(0))
    calls = []

    def put(rows):
        calls.append(rows)
        return {"a": ds.arrays["a"][rows]}

    p = Prefetcher(ds, 3, put)
    first = p.get(0, 3)
    p.prepare(3, 2)                          # gathered now, handed over by the next get
    second = p.get(3, 2)
    assert len(calls) == 2
    np.testing.assert_array_equal(first["a"][2], ds.batch(2)["a"])
    np.testing.assert_array_equal(second["a"][:2], np.stack([ds.batch(3)["a"],
                                                             ds.batch(4)["a"]]))
    np.testing.assert_array_equal(second["a"][2], second["a"][1])   # padding
    p.prepare(5, 3)
    np.testing.assert_array_equal(p.get(4, 3)["a"][0], ds.batch(4)["a"])   # not the prepared
    assert len(calls) == 4


def test_rows_computed_ahead_on_a_thread_are_the_rows_asked_for(monkeypatch):
    from vi_ext import orders

    monkeypatch.setattr(orders, "STORED_ORDER_MAX_ROWS", 10)   # computed orders: rows ahead
    ds = as_dataset({"a": np.arange(40.0)}, 4, True, jax.random.PRNGKey(0))
    p = Prefetcher(ds, 3, lambda rows: {"a": ds.arrays["a"][rows]})
    try:
        p.prepare(0, 3, then=(3, 3))
        np.testing.assert_array_equal(p.get(0, 3)["a"], ds.arrays["a"][ds.chunk_rows(0, 3, 3)])
        p.prepare(3, 3, then=(6, 2))         # uses the rows computed ahead
        assert p._rows[:2] == (6, 2)
        np.testing.assert_array_equal(p.get(3, 3)["a"], ds.arrays["a"][ds.chunk_rows(3, 3, 3)])
        p.prepare(7, 3)                      # not the chunk computed ahead: computed now
        np.testing.assert_array_equal(p.get(7, 3)["a"], ds.arrays["a"][ds.chunk_rows(7, 3, 3)])
    finally:
        p.close()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), b=st.integers(1, 300), start=st.integers(0, 40),
       count=st.integers(1, 25), pad=st.integers(0, 3), shuffle=st.booleans(),
       computed=st.booleans())
def test_a_chunk_holds_the_rows_of_its_steps(n, b, start, count, pad, shuffle, computed):
    # a chunk spans epochs at any place; its rows are those of its steps one by one
    from vi_ext import orders

    b = min(b, n)
    limit = orders.STORED_ORDER_MAX_ROWS
    orders.STORED_ORDER_MAX_ROWS = 0 if computed else limit
    try:
        ds = as_dataset({"a": np.arange(n)}, b, shuffle, jax.random.PRNGKey(n + b))
        chunk = ds.chunk_rows(start, count, count + pad)
        steps = [ds.chunk_rows(start + i, 1, 1)[0] for i in range(count)]
    finally:
        orders.STORED_ORDER_MAX_ROWS = limit
    np.testing.assert_array_equal(chunk, np.stack(steps + [steps[-1]] * pad))


def test_stored_and_computed_orders_visit_every_row_once(monkeypatch):
    from vi_ext import orders

    for limit in (10**6, 100):               # stored up to the limit, computed beyond
        monkeypatch.setattr(orders, "STORED_ORDER_MAX_ROWS", limit)
        ds = as_dataset({"X": np.zeros(1000)}, 100, True, jax.random.PRNGKey(4))
        epoch = np.concatenate([ds.rows(t) for t in range(10)])
        np.testing.assert_array_equal(np.sort(epoch), np.arange(1000))
        np.testing.assert_array_equal(ds.chunk_rows(3, 9, 9)[0], ds.rows(3))


@pytest.mark.parametrize("n", [1, 2, 7, 200, 4097])
def test_the_computed_epoch_order_is_a_permutation(n):
    keys = round_keys((1, 2), 0)
    order = permute(np.arange(n), n, keys)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    if n >= 200:
        assert not np.array_equal(order, np.arange(n))
        assert not np.array_equal(order, permute(np.arange(n), n, round_keys((1, 2), 1)))
        # a batch's rows, computed alone, are those of the whole order
        np.testing.assert_array_equal(permute(np.arange(50, 90), n, keys), order[50:90])


def test_the_64_bit_network_beyond_2_to_the_32_rows_is_consistent():
    n = 2**33 + 5   # too many rows to enumerate: distinct, in range, one function of position
    keys = round_keys((1, 2), 0)
    order = permute(np.arange(20_000), n, keys)
    assert len(np.unique(order)) == 20_000 and order.min() >= 0 and order.max() < n
    np.testing.assert_array_equal(permute(np.arange(700, 900), n, keys), order[700:900])


def test_rows_gathered_into_aligned_buffers_are_the_rows():
    from vi_ext.data import BatchBuffers, take_rows

    a = np.arange(60.0, dtype=np.float32).reshape(20, 3)
    bufs = BatchBuffers({"a": a}, (2, 4))
    first, second = bufs.next()["a"], bufs.next()["a"]
    assert first.ctypes.data % 64 == 0 and second.ctypes.data != first.ctypes.data
    assert bufs.next()["a"].ctypes.data == first.ctypes.data   # in turn
    rows = np.array([[0, 5, 7, 19], [3, 3, 2, 1]])
    np.testing.assert_array_equal(take_rows(a, rows, first), a[rows])
    np.testing.assert_array_equal(take_rows(a, rows), a[rows])
    with pytest.raises(vx.ArgumentError, match="'out'.*shape"):
        take_rows(a, rows[:1], first)                      # a buffer of another shape
    with pytest.raises(vx.ArgumentError, match="'out'"):
        take_rows(a, rows, first.astype(np.float64))      # of another dtype


def test_a_fortran_ordered_or_non_array_file_is_refused(tmp_path):
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((10, 3))))
    with pytest.raises(vx.ArgumentError, match="Fortran"):
        open_npy(tmp_path / "f.npy")
    np.savez(tmp_path / "z.npz", a=np.zeros(3))
    with pytest.raises(vx.ArgumentError, match="not a .npy"):
        open_npy(tmp_path / "z.npz")
