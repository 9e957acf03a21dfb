"""Admin autocomplete fields that survive values their key cannot hold.

Django's AutocompleteSelect looks its selected values up in the database exactly as they
came: from a query string's initial data (`/add/?user=NaN`) or from a refused POST. A value the
related key cannot hold ("NaN", a date, a number beyond the column) raised ValueError while
the page rendered: a 500 where the form should simply say "Select a valid choice" (found by
tests/system/test_fuzz.py). Every ModelAdmin and inline with `autocomplete_fields` uses this
mixin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib.admin.options import BaseModelAdmin
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import ValidationError
from django.db.models import Field, ForeignKey
from django.http import HttpRequest


def _fits(key: Field[Any, Any], value: Any) -> bool:
    try:
        key.run_validators(key.to_python(value))
    except (TypeError, ValueError, ValidationError):
        return False
    return True


class ValidatedAutocompleteSelect(AutocompleteSelect):
    def optgroups(
        self, name: str, value: Sequence[str], attr: dict[str, Any] | None = None
    ) -> list[tuple[str | None, list[dict[str, Any]], int | None]]:
        remote = self.field.remote_field
        key = remote.model._meta.get_field(remote.field_name)
        return super().optgroups(name, [v for v in value if _fits(key, v)], attr)


class ValidatedAutocomplete(BaseModelAdmin[Any]):
    """Mix in before ModelAdmin / TabularInline."""

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.ModelChoiceField[Any] | None:
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = ValidatedAutocompleteSelect(
                db_field, self.admin_site, using=kwargs.get("using")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
