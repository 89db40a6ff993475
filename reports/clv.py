"""Customer lifetime value: BG/NBD purchase counts times Gamma-Gamma spend.

Transactions are reduced to one RFM row per customer (frequency, recency, age,
mean repeat spend); the BG/NBD model (Fader, Hardie & Lee 2005, "Counting your
customers the easy way") or its modification MBG/NBD (Batislam, Denizel &
Filiztekin 2007, in which a customer may also drop out right after the first
purchase) predicts future purchases from the first three, the
Gamma-Gamma model (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value
curves"; Fader & Hardie 2013, "The Gamma-Gamma model of monetary value")
predicts the value of each purchase from the last two, and their product,
discounted period by period, is the customer's expected future value.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special
from threadpoolctl import ThreadpoolController

__all__ = [
    "BgNbdFit",
    "ClvModel",
    "GammaGammaFit",
    "PURCHASE_MODELS",
    "PurchaseModel",
    "RfmSummary",
    "TimeUnit",
    "customer_lifetime_value",
    "expected_average_value",
    "expected_purchases",
    "expected_purchases_new",
    "fit_bgnbd",
    "fit_clv_model",
    "fit_gamma_gamma",
    "fit_mbgnbd",
    "fit_purchase_model",
    "log_likelihood",
    "probability_alive",
    "summarise_transactions",
]

TimeUnit = Literal["W", "D"]
PurchaseModel = Literal["bgnbd", "mbgnbd"]
PURCHASE_MODELS: tuple[PurchaseModel, ...] = ("bgnbd", "mbgnbd")

_DAYS_PER_UNIT: dict[str, float] = {"W": 7.0, "D": 1.0}
# Parameters are optimised as logarithms inside these bounds, so that a runaway
# (degenerate data) stops at a finite value instead of overflowing.
_LOG_BOUND = math.log(1e8)
# Customers per block when evaluating many horizons at once.
_BLOCK = 65_536

FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------
# RFM summary
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RfmSummary:
    """Per-customer recency, frequency and monetary value over a calibration period.

    frequency: repeat purchases (on distinct days after the first purchase day);
    recency: time of the last repeat purchase since the first purchase (0 if none);
    T: age, time from the first purchase to the end of the calibration period;
    monetary_value: mean value of the repeat purchases (0 if none).
    Times are in `time_unit` ("W" weeks, "D" days).
    """

    frequency: NDArray[np.int64]
    recency: FloatArray
    T: FloatArray
    monetary_value: FloatArray
    time_unit: TimeUnit = "W"

    def __post_init__(self) -> None:
        if self.time_unit not in _DAYS_PER_UNIT:
            raise ValueError(f"time_unit must be 'W' or 'D', got {self.time_unit!r}")
        freq = np.asarray(self.frequency)
        recency = np.asarray(self.recency, dtype=np.float64)
        age = np.asarray(self.T, dtype=np.float64)
        money = np.asarray(self.monetary_value, dtype=np.float64)
        for name, arr in (("frequency", freq), ("recency", recency), ("T", age), ("monetary_value", money)):
            if arr.ndim != 1:
                raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
            if arr.shape != freq.shape:
                raise ValueError(f"{name} must have the frequency's length {freq.shape[0]}, got {arr.shape[0]}")
        if freq.dtype.kind not in "iu":
            as_float = np.asarray(freq, dtype=np.float64)
            if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
                raise ValueError("frequency must hold whole numbers of repeat purchases")
            freq = as_float.astype(np.int64)
        else:
            freq = freq.astype(np.int64, copy=False)
        if freq.size:
            _require(bool(freq.min() >= 0), "frequency must be >= 0", freq.min())
            _require(bool(np.all(np.isfinite(age))), "T must be finite", age[~np.isfinite(age)][:1])
            _require(bool(age.min() >= 0), "T must be >= 0", age.min())
            bad = ~(recency >= 0) | (recency > age)
            if np.any(bad):
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"recency must lie in [0, T], got recency={recency[i]} with T={age[i]} at index {i}")
            bad = (freq == 0) & (recency != 0)
            if np.any(bad):
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"recency must be 0 when frequency is 0, got {recency[i]} at index {i}")
            _require(bool(np.all(np.isfinite(money))), "monetary_value must be finite", money[~np.isfinite(money)][:1])
        object.__setattr__(self, "frequency", freq)
        object.__setattr__(self, "recency", recency)
        object.__setattr__(self, "T", age)
        object.__setattr__(self, "monetary_value", money)

    def __len__(self) -> int:
        return int(self.frequency.shape[0])

    def take(self, index: ArrayLike | slice) -> RfmSummary:
        """Select customers by position or boolean mask, e.g. one segment."""
        idx = index if isinstance(index, slice) else np.asarray(index)
        return RfmSummary(
            self.frequency[idx], self.recency[idx], self.T[idx], self.monetary_value[idx], self.time_unit
        )


def _require(ok: bool, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{rule}, got {value}")


def _as_days(values: ArrayLike, name: str) -> NDArray[np.datetime64]:
    arr = np.asarray(values)
    if arr.dtype.kind != "M":
        try:
            arr = arr.astype("datetime64[us]")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be datetime64 values or dates, got dtype {arr.dtype}") from exc
    days = arr.astype("datetime64[D]")
    if np.any(np.isnat(days)):
        raise ValueError(f"{name} must not contain NaT, got {int(np.isnat(days).sum())} missing")
    return days


def summarise_transactions(
    subject_ids: ArrayLike,
    timestamps: ArrayLike,
    amounts: ArrayLike,
    calibration_end: np.datetime64 | dt.date | str,
    time_unit: TimeUnit = "W",
) -> tuple[np.ndarray, RfmSummary]:
    """Reduce a transaction log to one RFM row per customer, the models' only input.

    Purchases on the same calendar day merge into one (amounts summed); the first
    day is the acquisition, later days are repeat purchases. Transactions after
    `calibration_end` (a day, inclusive) are ignored; T is measured from the first
    purchase day to `calibration_end`, the convention of Fader, Hardie & Lee's
    CDNOW calibration data (a customer first seen on 1997-01-01 has T = 272/7
    weeks at 1997-09-30). Returns the sorted subject ids and their summary.
    """
    if time_unit not in _DAYS_PER_UNIT:
        raise ValueError(f"time_unit must be 'W' or 'D', got {time_unit!r}")
    ids = np.asarray(subject_ids)
    days = _as_days(timestamps, "timestamps")
    money = np.asarray(amounts, dtype=np.float64)
    if ids.ndim != 1 or days.ndim != 1 or money.ndim != 1:
        raise ValueError(
            "subject_ids, timestamps and amounts must be one-dimensional, "
            f"got shapes {ids.shape}, {days.shape}, {money.shape}"
        )
    if not (ids.shape == days.shape == money.shape):
        raise ValueError(
            "subject_ids, timestamps and amounts must have equal lengths, "
            f"got {ids.shape[0]}, {days.shape[0]}, {money.shape[0]}"
        )
    if not np.all(np.isfinite(money)):
        raise ValueError(f"amounts must be finite, got {money[~np.isfinite(money)][0]}")
    try:
        end = np.datetime64(calibration_end, "D")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"calibration_end must be a date, got {calibration_end!r}") from exc
    if np.isnat(end):
        raise ValueError("calibration_end must be a date, got NaT")

    keep = days <= end
    ids, days, money = ids[keep], days[keep], money[keep]
    unit = _DAYS_PER_UNIT[time_unit]
    if ids.size == 0:
        empty = np.zeros(0)
        return ids[:0], RfmSummary(np.zeros(0, dtype=np.int64), empty, empty, empty, time_unit)

    unique_ids, customer = np.unique(ids, return_inverse=True)
    customer = customer.astype(np.int64).ravel()
    day = (days - end).astype(np.int64)  # <= 0
    day_min = int(day.min())
    span = -day_min + 1
    if unique_ids.size * span < 2**62:
        order = np.argsort(customer * span + (day - day_min), kind="stable")
    else:  # pragma: no cover - only for astronomically wide logs
        order = np.lexsort((day, customer))
    customer, day, money = customer[order], day[order], money[order]

    # One row per (customer, day): merge same-day purchases.
    new_day = np.empty(customer.size, dtype=bool)
    new_day[0] = True
    np.not_equal(customer[1:], customer[:-1], out=new_day[1:])
    new_day[1:] |= day[1:] != day[:-1]
    day_starts = np.flatnonzero(new_day)
    day_amount = np.add.reduceat(money, day_starts)
    day_customer = customer[day_starts]
    day_of = day[day_starts]

    # One row per customer.
    new_customer = np.empty(day_customer.size, dtype=bool)
    new_customer[0] = True
    np.not_equal(day_customer[1:], day_customer[:-1], out=new_customer[1:])
    starts = np.flatnonzero(new_customer)
    ends = np.append(starts[1:], day_customer.size) - 1
    frequency = (ends - starts).astype(np.int64)
    first_day = day_of[starts]
    repeat_total = np.add.reduceat(day_amount, starts) - day_amount[starts]
    monetary = np.where(frequency > 0, repeat_total / np.maximum(frequency, 1), 0.0)
    recency = (day_of[ends] - first_day) / unit
    age = -first_day / unit
    return unique_ids, RfmSummary(frequency, recency, age, monetary, time_unit)


# --------------------------------------------------------------------------
# BG/NBD
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BgNbdFit:
    """BG/NBD or MBG/NBD parameters: purchase rates ~ Gamma(r, alpha), dropout ~ Beta(a, b).

    `model` says where a customer may drop out: "bgnbd" right after each repeat
    purchase (so one who never came back is alive for sure), "mbgnbd" also right
    after the first purchase. alpha is in the summary's time unit. `error` names
    degenerate data ("NO_CUSTOMERS", "NO_REPEAT_PURCHASES"); the parameters are then NaN.
    """

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_customers: int
    converged: bool
    error: str | None = None
    model: PurchaseModel = "bgnbd"

    def __post_init__(self) -> None:
        if self.model not in PURCHASE_MODELS:
            raise ValueError(f"model must be one of {', '.join(PURCHASE_MODELS)}, got {self.model!r}")
        if self.error is None:
            for name in ("r", "alpha", "a", "b"):
                value = getattr(self, name)
                if not (value > 0 and math.isfinite(value)):
                    raise ValueError(f"{name} must be a finite number > 0, got {value}")


@dataclass(frozen=True, slots=True)
class _Cohort:
    """Summary arrays prepared once per fit, split by whether x > 0."""

    n: int
    x_counts: FloatArray  # customers per frequency value 0..max
    age_zero: FloatArray  # T of customers with x == 0
    x: NDArray[np.int64]  # x, t_x, T of customers with x > 0
    tx: FloatArray
    age: FloatArray


def _cohort(summary: RfmSummary) -> _Cohort:
    x = summary.frequency
    counts = np.bincount(x).astype(np.float64) if x.size else np.zeros(1)
    repeat = x > 0
    return _Cohort(len(summary), counts, summary.T[~repeat], x[repeat], summary.recency[repeat], summary.T[repeat])


def _dot(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Inner product of two per-customer arrays in one thread.

    BLAS (behind `@`) splits long inner products across threads, which stall
    each other and other work when the machine's cores are busy; einsum does not.
    """
    return float(np.einsum("i,i->", a, b))


