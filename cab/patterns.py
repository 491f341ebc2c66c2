"""The four attention patterns of CAB (Zhang et al., ICML 2023).

- noncausal self:  q, k, v from one sequence; every position sees every position.
- causal self:     output i depends only on inputs at positions <= i.
- noncausal cross: queries from a target (length Lq), keys/values from a source (length Lk).
- causal cross:    keys/values fully visible; output i must not depend on *queries* after i
                   (checked by truncating the queries). Not a masked "aligned" cross attention.
"""

from __future__ import annotations

import enum


class Pattern(str, enum.Enum):
    NONCAUSAL_SELF = "noncausal_self"
    CAUSAL_SELF = "causal_self"
    NONCAUSAL_CROSS = "noncausal_cross"
    CAUSAL_CROSS = "causal_cross"

    def __str__(self) -> str:  # "causal_self", not "Pattern.CAUSAL_SELF", in messages and records
        return self.value

    @property
    def is_cross(self) -> bool:
        return self in (Pattern.NONCAUSAL_CROSS, Pattern.CAUSAL_CROSS)

    @property
    def is_causal(self) -> bool:
        return self in (Pattern.CAUSAL_SELF, Pattern.CAUSAL_CROSS)

    @classmethod
    def parse(cls, value: "Pattern | str") -> "Pattern":
        """Accept a member or its string value; anything else is a one-line error naming the choices."""
        if isinstance(value, Pattern):
            return value
        try:
            return cls(str(value))
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown pattern {value!r}; valid patterns: {choices}") from None


ALL_PATTERNS = frozenset(Pattern)
