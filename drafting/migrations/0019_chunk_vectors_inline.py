# A chunk row is text plus a 1.5 KiB (384-d) to 3.8 KiB (960-d) vector: over PostgreSQL's 2 KiB
# TOAST threshold, so by default the vector, the row's widest value, is moved out of line and
# every distance computed from the heap (exact scans of a small team, the focus article's
# chunks, the re-ranker's candidates) costs an extra TOAST fetch. STORAGE MAIN keeps it in the
# row (vectors do not compress, so nothing is lost) and lets the text go out of line instead.
# Rows written before this keep their layout until they are next updated (re-embedding does).
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("drafting", "0018_knowledge")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE drafting_knowledgechunk ALTER COLUMN embedding SET STORAGE MAIN",
            "ALTER TABLE drafting_knowledgechunk ALTER COLUMN embedding SET STORAGE EXTENDED",
        )
    ]