def _bgnbd_negll(theta: FloatArray, c: _Cohort) -> tuple[float, FloatArray]:
    """Mean negative log-likelihood and its gradient in log-parameters."""
    r, alpha, a, b = np.exp(theta)
    k = np.arange(c.x_counts.size, dtype=np.float64)
    # FHL 2005, eq. 6:
    #   L = B(a, b+x)/B(a, b) Gamma(r+x) alpha^r / Gamma(r)
    #       * [ (alpha+T)^-(r+x) + [x>0] a/(b+x-1) (alpha+t_x)^-(r+x) ]
    # Terms that depend on x only are summed with the customer counts per x.
    gl, dg = special.gammaln, special.digamma
    ll_x = gl(r + k) - gl(r) + r * math.log(alpha) + gl(a + b) + gl(b + k) - gl(b) - gl(a + b + k)
    d_r_x = dg(r + k) - dg(r) + math.log(alpha)
    d_a_x = dg(a + b) - dg(a + b + k)
    d_b_x = dg(a + b) + dg(b + k) - dg(b) - dg(a + b + k)
    total = c.x_counts @ ll_x
    g_r = c.x_counts @ d_r_x
    g_alpha = c.n * r / alpha
    g_a = c.x_counts @ d_a_x
    g_b = c.x_counts @ d_b_x

    # x == 0: only "alive at T", -r log(alpha+T).
    log_aT0 = np.log(alpha + c.age_zero)
    total -= r * log_aT0.sum()
    g_r -= log_aT0.sum()
    g_alpha -= r * (1.0 / (alpha + c.age_zero)).sum()

    # x > 0: log of the bracket = -(r+x) log(alpha+T) + log1p(e^d), with d the log-odds
    # of "dropped after the last purchase": log a - log(b+x-1) + (r+x) log((alpha+T)/(alpha+t_x)).
    k1 = np.maximum(k - 1.0, 0.0) + b  # b + x - 1 for x >= 1
    log_b1, inv_b1 = np.log(k1), 1.0 / k1
    rx = r + c.x
    log_aT = np.log(alpha + c.age)
    log_ratio = log_aT - np.log(alpha + c.tx)
    d = math.log(a) - log_b1[c.x] + rx * log_ratio
    w = special.expit(d)  # probability of the "dropped" branch
    total += -_dot(rx, log_aT) + np.logaddexp(0.0, d).sum()
    g_r += -log_aT.sum() + _dot(w, log_ratio)
    g_alpha -= _dot(rx, (1.0 - w) / (alpha + c.age) + w / (alpha + c.tx))
    g_a += w.sum() / a
    g_b -= _dot(w, inv_b1[c.x])

    grad = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
    return -float(total) / c.n, -grad / c.n


