"""README's demo table and results/tables/ are generated from the committed records in results/published/
(repro/collect/publish.py): regenerating them changes nothing, and the README block is the demo's own renderer."""
from __future__ import annotations

from repro.collect import publish


def test_published_docs_match_their_records():
    assert publish.stale_files() == [], "run `python -m repro.collect.publish` and commit the result"


def test_readme_block_replacement_keeps_the_rest():
    text = "a\n<!-- BEGIN generated: demo -->\nold\n<!-- END generated: demo -->\nb\n"
    assert publish.replace_block(text, "demo", "new") == \
        "a\n<!-- BEGIN generated: demo -->\nnew\n<!-- END generated: demo -->\nb\n"
