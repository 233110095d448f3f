"""Sphinx configuration of the epochauth docs (build: ``python -m sphinx -W -n -b html docs docs/_build``)."""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]

project = "django-epochauth"
author = "the django-epochauth contributors"
copyright = "2026, " + author
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.graphviz",
    # Reference pages generated from the code (settings, endpoints, checks, commands).
    "epochauth_reference",
]
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
# Section anchors for links such as [x](other.md#a-heading); a missing one is a warning (-W fails).
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
graphviz_output_format = "svg"
# Messages and settings quote Python literals: keep their straight quotes.
smartquotes = False

html_theme = "furo"
html_title = "django-epochauth"
