"""`retain bench`: every method and combination on one stream, over seeds, side by side.

plan (which runs, where, validated up front) → runner (reuse, resume or re-run each) →
aggregate (means with intervals over seeds and test examples, paired differences against
`sequential`) → table and figures (Markdown, CSV, HTML, PNG).
"""
