"""The lender's policy file (TOML): programs, limits, pricing, states, business days. One source of truth.

analyze_deal, score_lead and schedule_call read it; LENDER_POLICY_FILE points at a lender's own copy, else
the demo lender's (bot/data/lender_policy.toml). It is validated at start-up: a bad file is one line naming
the entry, e.g. "programs.bridge.min_credit: Input should be greater than or equal to 300".
"""

from __future__ import annotations

import tomllib
from datetime import date
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SHIPPED_POLICY_FILE = Path(str(resources.files("bot").joinpath("data", "lender_policy.toml")))
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Ratio = float  # a fraction: 0.75 is 75 %
# Deal features the documents give their own limits for; analyze_deal's `features` argument.
Feature = Literal["short_term_rental", "foreign_national", "non_warrantable_condo"]
FEATURE_WORDS: dict[str, str] = {
    "short_term_rental": "short-term rentals",
    "foreign_national": "foreign national borrowers",
    "non_warrantable_condo": "non-warrantable condos",
}


class PolicyError(Exception):
    """The policy file is missing, not TOML, or breaks a rule; the message is one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # a misspelt key is an error, not a silent default


class LeverageTier(_Strict):
    """One row of a program's leverage grid: the limits, and what the borrower and deal need to use them."""

    max_ltv: Ratio = Field(gt=0, le=1)  # rehab programs: of the purchase price (ground-up: the land)
    max_ltc: Ratio | None = Field(None, gt=0, le=1)
    max_arv_ltv: Ratio | None = Field(None, gt=0, le=1)
    min_dscr: float | None = Field(None, gt=0, le=5)
    min_credit: int | None = Field(None, ge=300, le=850)
    min_deals: int | None = Field(None, ge=0, le=1000)


class Overlay(_Strict):
    """Tighter rules for deals with one feature (a short-term rental...), or `allowed = false`: not offered."""

    feature: Feature
    allowed: bool = True
    max_ltv: Ratio | None = Field(None, gt=0, le=1)
    min_dscr: float | None = Field(None, gt=0, le=5)
    min_credit: int | None = Field(None, ge=300, le=850)


class Program(_Strict):
    name: str = Field(min_length=1)  # as said to a caller: "fix-and-flip"
    min_credit: int = Field(ge=300, le=850)
    min_dscr: float | None = Field(None, gt=0, le=5)
    min_deals: int = Field(0, ge=0, le=1000)  # completed deals needed at all
    min_properties: int = Field(1, ge=1)
    min_loan: float = Field(gt=0)
    max_loan: float = Field(gt=0)
    cash_out_max_ltv: Ratio | None = Field(None, gt=0, le=1)  # None: no cash-out on this program
    # Before this many months of ownership a cash-out loan is measured on price plus documented renovation.
    cash_out_seasoning_months: int = Field(0, ge=0, le=120)
    term_months: int = Field(ge=1, le=480)
    # How the payment is quoted when the caller does not say otherwise: interest-only, or amortizing over
    # this many months (a DSCR loan: 360; a 10-year portfolio loan on a 30-year amortization: 360).
    interest_only: bool = False
    amortization_months: int = Field(360, ge=1, le=480)
    # A longer term when the rehab budget is more than this share of the price.
    heavy_rehab_term_months: int | None = Field(None, ge=1, le=480)
    heavy_rehab_share: Ratio | None = Field(None, gt=0)
    # Liquidity the borrower needs besides the cash to close: months of payments, a share of the rehab
    # budget, a share of the total project cost.
    reserve_months: float = Field(0, ge=0, le=60)
    reserve_rehab_share: Ratio = Field(0, ge=0, le=1)
    reserve_cost_share: Ratio = Field(0, ge=0, le=1)
    prepayment: str
    rate_a: tuple[float, float]
    rate_b: tuple[float, float]
    points_a: float = Field(ge=0, le=10)
    points_b: float = Field(ge=0, le=10)
    leverage: tuple[LeverageTier, ...] = Field(min_length=1)
    overlays: tuple[Overlay, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Program:
        if self.max_loan < self.min_loan:
            raise ValueError("max_loan is below min_loan")
        for low, high in (self.rate_a, self.rate_b):
            if not 0 < low <= high <= 30:
                raise ValueError("a rate range must be two annual percentages, low to high, e.g. [6.75, 7.75]")
        return self

    @property
    def is_rehab(self) -> bool:
        """Funds a rehab or a build on top of a share of the price (it has a loan-to-cost limit)."""
        return any(tier.max_ltc is not None for tier in self.leverage)


class PricingTierA(_Strict):
    min_credit: int = Field(ge=300, le=850)
    min_deals: int = Field(ge=0)


class Schedule(_Strict):
    business_days: tuple[Weekday, ...] = Field(min_length=1)
    holiday_calendar: str = ""  # a `holidays` country code ("US"), "" for none
    closed_dates: tuple[date, ...] = ()

    @property
    def weekdays(self) -> frozenset[int]:
        return frozenset(WEEKDAYS.index(day) for day in self.business_days)


class LenderPolicy(_Strict):
    lender: str = Field(min_length=1)
    # The rate a deal is judged at (DSCR, payment, reserves): the top or the bottom of the range of the
    # borrower's pricing tier. "top" is conservative: a deal that fits there fits at every rate offered.
    judge_at_rate: Literal["top", "bottom"] = "top"
    # How long an indicative term sheet stands ("valid until ...").
    offer_valid_days: int = Field(14, ge=1, le=365)
    # Completed deals count toward experience rules only within this many months.
    experience_lookback_months: int = Field(36, ge=1, le=240)
    min_property_value: float = Field(ge=0)
    states: tuple[str, ...] = Field(min_length=1)
    schedule: Schedule
    pricing_tier_a: PricingTierA
    programs: dict[str, Program] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_ids(self) -> LenderPolicy:
        from bot.tools.finance import PROGRAMS  # the program ids the tools' arguments accept

        unknown = sorted(set(self.programs) - set(PROGRAMS))
        if unknown:
            raise ValueError(f"unknown program {unknown[0]!r}; programs are {', '.join(PROGRAMS)}")
        bad = [s for s in self.states if len(s) != 2 or not s.isalpha() or not s.isupper()]
        if bad:
            raise ValueError(f"states must be two-letter codes like TX, got {bad[0]!r}")
        if self.schedule.holiday_calendar:
            import holidays

            if self.schedule.holiday_calendar not in holidays.list_supported_countries():
                raise ValueError(f"schedule.holiday_calendar: unknown country {self.schedule.holiday_calendar!r}")
        return self


def load_policy(path: Path | None = None) -> LenderPolicy:
    """Read and validate a policy file (the shipped one when None); PolicyError names what is wrong."""
    return _load(Path(path or SHIPPED_POLICY_FILE).resolve())


@cache
def _load(path: Path) -> LenderPolicy:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path.name} is not valid TOML: {exc}") from None
    try:
        return LenderPolicy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or path.name
        raise PolicyError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
