"""Cached replies and few-shot examples stored before the stronger redaction (drafting.pii:
separators of any kind, customer names, identifying numbers and addresses) may hold a
customer's data. The cache is an optimisation: an entry whose question or reply is not clean
now is deleted (its question was stored unscrubbed, its key is the hash of that). Examples
are kept, with both texts scrubbed again (their embedding, never shown, stays).

The redactor is imported, not copied: it is a pure module with no models, and what "clean"
means must be what the cache checks today."""

from typing import Any

from django.db import migrations

from drafting.engine.pii import personal_kinds, scrub_details


def scrub_stored_replies(apps: Any, schema_editor: Any) -> None:
    CachedReply = apps.get_model("drafting", "CachedReply")
    ReplyExample = apps.get_model("drafting", "ReplyExample")
    unclean = [
        entry.pk
        for entry in CachedReply.objects.only("pk", "customer_text", "reply").iterator()
        if personal_kinds(entry.reply, customer=[entry.customer_text])
        or scrub_details(entry.customer_text, customer=[entry.customer_text])
        != entry.customer_text
    ]
    CachedReply.objects.filter(pk__in=unclean).delete()
    for example in ReplyExample.objects.only("pk", "customer_text", "reply").iterator():
        customer = scrub_details(example.customer_text, customer=[example.customer_text])
        reply = scrub_details(example.reply, customer=[example.customer_text])
        if (customer, reply) != (example.customer_text, example.reply):
            ReplyExample.objects.filter(pk=example.pk).update(customer_text=customer, reply=reply)


class Migration(migrations.Migration):
    dependencies = [("drafting", "0015_action_handle_seconds_wider")]

    operations = [migrations.RunPython(scrub_stored_replies, migrations.RunPython.noop)]
