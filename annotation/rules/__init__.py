"""Pure rules of the labeling domain: rankings, pairs, splits, consensus, agreement.

No Django, torch or numpy anywhere in this package, so training imports it freely and the
tests run it without a database.
"""
