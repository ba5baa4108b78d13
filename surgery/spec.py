"""Head specs: a head kind with its options, as users write it everywhere.

``gap``, ``gem:p=3:learn_p=0``, ``spp:levels=1x2x4:pool=avg``, ``attn:num_heads=4``,
``flatten:hidden=512x256:dropout=0.5``: the kind (a key of ``surgery.HEADS``), then
``key=value`` items separated by ``:``. One parser (:func:`parse_head`) reads them for the Python
API, every CLI, studies and recipes; values go through the options each kind declares, which go
through :func:`surgery.parse_value`. A spec prints back in one canonical form (``str(spec)``) and
names runs and table rows through one function (:func:`head_label`: ``gem-learn_p0``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .heads import HEADS
from .options import format_value

__all__ = ["HeadSpec", "parse_head", "make_spec", "resolve_head", "head_label", "spec_help",
           "SPEC_SYNTAX"]

SPEC_SYNTAX = "KIND:key=value[:key=value...], e.g. gem:p=3:learn_p=0 or flatten:hidden=512x256"
_ALIASES = {"h": "hidden", "d": "dropout"}  # the short forms studies have always accepted


@dataclass(frozen=True)
class HeadSpec:
    """A head kind and the options that differ from its defaults, typed, in declared order.

    Build with :func:`parse_head` or :func:`make_spec` (which check everything); two specs that
    build the same head compare equal (``gem`` == ``gem:p=3``).
    """

    kind: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def head(self) -> str:
        """The kind (the name in ``surgery.HEADS``)."""
        return self.kind

    def get(self, name: str) -> Any:
        """The value of option ``name``: as set, or the kind's default."""
        options = dict(self.options)
        if name in options:
            return options[name]
        option = HEADS[self.kind].option(name)
        return None if option is None else option.default

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(self.get("hidden") or ())

    @property
    def dropout(self) -> float:
        return float(self.get("dropout") or 0.0)

    @property
    def kind_options(self) -> dict[str, Any]:
        """The options of the kind itself (not hidden / dropout), for ``build_head(**...)``."""
        return {k: v for k, v in self.options if k not in ("hidden", "dropout")}

    @property
    def label(self) -> str:
        return head_label(self)

    def __str__(self) -> str:
        return ":".join([self.kind, *(f"{k}={format_value(v)}" for k, v in self.options)])


def _unknown_kind(kind: str, text: str) -> ValueError:
    close = difflib.get_close_matches(kind, list(HEADS), n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return ValueError(f"unknown head {kind!r} in {text!r}{hint}; choose from "
                      f"{', '.join(HEADS)}; options are written {SPEC_SYNTAX}")


def _split(text: str) -> tuple[str, dict[str, str]]:
    """``'gem:p=3'`` -> ``('gem', {'p': '3'})``: the raw items, keys resolved from aliases."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a head spec must be a non-empty string ({SPEC_SYNTAX}), got {text!r}")
    kind, *items = text.strip().split(":")
    if kind not in HEADS:
        raise _unknown_kind(kind, text)
    raw: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = _ALIASES.get(key.strip(), key.strip())
        if not sep or not key:
            raise ValueError(f"head option {item!r} in {text!r} is not key=value; write "
                             f"{SPEC_SYNTAX}")
        if key in raw:
            raise ValueError(f"head option {key} is given twice in {text!r}; give it once")
        raw[key] = value.strip()
    return kind, raw


def make_spec(kind: str, **options: Any) -> HeadSpec:
    """A checked :class:`HeadSpec` from a kind and option values (typed, or text as typed)."""
    if kind not in HEADS:
        raise _unknown_kind(kind, kind)
    head = HEADS[kind]
    where = ":".join([kind, *(f"{k}={format_value(v)}" for k, v in options.items())])
    typed: dict[str, Any] = {}
    for key, value in options.items():
        option = head.option(key)
        if option is None:
            own = [o.name for o in head.options]
            raise ValueError(f"head {kind!r} has no option {key!r} (in {where!r}); it takes "
                             f"{', '.join(own) if own else 'no options'}")
        typed[key] = None if value is None and option.default is None \
            else option.coerce(value, where)
    ordered = tuple((o.name, typed[o.name]) for o in head.options
                    if o.name in typed and typed[o.name] != o.default)
    return HeadSpec(kind, ordered)


def parse_head(text: str | HeadSpec) -> HeadSpec:
    """``'gem:p=3:learn_p=0'`` -> ``HeadSpec('gem', (('learn_p', False),))``; a HeadSpec as is.

    Raises ValueError naming the bad part: an unknown kind (with the close names), an unknown
    option (with the kind's options), or a value outside the option's type or range.
    """
    if isinstance(text, HeadSpec):
        return text
    kind, raw = _split(text)
    return make_spec(kind, **raw)


def resolve_head(head: str | HeadSpec, hidden: Sequence[int] | None = None,
                 dropout: float | None = None) -> HeadSpec:
    """The spec of ``head`` with ``hidden`` / ``dropout`` given as separate arguments merged in.

    Setting one both in the spec and as an argument is refused as ambiguous, even with equal
    values: the argument would otherwise silently win or lose.
    """
    if isinstance(head, HeadSpec):
        spec, explicit = head, {k for k, _ in head.options}
    else:
        kind, raw = _split(head)
        spec, explicit = make_spec(kind, **raw), set(raw)
    extra: dict[str, Any] = {}
    for name, value in (("hidden", hidden), ("dropout", dropout)):
        if value is None:
            continue
        if name in explicit:
            raise ValueError(f"{name} is set both in the head spec {str(head)!r} and as "
                             f"{name}={format_value(value)}; ambiguous: give it in one place")
        extra[name] = tuple(value) if isinstance(value, (list, tuple)) else value
    if not extra:
        return spec
    return make_spec(spec.kind, **dict(spec.options), **extra)


def head_label(spec: HeadSpec | str) -> str:
    """The name of a head in run directories and tables: the kind, then each option that differs
    from its default as its short name and value: ``flatten-h256-d0.5``, ``gem-p2.5-learn_p0``,
    ``spp-levels1x2-avg``, ``attn-heads4``."""
    spec = parse_head(spec)
    kind = HEADS[spec.kind]
    parts = [spec.kind]
    for key, value in spec.options:
        option = kind.option(key)
        short = key if option is None or option.short is None else option.short
        parts.append(f"{short}{format_value(value)}")
    return "-".join(parts)



def spec_help() -> str:
    """One paragraph for ``--head`` / ``--heads`` help: the kinds and the options each takes."""
    own = []
    for name, kind in HEADS.items():
        opts = [f"{o.name}={format_value(o.default) if o.default is not None else 'auto'}"
                for o in kind.options if o.name not in ("hidden", "dropout")]
        if opts:
            own.append(f"{name}:{':'.join(opts)}")
    return (f"a head spec {SPEC_SYNTAX}. Kinds: {', '.join(HEADS)}. Options (defaults): "
            f"{'; '.join(own)}; every kind but original also takes hidden=W[xW...] and "
            "dropout=P")
