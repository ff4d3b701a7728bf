"""Feature / weight / selection expressions are bounded: hostile input is refused at once.

Issue 16, finding 7: the feature ``x + 9**9**9`` kept a worker (and `nsbi analysis validate`)
busy for more than a minute computing a 370-million-digit integer. Each hostile expression
below must be refused within one second with an ExpressionError (a DataError, which the
analysis validator reports with the key's line) naming the file, the expression and the limit.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from sbi_engine import expressions as ex
from sbi_engine.data import DataError, load_sample

REFUSE_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "x": np.arange(6, dtype=np.float64),
            "n": np.arange(6, dtype=np.int64),
            "jets": pa.array([[1.0, 2.0], [3.0], [4.0], [4.0, 5.0, 6.0], [7.0], [8.0, 9.0]]),
        }
    )
    path = tmp_path_factory.mktemp("expr") / "events.parquet"
    pq.write_table(table, path)
    return path


HOSTILE = [
    # (expression, what the message says)
    ("x + 9**9**9", r"raises to the power 387420489; exponents are limited to \|p\| <= 64"),
    ("9**9**9", r"raises to the power 387420489"),
    ("x * 9.0 ** 9 ** 9", r"raises to the power 387420489"),
    ("n ** (9 ** 9)", r"raises to the power 387420489"),
    ("x + 2 ** (3 ** 40)", r"raises to the power 12157665459056928801"),
    ("x ** 1000", r"raises to the power 1000; exponents are limited"),
    ("x ** -65", r"raises to the power -65"),
    ("x ** 1e400", r"raises to the power inf"),
    ("x ** (64 + 1)", r"raises to the power 65"),
    ("x ** np.float64(1e9)", r"raises to the power"),
    ("np.sqrt(x) + x ** ak.max(jets) ** 9", r"raises to the power"),
    ("((9**64)**64)**64", r"integer power of about \d+ bits; exact integer powers are limited"),
    ("(1, 2) * 10**9 + x", r"repeats a sequence with '\*'"),
    ("x * ('a' * 10**9)", r"uses the constant 'a'; only numbers"),
    ("x + ('%999999999d' % 1)", r"uses the constant '%999999999d'"),
    ("x" + " + x" * 120, r"is nested more than 100 levels deep"),
    ("-" * 3000 + "x", r"nested"),
    ("np.sqrt(" * 99 + "x" + ")" * 99, r"is nested more than 100 levels deep"),
    ("x" * 5000, r"is 5000 characters long; the limit is 4000"),
    ("x + " + " + ".join(f"np.minimum(x, {i})" for i in range(150)), r"nested|nodes"),
]


@pytest.mark.parametrize(("text", "message"), HOSTILE, ids=[h[0][:40] for h in HOSTILE])
def test_hostile_expressions_are_refused_within_a_second(parquet_file, text, message):
    load_sample(parquet_file, features=["x"])  # readers and awkward imported outside the timing
    t0 = time.perf_counter()
    with pytest.raises(ex.ExpressionError, match=message) as err:
        load_sample(parquet_file, features={"f": text})
    elapsed = time.perf_counter() - t0
    assert elapsed < REFUSE_WITHIN_S, f"{text[:40]!r} took {elapsed:.2f} s to refuse"
    msg = str(err.value)
    assert isinstance(err.value, DataError)  # what the analysis validator catches
    assert "events.parquet" in msg and "feature 'f'" in msg  # names the file and the expression
    assert len(msg) < 400  # a long expression is shortened in the message


def test_the_same_limits_apply_to_weights_and_selections(parquet_file):
    with pytest.raises(ex.ExpressionError, match=r"weight 'x \+ 9\*\*9\*\*9' raises to the power"):
        load_sample(parquet_file, features=["x"], weight="x + 9**9**9")
    with pytest.raises(ex.ExpressionError, match=r"selection .* raises to the power 1000"):
        load_sample(parquet_file, features=["x"], selection="x ** 1000 > 1")


def test_ordinary_powers_products_and_limits_at_the_edge_still_work(parquet_file):
    s = load_sample(
        parquet_file,
        features={
            "sq": "x ** 2",
            "root": "x ** 0.5 + x ** (1 / 2)",
            "edge": "(x + 1) ** -64 * 2 ** 64",
            "big_int": "x * 2**64 ** 1",
            "prod": "2 * x * jets[:, 0]",
            "nested": "np.sqrt(" * 40 + "x" + ")" * 40,
        },
    )
    x = np.arange(6.0)
    np.testing.assert_allclose(s.features[:, 0], x**2)
    np.testing.assert_allclose(s.features[:, 1], 2 * np.sqrt(x), rtol=1e-6)
    np.testing.assert_allclose(s.features[:, 2], (x + 1) ** -64.0 * 2.0**64, rtol=1e-5)
    np.testing.assert_allclose(s.features[:, 3], x * 2.0**64, rtol=1e-6)
    np.testing.assert_allclose(s.features[:, 4], 2 * x * [1, 3, 4, 4, 7, 8])


def test_limits_are_named_constants_and_checked_before_compiling():
    assert (ex.MAX_EXPONENT, ex.MAX_TEXT) == (64, 4000)
    assert ex.MAX_DEPTH >= 50 and ex.MAX_NODES >= 500 and ex.MAX_INT_BITS >= 64 * 64

    class Table:
        source, names, n_rows = "t", ["x"], None

        def get_many(self, names):  # pragma: no cover - never read: refused at parse time
            raise AssertionError("read a column of a refused expression")

        def missing(self, name, context):  # pragma: no cover
            return DataError(f"no column {name!r}")

    t0 = time.perf_counter()
    for text in ("x ** 9999999999999999999999", "x ** -65.5", "x" * 4001):
        with pytest.raises(ex.ExpressionError):
            ex.parse(text, "feature 'f'", Table())
    assert time.perf_counter() - t0 < REFUSE_WITHIN_S