@dataclass(frozen=True, slots=True)
class _MbgCohort:
    """Summary arrays prepared once per MBG/NBD fit (every customer has a dropped-out branch)."""

    n: int
    x_counts: FloatArray  # customers per frequency value 0..max
    x: NDArray[np.int64]
    xf: FloatArray
    tx: FloatArray
    age: FloatArray


def _mbgnbd_negll(theta: FloatArray, c: _MbgCohort) -> tuple[float, FloatArray]:
    """Mean negative log-likelihood of MBG/NBD and its gradient in log-parameters."""
    r, alpha, a, b = np.exp(theta)
    k = np.arange(c.x_counts.size, dtype=np.float64)
    # Batislam, Denizel & Filiztekin 2007, eq. 2: a customer alive at T has survived x + 1
    # dropout chances (after the first purchase and after each repeat), one who left did so
    # right after the x-th repeat purchase (x = 0: right after the first):
    #   L = Gamma(r+x) alpha^r / Gamma(r) * [ B(a, b+x+1)/B(a, b) (alpha+T)^-(r+x)
    #                                         + B(a+1, b+x)/B(a, b) (alpha+t_x)^-(r+x) ]
    # The second branch over the first is a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x), so
    #   log L = ll_x - (r+x) log(alpha+T) + log1p(e^d),  d = log a - log(b+x) + (r+x) log((alpha+T)/(alpha+t_x)),
    # with ll_x = log Gamma(r+x) - log Gamma(r) + r log alpha + log B(a, b+x+1) - log B(a, b).
    gl, dg = special.gammaln, special.digamma
    ll_x = gl(r + k) - gl(r) + r * math.log(alpha) + gl(a + b) + gl(b + k + 1.0) - gl(b) - gl(a + b + k + 1.0)
    d_r_x = dg(r + k) - dg(r) + math.log(alpha)
    d_a_x = dg(a + b) - dg(a + b + k + 1.0)
    d_b_x = dg(a + b) + dg(b + k + 1.0) - dg(b) - dg(a + b + k + 1.0)
    total = c.x_counts @ ll_x
    g_r = c.x_counts @ d_r_x
    g_alpha = c.n * r / alpha
    g_a = c.x_counts @ d_a_x
    g_b = c.x_counts @ d_b_x

    inv_bx = 1.0 / (b + k)
    rx = r + c.xf
    log_aT = np.log(alpha + c.age)
    log_ratio = log_aT - np.log(alpha + c.tx)
    d = math.log(a) + np.log(inv_bx)[c.x] + rx * log_ratio
    w = special.expit(d)  # probability of the "dropped" branch
    total += -_dot(rx, log_aT) + np.logaddexp(0.0, d).sum()
    g_r += -log_aT.sum() + _dot(w, log_ratio)
    g_alpha -= _dot(rx, (1.0 - w) / (alpha + c.age) + w / (alpha + c.tx))
    g_a += w.sum() / a
    g_b -= _dot(w, inv_bx[c.x])

    grad = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
    return -float(total) / c.n, -grad / c.n


