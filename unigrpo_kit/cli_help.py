"""How ``--help`` shows options: flags without a type.

typer 0.2x prints each option's type after its name, ``--version <bool>`` included, which
reads as if the flag took a value. A flag takes none, so its type column stays empty.
"""

from __future__ import annotations


def hide_flag_types() -> None:
    """Make typer's rich help leave the type column of flags (``--quiet``, ``--version``)
    empty; options that take a value keep theirs (``--seed <int>``)."""
    from typer.core import TyperOption

    if getattr(TyperOption.display_type_rich, "hides_flags", False):
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.hides_flags = True
    TyperOption.display_type_rich = display_type_rich
