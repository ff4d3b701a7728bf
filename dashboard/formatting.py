"""How every number on the dashboard is written: by its uncertainty, or to the resolution of
the limit it is compared with. No Streamlit here.

* `with_error(1.0512, 0.2137)` -> "1.05 ± 0.21": the error keeps two significant digits (one
  more than the first digit of an error from 0.1 to 0.35 needs, Particle Data Group style) and
  the value is rounded to the same decimal place.
* `asymmetric(1.05, -0.19, 0.23)` -> "1.05 −0.19 / +0.23" (errors as signed offsets).
* `against(0.0006625, 0.05)` -> "0.0007": a check value shown with two digits more than the
  limit's first significant digit (the limit sets what resolution matters).
* `number(x)` -> four significant digits without an exponent for 1e-3 <= |x| < 1e6; "n/a" when
  missing or not finite.
"""

from __future__ import annotations

import math
from typing import Any

NA = "n/a"
MINUS = "−"  # U+2212, as typeset; the ASCII hyphen is kept for exponents


def finite_or_none(x: Any) -> float | None:
    """``float(x)`` when that is a finite number, else None (missing, text, NaN, inf)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fixed(x: float, decimals: int) -> str:
    text = f"{x:.{max(decimals, 0)}f}"
    if float(text) == 0:  # "-0.00" -> "0.00"
        text = text.lstrip("-")
    return text.replace("-", MINUS)


def decimals_for(error: float, digits: int = 2) -> int:
    """Decimal places that leave `digits` significant digits in `error` (0 for errors >= 10)."""
    if not error or not math.isfinite(error):
        return 3
    return max(0, digits - 1 - math.floor(math.log10(abs(error))))


def number(x: Any, sig: int = 4) -> str:
    """A number without an error: `sig` significant digits, fixed notation in the usual ranges."""
    f = finite_or_none(x)
    if f is None:
        return NA if x is None or _is_number(x) else str(x)
    if f == 0:
        return "0"
    mag = math.floor(math.log10(abs(f)))
    if -3 <= mag < 6:
        text = _fixed(f, max(0, sig - 1 - mag))
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    return f"{f:.{sig - 1}e}".replace("-", MINUS, 1 if f < 0 else 0)


def cell(x: Any) -> str:
    """A setting as a table cell: numbers by `number`, booleans yes/no, nothing as ''."""
    if x is None or (isinstance(x, str) and not x):
        return ""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return number(x) if isinstance(x, float) else str(x)
    return str(x)


def _is_number(x: Any) -> bool:
    """True when x converts to a float (a non-finite one is shown as n/a)."""
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


def with_error(value: Any, error: Any) -> str:
    """'1.05 ± 0.21': the value rounded to the decimal place of the error's 2nd digit."""
    v, e = finite_or_none(value), finite_or_none(error)
    if v is None:
        return NA
    if e is None or e <= 0:
        return number(v)
    d = decimals_for(e)
    return f"{_fixed(v, d)} ± {_fixed(e, d)}"


def asymmetric(value: Any, err_lo: Any, err_hi: Any) -> str:
    """'1.05 −0.19 / +0.23' from signed offsets (err_lo <= 0 <= err_hi; signs are normalised).
    An open side (None) shows as 'open'."""
    v = finite_or_none(value)
    if v is None:
        return NA
    lo, hi = finite_or_none(err_lo), finite_or_none(err_hi)
    known = [abs(e) for e in (lo, hi) if e is not None and e != 0]
    if not known:
        return number(v)
    d = decimals_for(min(known))
    lo_text = f"{MINUS}{_fixed(abs(lo), d)}" if lo is not None else f"{MINUS}open"
    hi_text = f"+{_fixed(abs(hi), d)}" if hi is not None else "+open"
    return f"{_fixed(v, d)} {lo_text} / {hi_text}"


def error(err: Any, like: Any = None) -> str:
    """An error on its own ('0.21'), or to the decimals of another error `like`."""
    e = finite_or_none(err)
    if e is None:
        return NA
    ref = finite_or_none(like)
    d = decimals_for(ref if ref else e)
    return _fixed(e, d)


def against(value: Any, limit: Any) -> str:
    """A check value to the resolution of its limit: two digits past the limit's first."""
    v, t = finite_or_none(value), finite_or_none(limit)
    if v is None:
        return NA
    if t is None or t == 0:
        return number(v, 3)
    return _fixed(v, decimals_for(t, digits=3))


def mean_with_error(values: Any) -> tuple[float | None, float | None]:
    """Sample mean and its standard error (std / sqrt(n), ddof=1); (None, None) if empty."""
    xs = [f for f in (finite_or_none(v) for v in values or []) if f is not None]
    if not xs:
        return None, None
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, None
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n)


def present(x: Any) -> bool:
    """False for None and NaN (missing cells), True for anything else."""
    if x is None:
        return False
    try:
        return not (isinstance(x, float) and math.isnan(x))
    except TypeError:
        return True


def display_frame(df: Any, names: dict[str, str] | None = None) -> Any:
    """A table as people read it: columns renamed (`names`: raw -> human, only those columns,
    in that order, when given), times as 'YYYY-MM-DD HH:MM:SS' UTC, and no 'None' / 'NaN'
    cells (missing values are blank)."""
    import pandas as pd

    out = df.copy()
    if names is not None:
        out = out[[c for c in names if c in out.columns]]
    for c in out.columns:
        s = out[c]
        if pd.api.types.is_datetime64_any_dtype(s):
            out[c] = s.dt.strftime("%Y-%m-%d %H:%M:%S").fillna("")
        elif not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            # object or string columns (pandas 3 stores text as "str", missing as NaN)
            out[c] = [
                ""
                if not present(v)
                else v.strftime("%Y-%m-%d %H:%M:%S")
                if hasattr(v, "strftime")
                else v
                for v in s
            ]
        elif pd.api.types.is_float_dtype(s) and s.isna().any():
            out[c] = ["" if not present(v) else number(v) for v in s]
    if names is not None:
        out = out.rename(columns=names)
    return out