_controller: ThreadpoolController | None = None
_controller_lock = threading.Lock()


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run an optimisation with BLAS on one thread.

    L-BFGS-B calls BLAS/LAPACK on tiny matrices at every step; a threaded BLAS then
    wakes its worker threads each time, and on a machine whose cores are busy they
    wait for each other: measured on 2 busy cores, the CDNOW master fits took
    0.13-0.22 s (BG/NBD) and 0.10-0.17 s (Gamma-Gamma) that way, 0.011 s and 0.004 s
    on one thread.
    """
    global _controller
    with _controller_lock:
        if _controller is None:
            _controller = ThreadpoolController()
        controller = _controller
    with controller.limit(limits=1, user_api="blas"):
        yield


def _bgnbd_start(summary: RfmSummary) -> FloatArray:
    """Moment-based start: gamma moments of the observed rates, Beta(1, 3) dropout."""
    age = np.maximum(summary.T, 1e-9)
    rate = summary.frequency / age
    mean = max(float(rate.mean()), 1e-6)
    # Var(x/T) = Var(lambda) + E[lambda / T]: remove the Poisson noise.
    var_lambda = float(rate.var()) - float(np.mean(rate / age))
    var_lambda = max(var_lambda, mean * mean / 10.0)  # shape at most 10
    r0 = min(max(mean * mean / var_lambda, 0.05), 10.0)
    alpha0 = r0 / mean
    return np.log([r0, alpha0, 1.0, 3.0])


def _minimise(fun: Any, start: FloatArray, args: tuple[Any, ...]) -> optimize.OptimizeResult:
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * start.size
    return optimize.minimize(
        fun,
        start,
        args=args,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-7, "maxcor": 20},
    )


def _converged(fun: Any, result: optimize.OptimizeResult, args: tuple[Any, ...]) -> bool:
    """True at an interior maximum: a positive definite Hessian and a vanishing Newton step.

    The optimiser's own verdict is not enough either way: L-BFGS-B may stop on a
    line search that cannot gain against rounding once the gradient is ~1e-7
    (a maximum all the same), or report success on a flat ridge that runs off to
    infinity (e.g. Gamma-Gamma with q, v -> inf when spend does not vary between
    customers). The Hessian comes from central differences of the analytic gradient.
    """
    theta = np.asarray(result.x, dtype=np.float64)
    if not np.all(np.isfinite(theta)) or np.any(np.abs(theta) >= _LOG_BOUND * (1 - 1e-9)):
        return False
    grad = fun(theta, *args)[1]
    h = 1e-4  # large enough to rise above rounding in the gradient, small for O(h^2) error
    hessian = np.empty((theta.size, theta.size))
    for i in range(theta.size):
        step = np.zeros(theta.size)
        step[i] = h
        hessian[:, i] = (fun(theta + step, *args)[1] - fun(theta - step, *args)[1]) / (2 * h)
    hessian = 0.5 * (hessian + hessian.T)
    try:
        chol = np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        return False
    newton = np.linalg.solve(chol.T, np.linalg.solve(chol, grad))
    return bool(np.all(np.isfinite(newton)) and np.max(np.abs(newton)) < 1e-4)


def fit_bgnbd(summary: RfmSummary) -> BgNbdFit:
    """Estimate BG/NBD parameters by maximum likelihood, to predict repeat purchases."""
    n = len(summary)
    if n == 0:
        return BgNbdFit(math.nan, math.nan, math.nan, math.nan, math.nan, 0, False, "NO_CUSTOMERS")
    c = _cohort(summary)
    if c.x.size == 0:
        return BgNbdFit(math.nan, math.nan, math.nan, math.nan, math.nan, n, False, "NO_REPEAT_PURCHASES")
    with _one_blas_thread():
        result = _minimise(_bgnbd_negll, _bgnbd_start(summary), (c,))
        converged = _converged(_bgnbd_negll, result, (c,))
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    return BgNbdFit(r, alpha, a, b, -float(result.fun) * n, n, converged)


def fit_mbgnbd(summary: RfmSummary) -> BgNbdFit:
    """Estimate MBG/NBD parameters by maximum likelihood, so one-time buyers can have dropped out.

    Without a repeat purchase anywhere the data cannot tell how fast customers
    buy, so the fit is then a NO_REPEAT_PURCHASES result, as for BG/NBD.
    """
    n = len(summary)
    if n == 0:
        return BgNbdFit(math.nan, math.nan, math.nan, math.nan, math.nan, 0, False, "NO_CUSTOMERS", "mbgnbd")
    x = summary.frequency
    if not np.any(x > 0):
        return BgNbdFit(math.nan, math.nan, math.nan, math.nan, math.nan, n, False, "NO_REPEAT_PURCHASES", "mbgnbd")
    c = _MbgCohort(n, np.bincount(x).astype(np.float64), x, x.astype(np.float64), summary.recency, summary.T)
    with _one_blas_thread():
        result = _minimise(_mbgnbd_negll, _bgnbd_start(summary), (c,))
        converged = _converged(_mbgnbd_negll, result, (c,))
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    return BgNbdFit(r, alpha, a, b, -float(result.fun) * n, n, converged, None, "mbgnbd")


_FITTERS = {"bgnbd": fit_bgnbd, "mbgnbd": fit_mbgnbd}


def log_likelihood(fit: BgNbdFit, summary: RfmSummary) -> float:
    """Log-likelihood of the summary under the fitted parameters, e.g. to compare models on other data."""
    n = len(summary)
    if fit.error is not None or n == 0:
        return math.nan
    theta = np.log([fit.r, fit.alpha, fit.a, fit.b])
    if fit.model == "mbgnbd":
        x = summary.frequency
        c = _MbgCohort(n, np.bincount(x).astype(np.float64), x, x.astype(np.float64), summary.recency, summary.T)
        return -_mbgnbd_negll(theta, c)[0] * n
    return -_bgnbd_negll(theta, _cohort(summary))[0] * n


def fit_purchase_model(summary: RfmSummary, model: PurchaseModel = "bgnbd") -> BgNbdFit:
    """Fit the named purchase model ("bgnbd" or "mbgnbd") on a calibration summary."""
    if model not in _FITTERS:
        raise ValueError(f"model must be one of {', '.join(PURCHASE_MODELS)}, got {model!r}")
    return _FITTERS[model](summary)


def _params(fit: BgNbdFit) -> tuple[float, float, float, float]:
    return fit.r, fit.alpha, fit.a, fit.b


def _log_odds_dropped(fit: BgNbdFit, x: FloatArray, tx: FloatArray, age: FloatArray) -> FloatArray:
    """log of  delta(x>0) a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x); -inf when x == 0.

    MBG/NBD: a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x) for every x (Batislam et al. 2007).
    """
    r, alpha, a, b = _params(fit)
    if fit.model == "mbgnbd":
        return math.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + age) - np.log(alpha + tx))
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (
            math.log(a)
            - np.log(np.where(x > 0, b + x - 1.0, 1.0))
            + (r + x) * (np.log(alpha + age) - np.log(alpha + tx))
        )
    return np.where(x > 0, value, -np.inf)


def probability_alive(fit: BgNbdFit, summary: RfmSummary) -> FloatArray:
    """Probability each customer is still active at the end of calibration, to target the ones at risk.

    P(alive) = 1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)) (Fader, Hardie & Lee 2008,
    "Computing P(alive) using the BG/NBD model"), evaluated through its log-odds; under
    MBG/NBD 1 / (1 + a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x)), below 1 for one-time buyers too.
    """
    x = summary.frequency.astype(np.float64)
    return special.expit(-_log_odds_dropped(fit, x, summary.recency, summary.T))


def _one_minus_scaled_2f1_over(a: float, b: float, r: float, x: FloatArray, z: FloatArray) -> FloatArray:
    """(1 - (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z)) / (a-1), in Euler-transformed form.

    2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z) turns the product into
    (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z): parameters that stay small as x
    grows (the overflow Fader & Hardie 2013, "Overcoming the BG/NBD model's #NUM!
    error problem", work around), and an exact 0 at a == 1 handled by the symmetric limit.
    """
    log1mz = np.log1p(-z)

    def at(a_: float) -> FloatArray:
        # Parameters far outside any converged fit (a ~ 1e5) can overflow 2F1: NaN, not a warning.
        with np.errstate(over="ignore", invalid="ignore"):
            f_minus_1 = special.hyp2f1(a_ + b - 1.0 - r, a_ - 1.0, a_ + b + x - 1.0, z) - 1.0
            return (-np.expm1((a_ - 1.0) * log1mz) - np.exp((a_ - 1.0) * log1mz) * f_minus_1) / (a_ - 1.0)

    if abs(a - 1.0) < 1e-6:
        # Near a = 1 the ratio is 0/0; the mean of a = 1 -+ h is exact to O(h^2).
        h = 1e-5
        return 0.5 * (at(1.0 - h) + at(1.0 + h))
    return at(a)


def _alive_expectation(fit: BgNbdFit, x: FloatArray, age: FloatArray, t: FloatArray) -> FloatArray:
    """E[Y(t) | alive at T, x]: expected purchases in (T, T+t] of a customer known to be active.

    BG/NBD (FHL 2005, eq. 10 without P(alive)):
      (a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))].
    MBG/NBD: the active customer's dropout probability is Beta(a, b+x+1) a posteriori
    (one more dropout survived), which is the same expression with b + 1 for b.
    """
    r, alpha, a, b = _params(fit)
    b_post = b + 1.0 if fit.model == "mbgnbd" else b
    z = t / (alpha + age + t)
    return (a + b_post + x - 1.0) * _one_minus_scaled_2f1_over(a, b_post, r, x, z)


def expected_purchases(fit: BgNbdFit, summary: RfmSummary, horizon: float | ArrayLike) -> FloatArray:
    """Expected purchases of each customer in the next `horizon` time units, given their history.

    FHL 2005, eq. 10 (MBG/NBD: Batislam et al. 2007, eq. 5). `horizon` may be an
    array that broadcasts against the customers (e.g. shape (k, 1) for k horizons).
    NaN when the fit has no parameters (see BgNbdFit.error) or parameters too
    extreme to evaluate. The hypergeometric part depends on (x, T) alone, and
    customers share few of those (everyone acquired on one day has the same T),
    so it is evaluated once per distinct pair when the horizon is the same for all.
    """
    t = np.asarray(horizon, dtype=np.float64)
    if np.any(~(t >= 0)):
        raise ValueError(f"horizon must be >= 0, got {t[~(t >= 0)].ravel()[0]}")
    x = summary.frequency.astype(np.float64)
    age = summary.T
    p_alive = special.expit(-_log_odds_dropped(fit, x, summary.recency, age))
    if x.size > 1 and (t.ndim == 0 or t.shape[-1] == 1):
        first, inverse = _distinct_pairs(x, age)
        if first.size < x.size:
            return _alive_expectation(fit, x[first], age[first], t)[..., inverse] * p_alive
    return _alive_expectation(fit, x, age, t) * p_alive


def _distinct_pairs(x: FloatArray, age: FloatArray) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Positions of one customer per distinct (x, T) pair, and each customer's pair number."""
    order = np.lexsort((age, x))
    xs, ages = x[order], age[order]
    new = np.empty(x.size, dtype=bool)
    new[0] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    new[1:] |= ages[1:] != ages[:-1]
    inverse = np.empty(x.size, dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse


def expected_purchases_new(fit: BgNbdFit, t: float | ArrayLike) -> FloatArray:
    """Expected repeat purchases of a newly acquired customer within time t.

    BG/NBD: FHL 2005, eq. 7. MBG/NBD: the customer is active after the first purchase
    with probability b/(a+b), and then p ~ Beta(a, b+1), so
      E[X(t)] = b/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b+1; a+b; t/(alpha+t))]
    (as in PyMC-Marketing; checked against direct integration in the tests).
    """
    times = np.asarray(t, dtype=np.float64)
    if np.any(~(times >= 0)):
        raise ValueError(f"t must be >= 0, got {times[~(times >= 0)].ravel()[0]}")
    r, alpha, a, b = _params(fit)
    z = times / (alpha + times)
    if fit.model == "mbgnbd":
        return b * _one_minus_scaled_2f1_over(a, b + 1.0, r, np.zeros_like(z), z)
    return (a + b - 1.0) * _one_minus_scaled_2f1_over(a, b, r, np.zeros_like(z), z)


# --------------------------------------------------------------------------
# Gamma-Gamma
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GammaGammaFit:
    """Gamma-Gamma spend parameters: z ~ Gamma(p, nu), nu ~ Gamma(q, v) across customers.

    n_customers counts the repeat customers fitted; n_excluded those left out
    because their mean repeat spend is not > 0. `error` names degenerate data
    ("NO_REPEAT_PURCHASES"); the parameters are then NaN.
    """

    p: float
    q: float
    v: float
    log_likelihood: float
    n_customers: int = 0
    converged: bool = True
    error: str | None = None
    n_excluded: int = 0

    def __post_init__(self) -> None:
        if self.error is None:
            for name in ("p", "q", "v"):
                value = getattr(self, name)
                if not (value > 0 and math.isfinite(value)):
                    raise ValueError(f"{name} must be a finite number > 0, got {value}")

    @property
    def population_mean(self) -> float:
        """Mean spend per transaction across customers, p v / (q - 1); inf when q <= 1."""
        return self.p * self.v / (self.q - 1.0) if self.q > 1.0 else math.inf


def _gg_inputs(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[NDArray[np.int64], FloatArray]:
    freq = np.asarray(frequency)
    money = np.asarray(monetary_value, dtype=np.float64)
    if freq.ndim != 1 or money.shape != freq.shape:
        raise ValueError(
            "frequency and monetary_value must be one-dimensional of equal length, "
            f"got shapes {freq.shape}, {money.shape}"
        )
    as_float = freq.astype(np.float64)
    if np.any(~(as_float >= 0)) or np.any(as_float != np.round(as_float)):
        bad = as_float[(as_float != np.round(as_float)) | ~(as_float >= 0)][0]
        raise ValueError(f"frequency must hold whole numbers >= 0, got {bad}")
    return as_float.astype(np.int64), money


def _gg_negll(theta: FloatArray, x: FloatArray, x_counts: FloatArray, xm: FloatArray) -> tuple[float, FloatArray]:
    """Mean negative log-likelihood of the mean spends (less sum log m), with its gradient in log-parameters."""
    p, q, v = np.exp(theta)
    k = np.arange(x_counts.size, dtype=np.float64)
    k[0] = 1.0  # no customer has x == 0 here; keeps the x-tables finite
    gl, dg = special.gammaln, special.digamma
    # f(m | x) = Gamma(px+q) / (Gamma(px) Gamma(q)) v^q m^(px-1) x^(px) / (v + m x)^(px+q)
    # (Fader & Hardie 2013, eq. 3). Its log, less -log m, is
    #   log Gamma(px+q) - log Gamma(px) - log Gamma(q) - px log1p(v / xm) - q log1p(xm / v)
    # with no large terms that cancel.
    ll_x = gl(p * k + q) - gl(p * k) - gl(q)
    d_p_x = k * (dg(p * k + q) - dg(p * k))
    d_q_x = dg(p * k + q) - dg(q)
    px = p * x
    log1p_v_xm = np.log1p(v / xm)
    log1p_xm_v = np.log1p(xm / v)
    total = x_counts @ ll_x - _dot(px, log1p_v_xm) - q * log1p_xm_v.sum()
    g_p = x_counts @ d_p_x - _dot(x, log1p_v_xm)
    g_q = x_counts @ d_q_x - log1p_xm_v.sum()
    g_v = ((q * xm / v - px) / (v + xm)).sum()
    n = x.size
    grad = np.array([g_p * p, g_q * q, g_v * v])
    return -float(total) / n, -grad / n


def fit_gamma_gamma(frequency: ArrayLike, monetary_value: ArrayLike) -> GammaGammaFit:
    """Estimate Gamma-Gamma spend parameters by maximum likelihood from repeat customers."""
    freq, money = _gg_inputs(frequency, monetary_value)
    repeat = freq > 0
    x, m = freq[repeat], money[repeat]
    if not np.all(np.isfinite(m)):
        raise ValueError(f"monetary_value must be finite, got {m[~np.isfinite(m)][0]}")
    # Mean spends of 0 or less (free items, refunds) have no Gamma density: they are
    # left out of the fit and counted, and still scored by expected_average_value.
    positive = m > 0
    excluded = int(x.size - np.count_nonzero(positive))
    x, m = x[positive], m[positive]
    if x.size == 0:
        return GammaGammaFit(math.nan, math.nan, math.nan, math.nan, 0, False, "NO_REPEAT_PURCHASES", excluded)

    args = (x.astype(np.float64), np.bincount(x).astype(np.float64), x * m)
    # Start: p = 1, q = 3 and v matching the observed mean spend, p v / (q - 1).
    start = np.log([1.0, 3.0, 2.0 * float(m.mean())])
    with _one_blas_thread():
        result = _minimise(_gg_negll, start, args)
        converged = _converged(_gg_negll, result, args)
    p, q, v = (float(val) for val in np.exp(result.x))
    log_likelihood = -float(result.fun) * x.size - float(np.log(m).sum())
    return GammaGammaFit(p, q, v, log_likelihood, int(x.size), converged, None, excluded)


def expected_average_value(fit: GammaGammaFit, frequency: ArrayLike, monetary_value: ArrayLike) -> FloatArray:
    """Expected value of each customer's future purchases, shrinking their mean toward the population's.

    E[Z | p, q, v, x, m] = (v + x m) p / (p x + q - 1)  (Fader, Hardie & Lee 2005b, eq. 4);
    the population mean for customers with no repeat purchase; inf where it does not exist.
    A mean repeat spend below 0 (net refunds) counts as 0.
    """
    freq, money = _gg_inputs(frequency, monetary_value)
    x = freq.astype(np.float64)
    m = np.where(freq > 0, np.maximum(money, 0.0), 0.0)
    denom = fit.p * x + fit.q - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (fit.v + x * m) * fit.p / denom
    return np.where(denom > 0, value, np.inf)


# --------------------------------------------------------------------------
# Lifetime value
# --------------------------------------------------------------------------


def customer_lifetime_value(
    bgnbd: BgNbdFit,
    gg: GammaGammaFit,
    summary: RfmSummary,
    horizon_periods: int,
    discount_rate_per_period: float,
    period_length: float = 1.0,
) -> FloatArray:
    """Expected discounted value of each customer's purchases over the next periods.

    Period k (of `period_length` summary time units) contributes the expected
    purchases in it, E[Y(k L)] - E[Y((k-1) L)], times the expected value per
    purchase, discounted by (1 + d)^k, i.e. at the end of the period.
    """
    if isinstance(horizon_periods, bool) or not isinstance(horizon_periods, (int, np.integer)) or horizon_periods < 1:
        raise ValueError(f"horizon_periods must be a whole number >= 1, got {horizon_periods!r}")
    if not (discount_rate_per_period > -1.0 and math.isfinite(discount_rate_per_period)):
        raise ValueError(f"discount_rate_per_period must be finite and > -1, got {discount_rate_per_period}")
    if not (period_length > 0 and math.isfinite(period_length)):
        raise ValueError(f"period_length must be finite and > 0, got {period_length}")
    steps = np.arange(1, int(horizon_periods) + 1, dtype=np.float64)
    grid = (steps * period_length)[:, None]
    discount = (1.0 + discount_rate_per_period) ** -steps
    n = len(summary)
    discounted = np.empty(n)
    for lo in range(0, n, _BLOCK):
        block = summary.take(slice(lo, lo + _BLOCK))
        cumulative = expected_purchases(bgnbd, block, grid)
        per_period = np.diff(cumulative, axis=0, prepend=0.0)
        discounted[lo : lo + _BLOCK] = np.einsum("k,kn->n", discount, per_period)
    return discounted * expected_average_value(gg, summary.frequency, summary.monetary_value)


@dataclass(frozen=True, slots=True)
class ClvModel:
    """Both fitted models and their time unit: what the service stores per data set.

    `bgnbd` holds the purchase model, BG/NBD or MBG/NBD (its `model` field).
    """

    bgnbd: BgNbdFit
    gamma_gamma: GammaGammaFit
    time_unit: TimeUnit = "W"

    def __post_init__(self) -> None:
        if self.time_unit not in _DAYS_PER_UNIT:
            raise ValueError(f"time_unit must be 'W' or 'D', got {self.time_unit!r}")

    def lifetime_value(
        self,
        summary: RfmSummary,
        horizon_periods: int,
        discount_rate_per_period: float,
        period_length: float = 1.0,
    ) -> FloatArray:
        """Score customers with this model; the summary must use the model's time unit."""
        if summary.time_unit != self.time_unit:
            raise ValueError(f"summary time_unit must be the model's {self.time_unit!r}, got {summary.time_unit!r}")
        return customer_lifetime_value(
            self.bgnbd, self.gamma_gamma, summary, horizon_periods, discount_rate_per_period, period_length
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (NaN becomes null), so the model can be stored and reloaded safely."""
        return {
            "model": "bgnbd+gamma-gamma",
            "version": 1,
            "time_unit": self.time_unit,
            "bgnbd": {
                "model": self.bgnbd.model,
                "r": _json_float(self.bgnbd.r),
                "alpha": _json_float(self.bgnbd.alpha),
                "a": _json_float(self.bgnbd.a),
                "b": _json_float(self.bgnbd.b),
                "log_likelihood": _json_float(self.bgnbd.log_likelihood),
                "n_customers": self.bgnbd.n_customers,
                "converged": self.bgnbd.converged,
                "error": self.bgnbd.error,
            },
            "gamma_gamma": {
                "p": _json_float(self.gamma_gamma.p),
                "q": _json_float(self.gamma_gamma.q),
                "v": _json_float(self.gamma_gamma.v),
                "log_likelihood": _json_float(self.gamma_gamma.log_likelihood),
                "n_customers": self.gamma_gamma.n_customers,
                "converged": self.gamma_gamma.converged,
                "error": self.gamma_gamma.error,
                "n_excluded": self.gamma_gamma.n_excluded,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClvModel:
        """Rebuild a stored model, checking every field."""
        if not isinstance(data, dict):
            raise ValueError(f"a stored CLV model must be a JSON object, got {type(data).__name__}")
        if data.get("model") != "bgnbd+gamma-gamma":
            raise ValueError(f"model must be 'bgnbd+gamma-gamma', got {data.get('model')!r}")
        if data.get("version") != 1:
            raise ValueError(f"version must be 1, got {data.get('version')!r}")
        bg = _section(data, "bgnbd")
        gg = _section(data, "gamma_gamma")
        purchase_model = bg.get("model", "bgnbd")  # models stored before MBG/NBD existed are BG/NBD
        if purchase_model not in PURCHASE_MODELS:
            raise ValueError(f"bgnbd.model must be one of {', '.join(PURCHASE_MODELS)}, got {purchase_model!r}")
        return cls(
            bgnbd=BgNbdFit(
                r=_read_float(bg, "bgnbd", "r"),
                alpha=_read_float(bg, "bgnbd", "alpha"),
                a=_read_float(bg, "bgnbd", "a"),
                b=_read_float(bg, "bgnbd", "b"),
                log_likelihood=_read_float(bg, "bgnbd", "log_likelihood"),
                n_customers=_read_int(bg, "bgnbd", "n_customers"),
                converged=_read_bool(bg, "bgnbd", "converged"),
                error=_read_error(bg, "bgnbd"),
                model=purchase_model,
            ),
            gamma_gamma=GammaGammaFit(
                p=_read_float(gg, "gamma_gamma", "p"),
                q=_read_float(gg, "gamma_gamma", "q"),
                v=_read_float(gg, "gamma_gamma", "v"),
                log_likelihood=_read_float(gg, "gamma_gamma", "log_likelihood"),
                n_customers=_read_int(gg, "gamma_gamma", "n_customers"),
                converged=_read_bool(gg, "gamma_gamma", "converged"),
                error=_read_error(gg, "gamma_gamma"),
                n_excluded=_read_int(gg, "gamma_gamma", "n_excluded"),
            ),
            time_unit=data.get("time_unit"),  # type: ignore[arg-type]  # checked in __post_init__
        )


def fit_clv_model(summary: RfmSummary, purchase_model: PurchaseModel = "bgnbd") -> ClvModel:
    """Fit both models on one calibration summary, ready to store and score with."""
    return ClvModel(
        bgnbd=fit_purchase_model(summary, purchase_model),
        gamma_gamma=fit_gamma_gamma(summary.frequency, summary.monetary_value),
        time_unit=summary.time_unit,
    )


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    section = data.get(name)
    if not isinstance(section, dict):
        raise ValueError(f"{name} must be a JSON object, got {type(section).__name__}")
    return section


def _read_float(section: dict[str, Any], name: str, key: str) -> float:
    value = section.get(key)
    if value is None and key in section:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}.{key} must be a number or null, got {value!r}")
    return float(value)


def _read_int(section: dict[str, Any], name: str, key: str) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}.{key} must be a whole number >= 0, got {value!r}")
    return value


def _read_bool(section: dict[str, Any], name: str, key: str) -> bool:
    value = section.get(key)
    if not isinstance(value, bool):
        raise ValueError(f"{name}.{key} must be true or false, got {value!r}")
    return value


def _read_error(section: dict[str, Any], name: str) -> str | None:
    value = section.get("error")
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name}.error must be a string or null, got {value!r}")
    return value
