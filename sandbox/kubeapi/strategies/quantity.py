"""Resource quantities as apimachinery parses, compares and prints them.

After k8s.io/apimachinery/pkg/api/resource/quantity.go: a quantity is a number with a suffix
that fixes its format (binary `Ki`..`Ei`, decimal `n`..`E`, or an `e<exp>` exponent); values
round up to nano units; what is stored is the canonical string (`0.5` -> `500m`, `1000m` -> `1`,
`1.5Gi` -> `1536Mi`, `1024Mi` -> `1Gi`) unless the text as written is already canonical, which
upstream keeps as it is. Resource lists (requests, limits, capacity) are rounded up to milli units
as pkg/apis/core/v1/defaults.go SetDefaults_ResourceList does. JSON numbers are parsed like strings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
FORMAT_ERROR = f"quantities must match the regular expression '{PATTERN}'"
SUFFIX_ERROR = "unable to parse quantity's suffix"
NUMERIC_ERROR = "unable to parse numeric value of quantity"

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {v: k for k, v in _DECIMAL.items()}
_BINARY_SUFFIX = {v: k for k, v in _BINARY.items()}
_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")
_NANO = Fraction(1, 10**9)
_MILLI = Fraction(1, 1000)


class QuantityError(ValueError):
    """The text is not a quantity; the message is upstream's."""


@dataclass(frozen=True)
class Quantity:
    value: Fraction
    format: str  # "BinarySI", "DecimalSI" or "DecimalExponent"
    text: str | None = None  # kept when upstream keeps the string as written

    def __str__(self) -> str:
        return self.text if self.text is not None else canonical(self.value, self.format)

    def round_up_to_milli(self) -> "Quantity":
        """SetDefaults_ResourceList: RoundUp(-3); a value finer than milli loses its string."""
        if (self.value / _MILLI).denominator == 1 and (self.text is None or not _finer_than_milli(self.text)):
            return self
        scaled = self.value / _MILLI
        rounded = Fraction(math.ceil(scaled) if scaled > 0 else math.floor(scaled)) * _MILLI
        return Quantity(rounded, self.format)

    def is_integer(self) -> bool:
        return self.value.denominator == 1


def _finer_than_milli(text: str) -> bool:
    # The int64 fast path keeps its string only while its scale is milli or coarser (quantity.go RoundUp).
    match = _NUMBER.match(text)
    digits_after_point = len(match.group(3) or "") if match else 0
    suffix = text[match.end():] if match else ""
    exponent = _DECIMAL.get(suffix, 0) if suffix not in _BINARY else 0
    if suffix[:1] in ("e", "E"):
        exponent = int(suffix[1:] or 0)
    return exponent - digits_after_point < -3


def parse(raw: Any) -> Quantity:
    """Parse a quantity as written in JSON (a string or a number)."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise QuantityError(FORMAT_ERROR)
    text = raw.strip() if isinstance(raw, str) else repr(raw)
    if not text:
        raise QuantityError(FORMAT_ERROR)
    if text == "0":
        return Quantity(Fraction(0), "DecimalSI", "0")
    match = _NUMBER.match(text)
    sign, whole, frac = match.group(1), match.group(2), match.group(3)
    if not whole and not frac:
        raise QuantityError(FORMAT_ERROR)
    suffix = text[match.end():]
    if not re.fullmatch(r"[eEinumkKMGTP]*[-+]?[0-9]*", suffix):
        raise QuantityError(FORMAT_ERROR)
    if suffix in _BINARY:
        base, exponent, fmt = 2, _BINARY[suffix], "BinarySI"
    elif suffix in _DECIMAL:
        base, exponent, fmt = 10, _DECIMAL[suffix], "DecimalSI"
    elif re.fullmatch(r"[eE][-+]?[0-9]+", suffix):
        base, exponent, fmt = 10, int(suffix[1:]), "DecimalExponent"
    else:
        raise QuantityError(SUFFIX_ERROR)
    frac = frac or ""
    number = Fraction(int((whole or "0") + frac), 10 ** len(frac))
    value = number * (Fraction(base) ** exponent)
    if sign == "-":
        value = -value
    if value and (value / _NANO).denominator != 1:  # round away from zero to nano units
        scaled = value / _NANO
        value = Fraction(math.ceil(scaled) if scaled > 0 else math.floor(scaled)) * _NANO
    if fmt == "BinarySI" and 0 < abs(value) < 1:
        fmt = "DecimalSI"
    return Quantity(value, fmt, text if _kept_as_written(whole or "0", frac, base, exponent) else None)


def _kept_as_written(whole: str, frac: str, base: int, exponent: int) -> bool:
    """quantity.go ParseQuantity's fast path: the string is reused when it is already canonical."""
    if base == 2:
        precision = 15 - len(whole) - int(exponent * 3 / 10) - 1
        return not frac and precision >= 0 and int(whole) & 0x07 != 0
    scale = exponent - len(frac)
    shifted = whole + frac
    precision = 18 - (len(whole) + len(frac))
    return (precision >= 0 and scale >= -9 and scale % 3 == 0 and not shifted.endswith("000")
            and shifted[0] != "0")


def canonical(value: Fraction, fmt: str) -> str:
    """Quantity.CanonicalizeBytes: the shortest exact form in the quantity's format."""
    if value == 0:
        return "0"
    if fmt == "BinarySI" and (-1024 < value < 1024 or value.denominator != 1):
        fmt = "DecimalSI"
    if fmt == "BinarySI":
        amount, exponent = int(value), 0
        while amount % 1024 == 0 and exponent < 60:
            amount //= 1024
            exponent += 10
        return f"{amount}{_BINARY_SUFFIX.get(exponent, '')}"
    # Decimal: mantissa * 10^exponent with no trailing zeros, then the exponent down to a multiple of 3.
    exponent = 0
    while value.denominator != 1:
        value *= 10
        exponent -= 1
    mantissa = int(value)
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    mantissa *= 10 ** (exponent % 3)
    exponent -= exponent % 3
    if fmt == "DecimalExponent":
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    if exponent in _DECIMAL_SUFFIX:
        return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"
    return f"{mantissa}e{exponent}"
